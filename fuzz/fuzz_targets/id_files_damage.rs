//! Id files and group filters (`orchestrix_index::ids`) damaged anywhere, any number of bytes:
//! opening the index and looking ids up must never panic, and a look-up must never answer a
//! position other than the one written (damage shows as an error or a forgotten file, never as
//! a wrong answer).
//!
//! Input: groups of 4 bytes, each a damage to the files written (9 id files of 20 ids each,
//! so one group filter and one id file alone): a file selector, a 16-bit offset, and a byte to
//! xor there (0: cut the file at that offset instead).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use orchestrix_index::ids::{IdIndex, IdMap};

const FILES: u64 = 9;
const IDS_PER_FILE: u64 = 20;

fn id(n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    b
}

/// Where id `n` was written, if it was.
fn position(n: u64) -> Option<u64> {
    (n % 100 < IDS_PER_FILE && n / 100 < FILES).then_some(n + 1)
}

fn write_index(dir: &Path) -> Vec<PathBuf> {
    let idx = IdIndex::open(dir).expect("open an empty index");
    for f in 0..FILES {
        let mut m = IdMap::default();
        for i in 0..IDS_PER_FILE {
            m.insert(id(f * 100 + i), f * 100 + i + 1);
        }
        idx.write_segment(f * 100, &m).expect("write an id file");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

fn damage(files: &[PathBuf], data: &[u8]) {
    for d in data.chunks_exact(4) {
        let Some(path) = files.get(usize::from(d[0]) % files.len()) else {
            continue;
        };
        let Ok(mut bytes) = std::fs::read(path) else {
            continue;
        };
        if bytes.is_empty() {
            continue;
        }
        let at = usize::from(u16::from_le_bytes([d[1], d[2]])) % bytes.len();
        if d[3] == 0 {
            bytes.truncate(at);
        } else if let Some(b) = bytes.get_mut(at) {
            *b ^= d[3];
        }
        std::fs::write(path, &bytes).expect("write the damage");
    }
}

fuzz_target!(|data: &[u8]| {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "orchestrix-fuzz-ids-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let files = write_index(&dir);
    damage(&files, data);
    if let Ok(idx) = IdIndex::open(&dir) {
        for n in (0..FILES * 100 + 50).step_by(3) {
            if let Ok(Some(p)) = idx.lookup(&id(n)) {
                assert_eq!(
                    Some(p),
                    position(n),
                    "id {n} answered at a position not written"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});

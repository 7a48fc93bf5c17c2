//! Pins "kill -9 during group commit" of RELIABILITY.md: a child process (this test binary,
//! re-executed with `ORCHESTRIX_KILL_CHILD_DIR` set) runs 8 writer threads that append single
//! events, small batches and multi-stream appends (Exact on their own streams, Any on shared
//! streams) and prints one `ACK stream version position id` line per acknowledged event. The
//! parent SIGKILLs it at a random moment, reopens the same directory and checks that every
//! acknowledged event (of this and all earlier iterations) is at its acknowledged
//! stream/version/position with its id, that versions are gap-free from 0, that global positions
//! are gapless, and that `verify()` passes. The directory is reused, so recovery after recovery
//! is exercised `KILLS` times (10,000 in the soak run: `ORCHESTRIX_KILLS=10000`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrix::{Direction, EventData, ExpectedVersion, Options, ReadFilter, Store};
use uuid::Uuid;

/// Kills per CI run.
const KILLS: u32 = 200;
const CHILD_ENV: &str = "ORCHESTRIX_KILL_CHILD_DIR";
const WRITERS: u64 = 8;
const SHARED_STREAMS: u64 = 3;

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn child(dir: &Path) -> ! {
    let seed: u64 = std::env::var("ORCHESTRIX_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let store = Arc::new(Store::open_with(dir, Options::test()).expect("child open"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut handles = Vec::new();
    for t in 0..WRITERS {
        let store = store.clone();
        let out = out.clone();
        handles.push(std::thread::spawn(move || {
            let mut rng = XorShift::new(seed * 31 + t);
            let own = format!("w{t}");
            let mut head = store.stream_head(&own).expect("head");
            loop {
                let n = 1 + rng.below(3) as usize;
                let events: Vec<EventData> = (0..n)
                    .map(|i| EventData::new("E", format!("{t}:{i}").into_bytes()))
                    .collect();
                let expected = head.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let kind = rng.below(4);
                let parts = match kind {
                    0 | 1 => vec![(own.clone(), expected, events)],
                    2 => vec![(
                        format!("shared-{}", rng.below(SHARED_STREAMS)),
                        ExpectedVersion::Any,
                        events,
                    )],
                    _ => vec![
                        (own.clone(), expected, events),
                        (
                            format!("shared-{}", rng.below(SHARED_STREAMS)),
                            ExpectedVersion::Any,
                            vec![EventData::new("M", b"multi".to_vec())],
                        ),
                    ],
                };
                let ids: Vec<Vec<Uuid>> = parts
                    .iter()
                    .map(|p| p.2.iter().map(|e| e.id).collect())
                    .collect();
                match store.append_multi(parts) {
                    Ok(r) => {
                        let mut pos = r.first_position;
                        let mut lines = String::new();
                        for ((stream, v0, v1), ids) in r.streams.iter().zip(&ids) {
                            assert_eq!(v1 - v0 + 1, ids.len() as u64);
                            for (i, id) in ids.iter().enumerate() {
                                lines.push_str(&format!(
                                    "ACK {stream} {} {pos} {id}\n",
                                    v0 + i as u64
                                ));
                                pos += 1;
                            }
                            if *stream == own {
                                head = Some(*v1);
                            }
                        }
                        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                        o.write_all(lines.as_bytes()).expect("pipe");
                        o.flush().expect("flush");
                    }
                    Err(e) => {
                        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = writeln!(o, "ERR {e}");
                        let _ = o.flush();
                        std::process::exit(3);
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(4);
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    stream: String,
    version: u64,
    id: Uuid,
}

fn parse_ack(line: &str) -> Option<(u64, Ack)> {
    let mut it = line.strip_prefix("ACK ")?.split(' ');
    let stream = it.next()?.to_string();
    let version = it.next()?.parse().ok()?;
    let position = it.next()?.parse().ok()?;
    let id = it.next()?.parse().ok()?;
    Some((
        position,
        Ack {
            stream,
            version,
            id,
        },
    ))
}

fn check(dir: &Path, acked: &HashMap<u64, Ack>, iteration: u32) {
    let store = Store::open_with(dir, Options::test())
        .unwrap_or_else(|e| panic!("iteration {iteration}: reopen failed: {e}"));
    let end = store.committed_position();
    let all = store
        .read_all(0, Direction::Forwards, usize::MAX, &ReadFilter::all())
        .unwrap();
    assert_eq!(
        all.len() as u64,
        end,
        "iteration {iteration}: read_all length"
    );
    let mut heads: HashMap<&str, u64> = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64, "iteration {iteration}: position gap");
        let next = heads.entry(e.stream()).or_insert(0);
        assert_eq!(
            e.version,
            *next,
            "iteration {iteration}: version gap in {} at position {}",
            e.stream(),
            e.position
        );
        *next += 1;
    }
    for (pos, a) in acked {
        let e = all.get(*pos as usize).unwrap_or_else(|| {
            panic!("iteration {iteration}: acknowledged position {pos} ({a:?}) lost; end {end}")
        });
        assert_eq!(
            (e.stream(), e.version, e.id),
            (a.stream.as_str(), a.version, a.id),
            "iteration {iteration}: acknowledged event at {pos} differs"
        );
    }
    for (stream, n) in &heads {
        assert_eq!(store.stream_head(stream).unwrap(), Some(n - 1));
    }
    assert_eq!(
        store.verify().unwrap(),
        end,
        "iteration {iteration}: verify"
    );
    store.close().unwrap();
}

#[test]
fn kill9_loop() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let kills: u32 = std::env::var("ORCHESTRIX_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(KILLS);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<u64, Ack> = HashMap::new();
    let started = Instant::now();
    for iteration in 0..kills {
        let mut rng = XorShift::new(u64::from(iteration) + 1);
        let mut child = Command::new(&exe)
            .args(["kill9_loop", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("ORCHESTRIX_KILL_SEED", iteration.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        // Wait for the first acknowledgement, then let the child run a little longer.
        let first_deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = first_deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let done = l.starts_with("ACK ") || l.starts_with("ERR ");
                    lines.push(l);
                    if done {
                        break;
                    }
                }
                Err(_) => panic!("iteration {iteration}: child produced no acknowledgement"),
            }
        }
        let delay = Duration::from_millis(5 + rng.below(56));
        let deadline = Instant::now() + delay;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let mut new = 0;
        for l in &lines {
            assert!(
                !l.starts_with("ERR "),
                "iteration {iteration}: child failed: {l} (status {status:?})"
            );
            if let Some((pos, a)) = parse_ack(l) {
                if let Some(old) = acked.insert(pos, a.clone()) {
                    panic!("iteration {iteration}: position {pos} acknowledged twice: {old:?} and {a:?}");
                }
                new += 1;
            }
        }
        assert!(new > 0, "iteration {iteration}: no acknowledgements parsed");
        check(dir.path(), &acked, iteration);
    }
    eprintln!(
        "kill9_loop: {kills} kills, {} acknowledged events, {:?}",
        acked.len(),
        started.elapsed()
    );
}

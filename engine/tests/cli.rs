//! The `orchestrix` command-line tool, run as a process: append then read and read-all print
//! every field as JSON lines, reading a directory that is not a store fails and creates
//! nothing, verify passes on a good store and names the damaged segment file after a byte
//! flip, bench reports its figures as JSON and writes an ack log line per event, bad
//! arguments get clap's usage error, and a wrong expected version fails with a clear message.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn orchestrix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrix"))
        .args(args)
        .output()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json_lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "failed: {}", stderr(o));
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn append_then_read_and_read_all() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = p(&dir);
    let a = json_lines(&orchestrix(&[
        "append",
        d,
        "cart-1",
        "--type",
        "ItemAdded",
        "--data",
        r#"{"sku":"A"}"#,
    ]));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["position"], 0);
    assert_eq!(a[0]["version"], 0);
    assert_eq!(a[0]["stream"], "cart-1");
    let b = json_lines(&orchestrix(&[
        "append",
        d,
        "cart-1",
        "--type",
        "ItemRemoved",
        "--data",
        r#"{"sku":"A"}"#,
        "--expected",
        "0",
    ]));
    assert_eq!(b[0]["position"], 1);
    assert_eq!(b[0]["version"], 1);
    json_lines(&orchestrix(&[
        "append",
        d,
        "order-9",
        "--type",
        "OrderPlaced",
        "--data",
        "[1,2,3]",
        "--expected",
        "no-stream",
    ]));

    let r = json_lines(&orchestrix(&["read", d, "cart-1"]));
    assert_eq!(r.len(), 2);
    for (i, e) in r.iter().enumerate() {
        assert_eq!(e["version"], i as u64);
        assert_eq!(e["position"], i as u64);
        assert_eq!(e["stream"], "cart-1");
        assert_eq!(e["data"]["sku"], "A");
        assert_eq!(e["datacontenttype"], "application/json");
        assert!(e["metadata"].is_array());
        assert!(e["id"].as_str().unwrap().len() == 36);
        let t = e["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
        for f in [
            "source",
            "subject",
            "dataschema",
            "correlation_id",
            "causation_id",
        ] {
            assert!(e.get(f).is_some(), "missing {f}");
        }
    }
    assert_eq!(r[0]["type"], "ItemAdded");
    assert_eq!(r[1]["type"], "ItemRemoved");

    let back = json_lines(&orchestrix(&[
        "read",
        d,
        "cart-1",
        "--backwards",
        "--limit",
        "1",
    ]));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["version"], 1);

    let all = json_lines(&orchestrix(&["read-all", d]));
    let positions: Vec<u64> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![0, 1, 2]);
    assert_eq!(all[2]["data"], serde_json::json!([1, 2, 3]));
    assert_eq!(all[2]["stream"], "order-9");

    let typed = json_lines(&orchestrix(&["read-all", d, "--type", "OrderPlaced"]));
    assert_eq!(typed.len(), 1);
    assert_eq!(typed[0]["type"], "OrderPlaced");
    let pre = json_lines(&orchestrix(&[
        "read-all",
        d,
        "--stream-prefix",
        "cart-",
        "--backwards",
    ]));
    let positions: Vec<u64> = pre
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![1, 0]);
    let from = json_lines(&orchestrix(&["read-all", d, "--from", "1", "--limit", "1"]));
    assert_eq!(from.len(), 1);
    assert_eq!(from[0]["position"], 1);

    let inspect = json_lines(&orchestrix(&["inspect", d, "--json"]));
    assert_eq!(inspect[0]["events"], 3);
    assert_eq!(inspect[0]["streams"], 2);
    let human = orchestrix(&["inspect", d]);
    assert!(human.status.success());
    assert!(stdout(&human).contains("events:"));
}

#[test]
fn wrong_expected_version_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = p(tmp.path());
    let o = orchestrix(&[
        "append",
        d,
        "fresh",
        "--type",
        "T",
        "--data",
        "{}",
        "--expected",
        "5",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("wrong expected version"), "{err}");
    assert!(err.contains("fresh"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn a_refused_append_creates_no_store() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    for (stream, ty, data, says) in [
        ("", "T", "{}", "stream id is empty"),
        ("s", "", "{}", "event type is empty"),
        ("s\u{7}", "T", "{}", "control character"),
        ("s", "T", "{not json", "data"),
    ] {
        let o = orchestrix(&["append", p(&fresh), stream, "--type", ty, "--data", data]);
        assert!(!o.status.success(), "{stream:?} {ty:?} {data:?}");
        assert!(stderr(&o).contains(says), "{says}: {}", stderr(&o));
        assert!(
            !fresh.exists(),
            "{stream:?} {ty:?} {data:?} created the store"
        );
    }
    let o = orchestrix(&[
        "bench",
        "--dir",
        p(&fresh),
        "--events",
        "10",
        "--segment-size",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("segment_size_bytes_max 0 is below the minimum of 4096 bytes"),
        "{}",
        stderr(&o)
    );
    assert!(!fresh.exists(), "a refused bench created the store");
}

#[test]
fn reading_a_non_store_fails_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = p(tmp.path());
    for args in [
        vec!["read", d, "s"],
        vec!["read-all", d],
        vec!["inspect", d],
        vec!["verify", d],
    ] {
        let o = orchestrix(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            stderr(&o).contains("is not an Orchestrix store"),
            "{}",
            stderr(&o)
        );
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{args:?}"
        );
    }
    let missing = tmp.path().join("missing");
    let o = orchestrix(&["read", p(&missing), "s"]);
    assert!(!o.status.success());
    assert!(!missing.exists());

    // A directory that merely has a `log` folder (as /var does), with a file in it.
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir(app.path().join("log")).unwrap();
    std::fs::write(app.path().join("log").join("app.log"), b"x\n").unwrap();
    let dir = app.path();
    let before = walk(dir);
    for args in [
        vec!["read", p(dir), "s"],
        vec!["read-all", p(dir)],
        vec!["inspect", p(dir)],
        vec!["verify", p(dir)],
    ] {
        let o = orchestrix(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            stderr(&o).contains("is not an Orchestrix store"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_eq!(walk(dir), before, "{args:?} created or removed files");
    }
}

/// Every path under `d`, recursively, sorted.
fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}

/// A store of 400 events in 4 KiB segments made by `bench` in `d` (with `extra` arguments).
fn small_store(d: &str, extra: &[&str]) {
    let mut args = vec![
        "bench",
        "--dir",
        d,
        "--events",
        "400",
        "--segment-size",
        "4096",
        "--sync",
        "never",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = orchestrix(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The files of `dir`'s subdirectory `sub` named `*.ext`, oldest segment first.
fn files_in(dir: &Path, sub: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// The segment files of the store in `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    files_in(dir, "log", "seg")
}

#[test]
fn verify_good_then_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = p(&dir);
    small_store(d, &["--writers", "2"]);
    let o = orchestrix(&["verify", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "ok: 400 events verified");

    let segs = segment_files(&dir);
    assert!(segs.len() >= 3, "{segs:?}");
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(victim, &bytes).unwrap();

    let o = orchestrix(&["verify", d]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "stderr does not name {name}: {err}");
}

#[test]
fn verify_says_what_open_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = p(&dir);
    small_store(d, &[]);
    // A write torn by a crash after the last frame of the newest segment.
    let segs = segment_files(&dir);
    let last = segs.last().unwrap();
    let mut bytes = std::fs::read(last).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes.truncate(end);
    bytes.extend_from_slice(b"OXFR\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11");
    std::fs::write(last, &bytes).unwrap();

    let o = orchestrix(&["verify", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let name = last.file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains(&format!(
            "open cut a torn tail: {name} at byte offset {end}"
        )),
        "{out}"
    );
    assert!(out.trim_end().ends_with("ok: 400 events verified"), "{out}");
    // Nothing left to repair the second time.
    let o = orchestrix(&["verify", d]);
    assert_eq!(stdout(&o).trim(), "ok: 400 events verified");
}

#[test]
fn verify_says_which_index_files_open_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = p(&dir);
    small_store(d, &["--writers", "2"]);
    // A segment's file in ids/ or streams/ (ids/ also holds files of groups of segments).
    let files = |sub: &str| files_in(&dir, sub, sub);
    let (ids, streams) = (files("ids"), files("streams"));
    assert!(ids.len() >= 2 && streams.len() >= 2, "{ids:?} {streams:?}");
    // Two id files and one stream index file lost.
    std::fs::remove_file(&ids[0]).unwrap();
    std::fs::remove_file(&ids[1]).unwrap();
    std::fs::remove_file(&streams[0]).unwrap();

    let o = orchestrix(&["verify", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("open rebuilt 2 event-id files from the log"),
        "{out}"
    );
    assert!(
        out.contains("open rebuilt 1 stream index file from the log"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("ok: 400 events verified"), "{out}");
    assert_eq!(
        (files("ids"), files("streams")),
        (ids, streams),
        "the files are back"
    );
    // Nothing left to repair the second time.
    let o = orchestrix(&["verify", d]);
    assert_eq!(stdout(&o).trim(), "ok: 400 events verified");
}

#[test]
fn bench_json_reports_all_events() {
    let o = orchestrix(&["bench", "--events", "2000", "--sync", "never", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["events"], 2000);
    assert!(v["events_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["append_latency_us"]["p99"].as_f64().unwrap() > 0.0);
    assert!(v["fdatasync_4k_us"]["p50"].as_f64().unwrap() > 0.0);
    // The temporary directory is removed afterwards.
    assert!(!Path::new(v["dir"].as_str().unwrap()).exists());
}

#[test]
fn bench_ack_log_has_one_line_per_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let ack = tmp.path().join("ack.log");
    let o = orchestrix(&[
        "bench",
        "--dir",
        p(&dir),
        "--events",
        "300",
        "--writers",
        "3",
        "--batch",
        "4",
        "--sync",
        "never",
        "--ack-log",
        p(&ack),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&ack).unwrap();
    let mut positions: Vec<u64> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            assert!(f[0].starts_with("bench-"));
            f[1].parse::<u64>().unwrap();
            f[2].parse::<u64>().unwrap()
        })
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (0..300).collect::<Vec<u64>>());
    let all = json_lines(&orchestrix(&["read-all", p(&dir)]));
    assert_eq!(all.len(), 300);
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        vec!["frobnicate"],
        vec!["bench", "--events", "many"],
        vec!["bench", "--sync", "sometimes"],
        vec!["bench", "--writers", "0"],
        vec!["read"],
        vec![
            "append",
            "/nonexistent-orchestrix",
            "s",
            "--type",
            "T",
            "--data",
            "{oops",
        ],
        vec![
            "append",
            "/nonexistent-orchestrix",
            "s",
            "--type",
            "T",
            "--data",
            "1",
            "--expected",
            "later",
        ],
    ] {
        let o = orchestrix(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert!(!Path::new("/nonexistent-orchestrix").exists());
}

#[test]
fn bench_refuses_sizes_it_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = p(&dir);
    for (args, says) in [
        (vec!["--event-size", "18446744073709551615"], "--event-size"),
        (vec!["--event-size", "100000000000000"], "--event-size"),
        (vec!["--streams", "18446744073709551615"], "--streams"),
        (vec!["--events", "10", "--streams", "200"], "--streams"),
        (
            vec!["--events", "100000000000", "--pregenerate"],
            "--pregenerate",
        ),
    ] {
        let mut all = vec!["bench", "--dir", d];
        all.extend(args.iter().copied());
        let o = orchestrix(&all);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!dir.exists(), "{args:?} created the store");
    }
    // Fewer events than the default 16 streams per writer still run.
    let o = orchestrix(&["bench", "--dir", d, "--events", "100", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn killed_bench_keeps_every_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let ack = tmp.path().join("ack.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestrix"))
        .args([
            "bench",
            "--dir",
            p(&dir),
            "--events",
            "10000000",
            "--writers",
            "4",
            "--sync",
            "always",
            "--ack-log",
            p(&ack),
            "--json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n = std::fs::read_to_string(&ack).map_or(0, |t| t.lines().count());
        if n >= 200 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Only complete lines count: the kill may cut the last one short.
    let text = std::fs::read_to_string(&ack).unwrap();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let acked: Vec<(String, u64, u64)> = complete
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert!(acked.len() >= 200, "only {} acknowledged", acked.len());
    let all = json_lines(&orchestrix(&["read-all", p(&dir)]));
    for (stream, version, position) in &acked {
        let e = &all[usize::try_from(*position).unwrap()];
        assert_eq!(e["stream"], stream.as_str());
        assert_eq!(e["version"], *version);
    }
    let o = orchestrix(&["verify", p(&dir)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

//! What `orchestrix read` prints for an event's data and metadata, as the CloudEvents JSON
//! format has it: JSON data as stored (numbers of any precision kept, compacted onto the
//! line), text as a string, anything else as `data_base64`; metadata as `[key, value]` pairs
//! (keys may repeat). A review found the output lossy: numbers went through `f64`, raw bytes
//! printed like a JSON array, invalid JSON like text, and repeated keys collapsed.

use std::process::Command;

use orchestrix::{EventData, ExpectedVersion, Store};

/// The lines `orchestrix read DIR STREAM` prints.
fn read(dir: &std::path::Path, stream: &str) -> Vec<String> {
    let o = Command::new(env!("CARGO_BIN_EXE_orchestrix"))
        .args(["read", dir.to_str().unwrap(), stream])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    out.lines().map(str::to_owned).collect()
}

/// The text of member `name` of `line` (an object on one line), up to the next member.
fn member<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":");
    let start = line.find(&key)? + key.len();
    // The member's value ends where the object's next member (or the object) begins: find
    // the shortest prefix that parses as JSON.
    let rest = &line[start..];
    let end = (1..=rest.len())
        .filter(|&n| rest.is_char_boundary(n))
        .find(|&n| {
            serde_json::from_str::<serde_json::Value>(&rest[..n]).is_ok()
                && matches!(rest.as_bytes().get(n), Some(b',') | Some(b'}'))
        })?;
    Some(&rest[..end])
}

#[test]
fn read_prints_data_and_metadata_as_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let mut text = EventData::new("T", b"hello".to_vec());
    text.data_content_type = Some("text/plain".into());
    let exact = br#"{"amount":123456789012345678901234567890,"rate":0.30000000000000000001}"#;
    let pretty = b"{\n  \"a b\": \"x \\\" y\",\n  \"n\": [1, 2.50]\n}\n";
    store
        .append(
            "s",
            ExpectedVersion::Any,
            vec![
                EventData::json("T", br#""hello""#.to_vec()),
                text,
                EventData::json("T", b"[1,2,255]".to_vec()),
                EventData::new("T", vec![1, 2, 255]),
                EventData::json("T", b"{not json".to_vec()),
                EventData::json("T", exact.to_vec()),
                EventData::json("T", pretty.to_vec()),
                EventData::new("T", b"plain words".to_vec())
                    .with_metadata("tag", "a")
                    .with_metadata("tag", "b"),
            ],
        )
        .unwrap();
    store.close().unwrap();
    drop(store);
    let lines = read(tmp.path(), "s");
    assert_eq!(lines.len(), 8);
    for l in &lines {
        // Each is one JSON object with data in exactly one of the two members.
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(
            v.get("data").is_some() != v.get("data_base64").is_some(),
            "{l}"
        );
    }
    // A JSON string and a text are told apart by the content type printed beside them.
    assert_eq!(member(&lines[0], "data"), Some(r#""hello""#));
    assert_eq!(
        member(&lines[0], "datacontenttype"),
        Some(r#""application/json""#)
    );
    assert_eq!(member(&lines[1], "data"), Some(r#""hello""#));
    assert_eq!(
        member(&lines[1], "datacontenttype"),
        Some(r#""text/plain""#)
    );
    // JSON as stored; bytes that are not UTF-8 as base64.
    assert_eq!(member(&lines[2], "data"), Some("[1,2,255]"));
    assert_eq!(member(&lines[3], "data"), None);
    assert_eq!(member(&lines[3], "data_base64"), Some(r#""AQL/""#));
    // Data under a JSON content type that is not JSON: base64, not passed off as text.
    assert_eq!(member(&lines[4], "data"), None);
    assert_eq!(member(&lines[4], "data_base64"), Some(r#""e25vdCBqc29u""#));
    // Numbers beyond f64 kept digit for digit.
    assert_eq!(
        member(&lines[5], "data"),
        Some(std::str::from_utf8(exact).unwrap())
    );
    // Pretty-printed JSON on one line, its strings untouched.
    assert_eq!(
        member(&lines[6], "data"),
        Some(r#"{"a b":"x \" y","n":[1,2.50]}"#)
    );
    // Text without a content type; metadata pairs in order, the repeated key kept.
    assert_eq!(member(&lines[7], "data"), Some(r#""plain words""#));
    assert_eq!(
        member(&lines[7], "metadata"),
        Some(r#"[["tag","a"],["tag","b"]]"#)
    );
}

//! An append some of whose event ids are stored and some not is a conflicting reuse
//! (`DuplicateEventId`), and the error must name an id that *is* stored, with that id's
//! position. It named the first id of the append that was not stored, with the position of
//! another (stored) event: "event id <new id> is already stored at position 0", which is
//! false, and sends a caller looking for the wrong event. Found by a review.

use orchestrix::{Direction, EventData, ExpectedVersion, Options, Store, StoreError};

fn ev(n: u32) -> EventData {
    EventData::json("E", format!("{{\"n\":{n}}}").into_bytes())
}

#[test]
fn a_partly_stored_append_names_a_stored_id_and_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), Options::test()).unwrap();
    let (a, b, stored) = (ev(0), ev(1), ev(2));
    s.append("other", ExpectedVersion::NoStream, vec![a, b])
        .unwrap();
    s.append("s", ExpectedVersion::NoStream, vec![stored.clone()])
        .unwrap();
    let stored_at = s.read_stream("s", 0, Direction::Forwards, 1).unwrap()[0].position;
    assert_eq!(stored_at, 2);
    let (new1, new2) = (ev(3), ev(4));
    // The stored id after a new one, before one, and between two.
    for events in [
        vec![new1.clone(), stored.clone()],
        vec![stored.clone(), new1.clone()],
        vec![new1.clone(), stored.clone(), new2.clone()],
    ] {
        let before = s.committed_position();
        match s.append("s", ExpectedVersion::Any, events) {
            Err(StoreError::DuplicateEventId { id, position }) => {
                assert_eq!(
                    (id.as_str(), position),
                    (stored.id.to_string().as_str(), stored_at),
                    "the error names the stored id and where it is"
                );
            }
            other => panic!("expected DuplicateEventId, got {other:?}"),
        }
        assert_eq!(s.committed_position(), before, "nothing written");
    }
}

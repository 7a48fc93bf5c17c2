//! Pins the whole append/read contract against a reference model (a plain vector of events and
//! a map of stream heads): random sequences of single- and multi-stream appends with every
//! expected-version mode (Any, NoStream, StreamExists, Exact(right), Exact(wrong)), idempotent
//! repeats of earlier appends (also with a different expected version, and with one new event
//! mixed in, which must be `DuplicateEventId`), `read_stream` both ways from random versions
//! with random limits, `read_all` both ways with type and prefix filters, and reopens (half of
//! them with the index deleted, so "the index rebuilt from the log equals the live index").
//! Every result, Ok value or specific error, must equal the model's; heads and the committed
//! position are compared after every operation.

use std::collections::HashMap;

use orchestrix::{
    AppendResult, Direction, EventData, ExpectedVersion, Options, ReadFilter, Store, StoreError,
};
use proptest::prelude::*;
use uuid::Uuid;

const STREAMS: [&str; 5] = ["a-0", "a-1", "b-2", "b-3", "c-4"];
const TYPES: [&str; 3] = ["T0", "T1", "T2"];

#[derive(Debug, Clone)]
enum Op {
    /// One stream: (stream, mode, events, type).
    Append(usize, u8, usize, usize),
    /// Several parts (streams may repeat, which is invalid input).
    Multi(Vec<(usize, u8, usize)>),
    /// Repeat earlier attempt number `.0 % attempts` with expected mode `.1`; `.2` adds a new event.
    Repeat(usize, u8, bool),
    ReadStream(usize, u64, bool, usize),
    ReadAll(u64, bool, usize, u8),
    Reopen(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..5usize, 0..5u8, 1..4usize, 0..3usize).prop_map(|(s, m, n, t)| Op::Append(s, m, n, t)),
        2 => prop::collection::vec((0..5usize, 0..5u8, 1..3usize), 1..4).prop_map(Op::Multi),
        2 => (any::<usize>(), 0..6u8, any::<bool>()).prop_map(|(i, m, x)| Op::Repeat(i, m, x)),
        3 => (0..5usize, prop_oneof![0..12u64, Just(u64::MAX)], any::<bool>(), 0..8usize)
            .prop_map(|(s, f, b, l)| Op::ReadStream(s, f, b, l)),
        2 => (prop_oneof![0..60u64, Just(u64::MAX)], any::<bool>(), 0..20usize, 0..4u8)
            .prop_map(|(f, b, l, k)| Op::ReadAll(f, b, l, k)),
        1 => any::<bool>().prop_map(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct MEvent {
    stream: String,
    version: u64,
    id: Uuid,
    event_type: String,
}

/// Errors as the model knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MErr {
    Wrong {
        stream: String,
        expected: ExpectedVersion,
        current: Option<u64>,
    },
    Duplicate {
        id: String,
    },
    InvalidInput,
}

fn classify(e: StoreError) -> MErr {
    match e {
        StoreError::WrongExpectedVersion {
            stream,
            expected,
            current,
        } => MErr::Wrong {
            stream,
            expected,
            current,
        },
        StoreError::DuplicateEventId { id, .. } => MErr::Duplicate { id },
        StoreError::InvalidInput(_) => MErr::InvalidInput,
        other => panic!("unexpected error: {other:?}"),
    }
}

/// One attempted append, kept so it can be repeated: (stream, [(id, type)]).
type Parts = Vec<(String, Vec<(Uuid, String)>)>;

#[derive(Default)]
struct Model {
    events: Vec<MEvent>,
    heads: HashMap<String, u64>,
    ids: HashMap<Uuid, usize>,
}

impl Model {
    fn expected(&self, stream: &str, mode: u8) -> ExpectedVersion {
        let head = self.heads.get(stream).copied();
        match mode {
            0 => ExpectedVersion::Any,
            1 => ExpectedVersion::NoStream,
            2 => ExpectedVersion::StreamExists,
            3 => ExpectedVersion::Exact(head.unwrap_or(0)),
            _ => ExpectedVersion::Exact(head.map_or(5, |h| h + 1)),
        }
    }

    fn append(
        &mut self,
        parts: &Parts,
        expected: &[ExpectedVersion],
    ) -> Result<AppendResult, MErr> {
        for (i, (s, _)) in parts.iter().enumerate() {
            if parts[..i].iter().any(|(o, _)| o == s) {
                return Err(MErr::InvalidInput);
            }
        }
        let found: Vec<Option<usize>> = parts
            .iter()
            .flat_map(|(_, evs)| evs.iter().map(|(id, _)| self.ids.get(id).copied()))
            .collect();
        if found.iter().any(Option::is_some) {
            let mut k = 0;
            let mut streams = Vec::new();
            let mut first_position = u64::MAX;
            for ((s, evs), exp) in parts.iter().zip(expected) {
                let mut v0 = None;
                for (i, (id, _)) in evs.iter().enumerate() {
                    let dup = MErr::Duplicate { id: id.to_string() };
                    let Some(p) = found[k] else {
                        // Some ids are new, some stored: named by the first stored one.
                        let all = parts.iter().flat_map(|(_, evs)| evs);
                        let stored = all.zip(&found).find(|(_, f)| f.is_some());
                        let id = stored.map_or(*id, |((id, _), _)| *id);
                        return Err(MErr::Duplicate { id: id.to_string() });
                    };
                    k += 1;
                    let e = &self.events[p];
                    if &e.stream != s {
                        return Err(dup);
                    }
                    let v = *v0.get_or_insert(e.version);
                    if e.version != v + i as u64 {
                        return Err(dup);
                    }
                    first_position = first_position.min(p as u64);
                }
                let v0 = v0.expect("non-empty part");
                let ok = match *exp {
                    ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
                    ExpectedVersion::NoStream => v0 == 0,
                    ExpectedVersion::Exact(v) => v.checked_add(1) == Some(v0),
                };
                if !ok {
                    let current = self.heads.get(s).copied();
                    // Expected where the stream stands: the stored ids are a conflicting reuse.
                    if exp.holds(current) {
                        return Err(MErr::Duplicate {
                            id: evs[0].0.to_string(),
                        });
                    }
                    return Err(MErr::Wrong {
                        stream: s.clone(),
                        expected: *exp,
                        current,
                    });
                }
                streams.push((s.clone(), v0, v0 + evs.len() as u64 - 1));
            }
            return Ok(AppendResult {
                first_position,
                streams,
                already_stored: true,
            });
        }
        for ((s, _), exp) in parts.iter().zip(expected) {
            let current = self.heads.get(s).copied();
            let ok = match *exp {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => current.is_none(),
                ExpectedVersion::StreamExists => current.is_some(),
                ExpectedVersion::Exact(v) => current == Some(v),
            };
            if !ok {
                return Err(MErr::Wrong {
                    stream: s.clone(),
                    expected: *exp,
                    current,
                });
            }
        }
        let first_position = self.events.len() as u64;
        let mut streams = Vec::new();
        for (s, evs) in parts {
            let v0 = self.heads.get(s).map_or(0, |h| h + 1);
            for (i, (id, t)) in evs.iter().enumerate() {
                self.ids.insert(*id, self.events.len());
                self.events.push(MEvent {
                    stream: s.clone(),
                    version: v0 + i as u64,
                    id: *id,
                    event_type: t.clone(),
                });
            }
            let last = v0 + evs.len() as u64 - 1;
            self.heads.insert(s.clone(), last);
            streams.push((s.clone(), v0, last));
        }
        Ok(AppendResult {
            first_position,
            streams,
            already_stored: false,
        })
    }
}

type Row = (u64, String, u64, Uuid, String);

fn rows(v: Vec<orchestrix::RecordedEvent>) -> Vec<Row> {
    v.into_iter()
        .map(|e| {
            (
                e.position,
                e.stream().to_string(),
                e.version,
                e.id,
                e.event_type().to_string(),
            )
        })
        .collect()
}

fn model_rows<'a>(it: impl Iterator<Item = (usize, &'a MEvent)>) -> Vec<Row> {
    it.map(|(p, e)| {
        (
            p as u64,
            e.stream.clone(),
            e.version,
            e.id,
            e.event_type.clone(),
        )
    })
    .collect()
}

fn check_append(
    step: usize,
    store: &Store,
    model: &mut Model,
    parts: &Parts,
    expected: &[ExpectedVersion],
) -> Result<(), TestCaseError> {
    let want = model.append(parts, expected);
    let request = parts
        .iter()
        .zip(expected)
        .map(|((s, evs), x)| {
            let evs = evs
                .iter()
                .map(|(id, t)| EventData::new(t.clone(), id.as_bytes().to_vec()).with_id(*id))
                .collect();
            (s.clone(), *x, evs)
        })
        .collect();
    let got = store.append_multi(request).map_err(classify);
    prop_assert_eq!(
        got,
        want,
        "step {}: append {:?} {:?}",
        step,
        parts,
        expected
    );
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::open_with(dir.path(), Options::test()).unwrap();
    let mut store = open();
    let mut model = Model::default();
    let mut attempts: Vec<Parts> = Vec::new();
    let mut next_id: u128 = 1;
    let mut new_event = |t: &str| {
        next_id += 1;
        (Uuid::from_u128(next_id), t.to_string())
    };
    for (step, op) in ops.into_iter().enumerate() {
        let to_append: Option<(Parts, Vec<ExpectedVersion>)> = match op {
            Op::Append(s, mode, n, t) => {
                let stream = STREAMS[s].to_string();
                let x = model.expected(&stream, mode);
                let evs = (0..n).map(|_| new_event(TYPES[t])).collect();
                Some((vec![(stream, evs)], vec![x]))
            }
            Op::Multi(parts) => {
                let mut p = Vec::new();
                let mut x = Vec::new();
                for (s, mode, n) in parts {
                    let stream = STREAMS[s].to_string();
                    x.push(model.expected(&stream, mode));
                    p.push((stream, (0..n).map(|i| new_event(TYPES[i % 3])).collect()));
                }
                Some((p, x))
            }
            Op::Repeat(i, mode, extra) => {
                if attempts.is_empty() {
                    continue;
                }
                let mut parts = attempts[i % attempts.len()].clone();
                let x = parts
                    .iter()
                    .map(|(s, evs)| match mode {
                        // Exact(right) for a repeat: the version before the stored events.
                        5 => match model.ids.get(&evs[0].0) {
                            Some(&p) if model.events[p].version > 0 => {
                                ExpectedVersion::Exact(model.events[p].version - 1)
                            }
                            Some(_) => ExpectedVersion::NoStream,
                            None => model.expected(s, 3),
                        },
                        m => model.expected(s, m),
                    })
                    .collect();
                if extra {
                    let e = new_event("T0");
                    parts[0].1.push(e);
                }
                Some((parts, x))
            }
            Op::ReadStream(s, from, backwards, limit) => {
                let stream = STREAMS[s];
                let dir = if backwards {
                    Direction::Backwards
                } else {
                    Direction::Forwards
                };
                let got = rows(store.read_stream(stream, from, dir, limit).unwrap());
                let of_stream = model
                    .events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.stream == stream);
                let want = if backwards {
                    model_rows(
                        of_stream
                            .filter(|(_, e)| e.version <= from)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .take(limit),
                    )
                } else {
                    model_rows(of_stream.filter(|(_, e)| e.version >= from).take(limit))
                };
                prop_assert_eq!(
                    got,
                    want,
                    "step {}: read_stream {} from {} back={} limit {}",
                    step,
                    stream,
                    from,
                    backwards,
                    limit
                );
                None
            }
            Op::ReadAll(from, backwards, limit, k) => {
                let filter = match k {
                    0 => ReadFilter::all(),
                    1 => ReadFilter::types(["T1"]),
                    2 => ReadFilter::types(["T0", "T2"]),
                    _ => ReadFilter::stream_prefix("b-"),
                };
                let passes = |e: &MEvent| {
                    filter.event_types.is_empty() || filter.event_types.contains(&e.event_type)
                };
                let passes = |e: &MEvent| {
                    passes(e)
                        && filter
                            .stream_prefix
                            .as_deref()
                            .is_none_or(|p| e.stream.starts_with(p))
                };
                let dir = if backwards {
                    Direction::Backwards
                } else {
                    Direction::Forwards
                };
                let got = rows(store.read_all(from, dir, limit, &filter).unwrap());
                let all = model.events.iter().enumerate();
                let want = if backwards {
                    model_rows(
                        all.filter(|(p, e)| *p as u64 <= from && passes(e))
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .take(limit),
                    )
                } else {
                    model_rows(
                        all.filter(|(p, e)| *p as u64 >= from && passes(e))
                            .take(limit),
                    )
                };
                prop_assert_eq!(
                    got,
                    want,
                    "step {}: read_all from {} back={} limit {} filter {}",
                    step,
                    from,
                    backwards,
                    limit,
                    k
                );
                None
            }
            Op::Reopen(delete_index) => {
                store.close().unwrap();
                drop(store);
                if delete_index {
                    std::fs::remove_file(dir.path().join("index.redb")).unwrap();
                }
                store = open();
                prop_assert_eq!(store.verify().unwrap(), model.events.len() as u64);
                None
            }
        };
        if let Some((parts, x)) = to_append {
            check_append(step, &store, &mut model, &parts, &x)?;
            attempts.push(parts);
        }
        prop_assert_eq!(
            store.committed_position(),
            model.events.len() as u64,
            "step {}",
            step
        );
        for s in STREAMS {
            prop_assert_eq!(
                store.stream_head(s).unwrap(),
                model.heads.get(s).copied(),
                "step {}: head of {}",
                step,
                s
            );
        }
    }
    store.close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

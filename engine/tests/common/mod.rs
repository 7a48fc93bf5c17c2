//! Helpers shared by the engine's integration tests (each test file is its own crate and
//! takes this module in with `mod common;`).

use orchestrix::{EventData, ExpectedVersion, Store};

/// Appends one `Deposited` event of `amount` to the stream `acct`.
pub fn deposit(store: &Store, amount: i64) {
    store
        .append(
            "acct",
            ExpectedVersion::Any,
            vec![EventData::json(
                "Deposited",
                format!("{{\"amount\":{amount}}}").into_bytes(),
            )],
        )
        .unwrap();
}

//! What the tests of the `hookline` binary share.

use std::process::Command;

/// The `hookline` binary, with the developer's `HOOKLINE_*` environment kept out of the run
/// (but the paths of the servers the harness installed).
pub fn hookline() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hookline"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HOOKLINE_") && k != "HOOKLINE_NATS_SERVER" && k != "HOOKLINE_PG_BIN" {
            c.env_remove(k);
        }
    }
    c.env_remove("PORT");
    c
}

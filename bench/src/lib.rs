//! `hookline bench`: signed webhooks from the golden fixtures against ingest (or the thinnest
//! possible baseline), end to end through normalizer and forwarder to a sink, and fault runs that
//! check a ledger of every webhook answered 200 against what was delivered and dead-lettered.
//! Every load loop is bounded in time and count, and targets loopback only.

pub mod baseline;
pub mod load;
pub mod lookup;
pub mod ordered;
pub mod plot;
pub mod procs;
pub mod report;
pub mod runs;
pub mod workload;

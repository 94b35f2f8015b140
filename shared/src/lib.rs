//! hookline's shared parts: names of streams and headers, sources, secrets and their
//! encryption, configuration, channels, metrics, telemetry, NATS set-up and the test harness.

pub mod background_log;
pub mod channel;
pub mod config;
pub mod crypto;
pub mod destination;
pub mod dlq;
pub mod durability;
pub mod egress;
pub mod event;
pub mod filter;
pub mod group_commit;
pub mod jetstream;
pub mod lookup_records;
pub mod metrics;
pub mod names;
pub mod ops_server;
pub mod runtime;
pub mod secret;
pub mod servers;
pub mod source;
pub mod standard_webhooks;
pub mod telemetry;
pub mod timefmt;

#[cfg(feature = "harness")]
pub mod harness;

pub use secret::Secret;
pub use source::Source;

//! hookline forwarder: delivers events from `HOOKLINE_EVENTS` to the messaging service, signed
//! (Standard Webhooks), with durable retries carried by JetStream redelivery and a dead-letter
//! queue; and `sink`, a receiver for development, tests and benchmarks.

pub mod attempts;
pub mod deliver;
pub mod destinations;
pub mod limit;
pub mod outcome;
pub mod schedule;
pub mod sink;
pub mod worker;

//! hubcap: consume Azure Event Hubs and archive every event durably, Capture-style.

pub mod backoff;
pub mod balance;
pub mod checkpoint;
pub mod config;
pub mod credential;
pub mod eventhubs;
pub mod partition;
pub mod runtime;
pub mod secret;
pub mod sink;
pub mod supervisor;

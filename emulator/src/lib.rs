//! hubcap-emulator: an Azure Event Hubs-compatible AMQP 1.0 server for tests, demos and
//! benchmarks, faithful enough that the official SDKs work against it unmodified.
//!
//! Map of the modules, from the socket inwards:
//!
//! - [`server`]: the listener (plain or TLS), the [`Emulator`] handle tests hold.
//! - [`connection`]: one connection's sessions; routes each attached link to its node.
//! - [`request`]: `$cbs` put-token and `$management` READ.
//! - [`producer`] and [`consumer`]: publishing and consuming links.
//! - [`receivers`]: the epoch (owner level) rules between consumers of one partition.
//! - [`store`] and [`message`]: the partitions' event logs and the annotated events.
//! - [`token`], [`filter`], [`address`]: pure parsers for tokens, start positions, addresses.
//! - [`faults`] and [`admin`]: fault injection, also over HTTP.
//! - [`config`]: settings from flags or a TOML file.

pub mod address;
pub mod admin;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod faults;
pub mod filter;
pub mod message;
pub mod producer;
pub mod receivers;
pub mod request;
pub mod server;
pub mod store;
pub mod token;

pub use config::EmulatorConfig;
pub use faults::LinkFault;
pub use server::{Emulator, StartError};

//! The Event Hubs client: the only place fe2o3-amqp types appear. The submodules are private;
//! what the rest of hubcap uses is re-exported here, free of AMQP types.
//!
//! - `connection_string.rs` and `sas.rs`: credentials in the official formats.
//! - `transport.rs`: the stream under AMQP (TCP or a proxy tunnel, TLS, WebSockets).
//! - `client.rs`: one shared AMQP connection, reopened after it breaks, with its token renewal
//!   (`auth.rs`).
//! - `management.rs`: hub and partition properties.
//! - `receiver.rs`: one partition's receive link; `event.rs` decodes what it receives.
//! - `sender.rs`: batches for `hubcap send` and the demo.
//! - `error.rs`: every failure with its [`Recovery`].

mod auth;
mod client;
mod connection_string;
mod error;
mod event;
mod management;
mod receiver;
mod sas;
mod sender;
mod transport;

pub use auth::{Credential, TokenProvider};
pub use client::{check_ca_file, ClientSettings, EventHubClient};
pub use connection_string::{
    ConnectionString, ConnectionStringAuth, ConnectionStringError, FullyQualifiedNamespace,
};
pub use error::{EventHubsError, Recovery};
pub use event::{DecodeError, EventBody, PropertyValue, ReceivedEvent};
pub use management::{EventHubProperties, PartitionProperties};
pub use receiver::{EventPosition, PartitionReceiver, ReceiverOptions};
pub use sas::{expiry_of, SignedToken};
pub use sender::{EventSender, OutgoingEvent, SendTarget};
pub use transport::Transport;

/// The AMQP layer itself, for the benchmarks that measure it (a raw fe2o3 receive loop, the
/// decoder on its own). Not part of hubcap's API: these take and return fe2o3-amqp types and
/// change with them.
#[doc(hidden)]
pub mod testing {
    pub use super::auth::{CbsLink, SAS_TOKEN_TYPE};
    pub use super::event::decode;
    pub use super::sas::sign;
}

//! The Event Hubs client: the only place fe2o3-amqp types appear.
//!
//! - [`connection_string`] and [`sas`]: credentials in the official formats.
//! - [`client`]: one shared AMQP connection, reopened after it breaks, with its token renewal
//!   ([`auth`]).
//! - [`management`]: hub and partition properties.
//! - [`receiver`]: one partition's receive link; [`event`] decodes what it receives.
//! - [`error`]: every failure with its [`error::Recovery`].

pub mod auth;
pub mod client;
pub mod connection_string;
pub mod error;
pub mod event;
pub mod management;
pub mod receiver;
pub mod sas;
pub mod sender;

pub use auth::Credential;
pub use client::{ClientSettings, EventHubClient};
pub use error::{EventHubsError, Recovery};
pub use event::{EventBody, PropertyValue, ReceivedEvent};
pub use receiver::{EventPosition, PartitionReceiver, ReceiverOptions};
pub use sender::{EventSender, OutgoingEvent, SendTarget};

//! hubcap: consume Azure Event Hubs and archive every event durably, Capture-style.
//!
//! Follow one event from the wire to a committed file:
//!
//! 1. [`eventhubs::receiver`] receives it on a partition link and [`eventhubs::event`] decodes
//!    it into a [`eventhubs::ReceivedEvent`];
//! 2. [`partition`] hands batches to the partition's [`sink::PartitionSink`] window;
//! 3. [`sink::file`] (with [`sink::avro`] and [`sink::path_format`]) commits the window as a
//!    Capture Avro file, or [`sink::stdout`] writes JSON lines;
//! 4. [`lease`] fences the checkpoint, which [`checkpoint`] writes in the SDK layout.
//!
//! Around that path:
//!
//! - [`runtime`] builds everything from a [`config::Config`] and runs it; [`supervisor`] runs the
//!   balancing cycles ([`balance`] is the pure plan) and the partition tasks;
//! - [`eventhubs`] is the only module that knows AMQP (fe2o3-amqp); [`storage`] is the only one
//!   that knows Blob Storage; [`credential`] builds Entra ID credentials for both;
//! - [`http`], [`metrics`], [`health`] and [`systemd`] are what operators see;
//! - [`demo`] runs the whole pipeline on the embedded emulator; [`archive`] reads archive files
//!   back (`hubcap cat`); [`preflight`] checks a config against the real services;
//! - [`backoff`], [`secret`] and [`suggest`] are small shared pieces.

pub mod archive;
pub mod backoff;
pub mod balance;
pub mod checkpoint;
pub mod config;
pub mod credential;
pub mod demo;
pub mod eventhubs;
pub mod health;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod partition;
pub mod preflight;
pub mod runtime;
pub mod secret;
pub mod sink;
pub mod storage;
pub mod suggest;
pub mod supervisor;
pub mod systemd;

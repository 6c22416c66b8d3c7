//! hubcap: consume Azure Event Hubs and archive every event durably, Capture-style.
//!
//! Follow one event from the wire to a committed file and its checkpoint, in five files:
//!
//! 1. `eventhubs/receiver.rs` receives it on a partition link ([`eventhubs::PartitionReceiver`]),
//!    decoded into a [`eventhubs::ReceivedEvent`];
//! 2. [`partition`] (`partition/mod.rs`) hands the batch to the partition's sink and, when the
//!    sink reports a window committed, checkpoints it;
//! 3. [`sink`] (`sink/mod.rs`): the [`sink::PartitionSink`] owns the window: it appends the
//!    batch, decides the rollover ([`sink::window`]), records the commit (the exactly-once
//!    protocol, `docs/exactly-once.md`) and commits;
//! 4. [`sink::file`] encodes the window as Capture Avro ([`sink::avro`]) into a staging file and
//!    commits it (fsync, no-clobber link) under its [`sink::path_format`] name;
//! 5. [`lease`] writes the commit record, renews the ownership and writes the checkpoint to the
//!    [`checkpoint`] store.
//!
//! Around that path:
//!
//! - [`runtime`] builds everything from a [`config::Config`] and runs it; [`supervisor`] runs the
//!   balancing cycles ([`balance`] is the pure plan) and the partition tasks;
//! - [`eventhubs`] is the only module that knows AMQP (fe2o3-amqp); [`storage`] is the only one
//!   that knows Blob Storage; [`credential`] builds Entra ID credentials for both;
//! - [`http`], [`metrics`], [`health`] and [`systemd`] are what operators see;
//! - [`demo`] runs the whole pipeline on the embedded emulator; [`archive`] reads archive files
//!   back (`hubcap cat`), and [`verify`] checks a whole archive (and its checkpoints) with them
//!   (`hubcap verify`); [`preflight`] checks a config against the real services;
//! - [`ops`] holds the operator commands (`status`, `checkpoints`, `backfill`);
//! - [`recovery`] maps every error to one action and paces every retry;
//! - [`secret`] and [`suggest`] are small shared pieces; [`crash_hook`] is a test-only fault
//!   hook (`HUBCAP_TEST_CRASH`) at the commit protocol's crash points.

pub mod archive;
pub mod balance;
pub mod checkpoint;
pub mod config;
pub mod crash_hook;
pub mod credential;
pub mod demo;
pub mod disk;
pub mod eventhubs;
pub mod health;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod ops;
pub mod partition;
pub mod preflight;
pub mod proxy;
pub mod recovery;
pub mod runtime;
pub mod secret;
pub mod sink;
pub mod storage;
pub mod suggest;
pub mod supervisor;
pub mod systemd;
pub mod verify;

//! Shared code for the pipeline tests, one module per role:
//!
//! - this file: the hub's names and keys, the deadlines every wait uses, and
//!   [`for_each_sink`], which runs one scenario through every sink;
//! - [`wait`]: `eventually` and `within`, waits that poll with deadlines;
//! - [`emulator`]: the in-process emulator, what it holds, and publishers;
//! - [`events`]: event identities and the exactly-once assertion;
//! - [`config`]: a hubcap config with fast test defaults, the sink under test, the temp
//!   directory ([`Workdir`]);
//! - [`store`]: the file checkpoint store's ownership and checkpoint records;
//! - [`archive`]: the committed Avro files of an `avro_file` sink, read back as events;
//! - [`process`]: the real `hubcap` binary, its output, logs and signals;
//! - [`command`]: one-shot `hubcap` subcommands (`backfill`, `status`, ...) and their output;
//! - [`daemon`]: the daemon in-process, stopped by its shutdown token;
//! - [`metrics`]: scraping `/metrics`;
//! - [`proxy`]: a loopback proxy that counts AMQP frames.
//!
//! Nothing here sleeps and hopes: every wait is a condition polled until a deadline, and a
//! failed wait names what it was waiting for.

pub mod archive;
pub mod command;
pub mod config;
pub mod daemon;
pub mod emulator;
pub mod events;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod store;
pub mod wait;

// Each test binary takes what it needs from these.
#[allow(unused_imports)]
pub use {
    archive::*, command::*, config::*, daemon::*, emulator::*, events::*, metrics::*, process::*,
    proxy::*, store::*, wait::*,
};

use std::time::Duration;

pub const HUB: &str = "hub1";
pub const KEY_NAME: &str = "RootManageSharedAccessKey";
/// The emulator's SAS key; distinctive so a test can search logs for it.
pub const KEY: &str = "PipelineTestKey+4f1dc0a9e7";
pub const CONSUMER_GROUP: &str = "$Default";
/// How often waits re-check their condition.
pub const POLL: Duration = Duration::from_millis(20);
/// Upper bound for one network step of a library client (connect, attach, send).
pub const STEP: Duration = Duration::from_secs(10);
/// The `[shutdown] drain_timeout` every test config uses.
#[allow(dead_code)] // not every test binary stops a daemon
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs each `async fn scenario(sink: Sink)` once per sink, as the tests `scenario::stdout`
/// and `scenario::avro_file`: the same body, the events read back from stdout or from the
/// committed files.
#[allow(unused_macros)] // used by the test files whose scenarios run through every sink
macro_rules! for_each_sink {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stdout() {
                super::$scenario($crate::common::Sink::Stdout).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn avro_file() {
                super::$scenario($crate::common::Sink::AvroFile).await
            }
        }
    )+};
}
#[allow(unused_imports)] // used by the test files whose scenarios run through every sink
pub(crate) use for_each_sink;

//! `hubcap status`: where every partition of the configured consumer group stands, read from
//! the checkpoint store (ownerships, checkpoints) and the service (each partition's retained
//! range and last event), while a fleet runs or while it is stopped. Reads only: it never
//! writes a record, and its receivers have no owner level, so they never disconnect a consumer.
//!
//! This file gathers a [`Snapshot`] and prints it, once or every `--watch` seconds;
//! [`report`] works out what the snapshot means, [`render`] turns that into a table or JSON.

pub mod render;
pub mod report;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;

use crate::checkpoint::{CheckpointStore as _, ListedCheckpoint, Ownership};
use crate::config::{CheckpointStoreConfig, Config};
use crate::eventhubs::{EventPosition, PartitionProperties};
use crate::ops::position::first_event_at;
use crate::ops::Fleet;

pub use render::{render_json, render_table};
pub use report::{build, OldestUnread, PartitionSnapshot, Report, Snapshot};

/// `hubcap status`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Lag counts the retained events after the checkpoint; its time is how long ago the oldest of them was enqueued (~ = estimated while a running consumer keeps others from reading it; see --lag-consumer-group). Ownership expires after [load_balancing] ownership_expiration without a renewal. Warnings: the checkpoint is older than the first retained event (events expired unread), or the next event to read is among the oldest 10% of the retained ones. --json prints the same fields as one document."
)]
pub struct StatusArgs {
    /// The fleet's config: its event hub, consumer group, checkpoint store and ownership
    /// expiration.
    #[arg(long, short, env = "HUBCAP_CONFIG")]
    pub config: PathBuf,
    /// Print one JSON document instead of the table (with --watch: one per line).
    #[arg(long)]
    pub json: bool,
    /// Report again every SECONDS until interrupted: on a terminal the screen is redrawn,
    /// otherwise each report is printed after the last.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
    /// Read each partition's oldest unread event (its age is the lag time) through this
    /// consumer group instead of the configured one. A running consumer's receivers keep
    /// other readers out of its group, so there the age is only estimated (~); a group that no
    /// consumer reads with an owner level gives exact ages. The report stays the configured
    /// group's.
    #[arg(long, value_name = "GROUP")]
    pub lag_consumer_group: Option<String>,
}

/// Runs the command on a loaded config. Exit status 0 once a report is printed (or, with
/// `--watch`, when stdout closes); an error if the store or the service cannot be read.
pub async fn run(config: Config, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    check_store_exists(&config)?;
    let fleet = Fleet::open(config, args.lag_consumer_group.as_deref()).await?;
    let reader = LagReader {
        fleet: &fleet,
        other_group: args.lag_consumer_group.is_some(),
    };
    let result = match args.watch {
        None => once(&reader, args.json).await,
        Some(seconds) => watch(&reader, args.json, Duration::from_secs(seconds)).await,
    };
    fleet.close().await;
    result
}

/// Opening a file store creates its directory: a status run against a mistyped path would
/// report an empty fleet instead of the mistake.
fn check_store_exists(config: &Config) -> anyhow::Result<()> {
    if let CheckpointStoreConfig::File { path } = &config.checkpoint_store {
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => anyhow::bail!(
                "checkpoint store {} is not a directory ([checkpoint_store] path)",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "checkpoint store directory {} does not exist ([checkpoint_store] path)",
                path.display()
            ),
            Err(e) => anyhow::bail!(
                "checkpoint store {} cannot be read ([checkpoint_store] path): {e}",
                path.display()
            ),
        }
    }
    Ok(())
}

/// What a report is read from: the fleet, and whether its client reads events through a
/// consumer group of its own (`--lag-consumer-group`).
struct LagReader<'a> {
    fleet: &'a Fleet,
    /// A failed read is then worth a warning: in the configured group, refusals are expected
    /// while the fleet runs.
    other_group: bool,
}

async fn once(reader: &LagReader<'_>, json: bool) -> anyhow::Result<ExitCode> {
    let report = build(&snapshot(reader).await?);
    let text = if json {
        render_json(&report, true) + "\n"
    } else {
        render_table(&report)
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Reports every `interval` until the process is interrupted (Ctrl-C ends it by the signal's
/// default action: there is nothing to drain) or stdout closes. A failed round is reported and
/// the next one tried: a watch outlives a store or service outage.
async fn watch(reader: &LagReader<'_>, json: bool, interval: Duration) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let round = snapshot(reader).await.map(|snapshot| build(&snapshot));
        let mut text = String::new();
        if terminal {
            // Cursor home, clear the screen: the report is redrawn in place.
            text.push_str("\x1b[H\x1b[2J");
        }
        match round {
            Ok(report) if json => text.push_str(&(render_json(&report, false) + "\n")),
            Ok(report) => text.push_str(&render_table(&report)),
            Err(error) => {
                let message = format!("hubcap status: {error:#}");
                eprintln!("{message}");
                if terminal {
                    text.push_str(&message);
                    text.push('\n');
                }
            }
        }
        if terminal {
            text.push_str(&format!(
                "\nevery {}s; Ctrl-C to stop\n",
                interval.as_secs()
            ));
        } else if !json && !text.is_empty() {
            text.push('\n');
        }
        if !print(&text)? {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Writes to stdout; `Ok(false)` when the reader went away (`| head`), which ends a watch.
fn print(text: &str) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::anyhow!("stdout: {e}")),
    }
}

/// Reads the store's records, then the service's view of every partition, then the oldest
/// unread event of each partition that has any.
async fn snapshot(reader: &LagReader<'_>) -> anyhow::Result<Snapshot> {
    let fleet = reader.fleet;
    let (ownerships, checkpoints) = tokio::try_join!(
        fleet.store.list_ownership(),
        fleet.store.list_checkpoint_records()
    )?;
    let taken_at = SystemTime::now();
    let ids = fleet.partition_ids().await?;
    let answers = join_all(ids.iter().map(|id| fleet.partition_properties(id))).await;
    // One partition not answering is a row's warning; none answering is the service down.
    if answers.iter().all(Result::is_err) {
        if let Some(Err(error)) = answers.into_iter().next() {
            return Err(error.context("the event hub did not answer"));
        }
        anyhow::bail!(
            "event hub {:?} has no partitions",
            fleet.config.eventhub.name
        );
    }
    let config = &fleet.config;
    let start_position = config.eventhub.start_position.clone();
    let mut partitions: Vec<PartitionSnapshot> = ids
        .into_iter()
        .zip(answers)
        .map(|(partition_id, properties)| PartitionSnapshot {
            ownership: find(&ownerships, &partition_id, |o: &Ownership| &o.partition_id),
            checkpoint: find(&checkpoints, &partition_id, |c: &ListedCheckpoint| {
                &c.checkpoint.partition_id
            }),
            properties: properties.map_err(|e| format!("{e:#}")),
            oldest_unread: OldestUnread::NotRead,
            partition_id,
        })
        .collect();
    let reads = partitions.iter().map(|partition| async {
        match unread_from(partition, &start_position) {
            Some(sequence_number) => {
                oldest_unread(reader, &partition.partition_id, sequence_number).await
            }
            None => OldestUnread::NotRead,
        }
    });
    let oldest = join_all(reads).await;
    for (partition, oldest) in partitions.iter_mut().zip(oldest) {
        partition.oldest_unread = oldest;
    }
    let (store_type, store_location) = match &config.checkpoint_store {
        CheckpointStoreConfig::File { path } => ("file", path.display().to_string()),
        CheckpointStoreConfig::AzureBlob { container, .. } => ("azure_blob", container.clone()),
    };
    Ok(Snapshot {
        taken_at,
        namespace: config.eventhub.connection.fully_qualified_namespace(),
        event_hub: config.eventhub.name.clone(),
        consumer_group: config.eventhub.consumer_group.clone(),
        store_type,
        store_location,
        ownership_expiration: config.load_balancing.ownership_expiration,
        start_position,
        partitions,
    })
}

fn find<T: Clone>(records: &[T], partition_id: &str, id: impl Fn(&T) -> &String) -> Option<T> {
    records.iter().find(|r| id(r) == partition_id).cloned()
}

/// The sequence number of the oldest retained event a consumer has still to read, when there
/// is one to look up.
fn unread_from(partition: &PartitionSnapshot, start_position: &EventPosition) -> Option<i64> {
    let properties: &PartitionProperties = partition.properties.as_ref().ok()?;
    let next = report::next_to_read(
        partition.checkpoint.as_ref().map(|c| &c.checkpoint),
        start_position,
        properties,
    )?;
    (report::lag_events(next, properties) > 0).then(|| next.max(properties.begin_sequence_number))
}

/// The enqueued time of the event at `sequence_number`, through a receiver without an owner
/// level: refused (never disruptive) while a consumer with one holds the partition.
async fn oldest_unread(
    reader: &LagReader<'_>,
    partition_id: &str,
    sequence_number: i64,
) -> OldestUnread {
    let position = EventPosition::SequenceNumber {
        sequence_number,
        inclusive: true,
    };
    match first_event_at(&reader.fleet.client, partition_id, &position).await {
        Ok(Some(event)) => OldestUnread::Read {
            enqueued_time_ms: event.enqueued_time_ms,
        },
        Ok(None) => OldestUnread::Unavailable,
        Err(error) if reader.other_group => {
            tracing::warn!(partition_id, error = %error, "oldest unread event not read");
            OldestUnread::Unavailable
        }
        Err(error) => {
            tracing::debug!(partition_id, error = %error, "oldest unread event not read");
            OldestUnread::Unavailable
        }
    }
}

#[cfg(test)]
mod tests;

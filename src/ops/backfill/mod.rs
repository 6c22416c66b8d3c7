//! `hubcap backfill`: archives a past range of events (what arrived before the archiver
//! existed, or a range to re-archive) into the configured sink, in the same formats, windows
//! and names as the daemon, without touching the consumer group's checkpoints or ownerships.
//!
//! - Everything is decided before anything is written ([`plan`]): positions are checked, each
//!   partition's range is resolved through the service, and what the archive already holds
//!   (its files' sequence numbers, read as `hubcap verify` reads them) is taken out. A re-run
//!   therefore reads only what is missing: an interrupted backfill is completed by running it
//!   again, and a finished one writes nothing new.
//! - Readers are its own ([`reader`]): owner level 0, through `--consumer-group` or the
//!   configured one. Receivers with owner levels in one consumer group disconnect each other,
//!   so while a fleet owns partitions in the configured group backfill refuses to read there
//!   and asks for another group.
//! - Windows follow the events' enqueued time ([`crate::sink::PartitionSink::windows_by_event_time`]):
//!   last month's events land under last month's path. Each range ends with a commit; a
//!   SIGTERM commits what was read and stops.
//! - `--to latest` stops at the configured consumer group's checkpoint where it has one: the
//!   events after it are archived by whoever resumes from that checkpoint, and backfilling them
//!   too would make a second copy.

mod plan;
mod progress;
mod reader;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CheckpointStore;
use crate::config::Config;
use crate::eventhubs::{EventHubClient, ReceiverOptions};
use crate::ops::position::PositionSpec;
use crate::ops::Fleet;
use crate::runtime::{sink as configured_sink, supervisor_settings};
pub use plan::SeqRange;
use plan::{check_specs, missing, resolve_range};
use progress::Progress;
use reader::{PartitionOutcome, Reader};

/// `hubcap backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    #[arg(long, short, env = "HUBCAP_CONFIG")]
    pub config: std::path::PathBuf,
    /// The first event: earliest, seq:N or time:T (RFC 3339; the first event enqueued at or
    /// after T).
    #[arg(long, value_name = "POSITION")]
    pub from: PositionSpec,
    /// The last event: latest (the last enqueued when backfill starts, or the consumer
    /// group's checkpoint where it has one: the fleet archives what follows it), seq:N or
    /// time:T (the last event enqueued at or before T). Both ends are included.
    #[arg(long, value_name = "POSITION", default_value = "latest")]
    pub to: PositionSpec,
    /// Only these partitions, comma-separated [default: all].
    #[arg(long, value_name = "ID,...")]
    pub partitions: Option<crate::ops::PartitionList>,
    /// Read through this consumer group; required while a fleet owns partitions in the
    /// configured one (readers with owner levels in one group disconnect each other).
    #[arg(long, value_name = "GROUP")]
    pub consumer_group: Option<String>,
}

/// Most partitions read at once.
const MAX_CONCURRENT_PARTITIONS: usize = 32;

/// Runs a backfill until every partition reached the end of its range (exit 0), or it is
/// stopped by `stop` (exit 1, what was read is committed), or it fails.
pub async fn command(
    config: Config,
    args: BackfillArgs,
    stop: CancellationToken,
) -> anyhow::Result<ExitCode> {
    check_specs(args.from, args.to, now_ms())?;
    let group = args
        .consumer_group
        .clone()
        .unwrap_or_else(|| config.eventhub.consumer_group.clone());
    let fleet = Fleet::open(config, Some(&group)).await?;
    let reading_there = group == fleet.config.eventhub.consumer_group;
    let result = match fleet_state(&fleet, reading_there).await {
        Ok(checkpoints) => {
            backfill(
                &fleet.config,
                &args,
                &fleet.client,
                &group,
                &checkpoints,
                stop,
            )
            .await
        }
        Err(error) => Err(error),
    };
    fleet.close().await;
    result
}

async fn backfill(
    config: &Config,
    args: &BackfillArgs,
    client: &Arc<EventHubClient>,
    group: &str,
    checkpoints: &BTreeMap<String, i64>,
    stop: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let hub = client
        .event_hub_properties()
        .await
        .with_context(|| format!("event hub {:?}", config.eventhub.name))?;
    let partitions = crate::ops::select(
        &config.eventhub.name,
        &hub.partition_ids,
        args.partitions.as_ref().map(|list| list.0.as_slice()),
    )?;
    // Ranges first: a bad position for any partition stops the backfill before it writes.
    let mut ranges = BTreeMap::new();
    for id in &partitions {
        let properties = client
            .partition_properties(id)
            .await
            .with_context(|| format!("partition {id}"))?;
        let mut range = resolve_range(client, &properties, args.from, args.to).await?;
        if let (Some(resolved), Some(&checkpoint)) = (range, checkpoints.get(id)) {
            if args.to == PositionSpec::Latest {
                range = SeqRange::new(resolved.first, resolved.last.min(checkpoint));
            } else if resolved.last > checkpoint {
                eprintln!(
                    "note: partition {id}: the range ends after the consumer group's checkpoint \
                     ({checkpoint}); the fleet archives the events after it too when it reads them"
                );
            }
        }
        ranges.insert(id.clone(), range);
    }
    // The sink first: it creates its container if needed, which the archive's reading expects.
    let sink = configured_sink(config).await?;
    let archived = crate::verify::archived_runs(config, Some(&partitions))
        .await
        .context("reading what the archive holds")?;
    let plans: Vec<PartitionPlan> = partitions
        .iter()
        .map(|id| {
            let range = ranges.get(id).copied().flatten();
            let to_read = range.map_or_else(Vec::new, |range| {
                missing(range, archived.get(id).map_or(&[][..], Vec::as_slice))
            });
            PartitionPlan {
                partition_id: id.clone(),
                range,
                to_read,
            }
        })
        .collect();
    eprintln!(
        "backfill {} {} → {} through consumer group {group:?}: {} events to read, {} already archived",
        config.eventhub.name,
        args.from,
        args.to,
        plans.iter().map(PartitionPlan::to_read_events).sum::<u64>(),
        plans.iter().map(PartitionPlan::archived_events).sum::<u64>(),
    );
    let outcomes = run(config, client, &sink, &plans, stop).await?;
    let table = summary(&plans, &outcomes);
    if matches!(sink, crate::sink::Sink::Stdout(_)) {
        // Stdout holds the events themselves.
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    let interrupted = outcomes.values().any(|o| o.interrupted);
    let expired: u64 = outcomes.values().map(|o| o.events_expired).sum();
    if interrupted {
        eprintln!("backfill interrupted: what was read is committed; run the same command again to complete the range");
        return Ok(ExitCode::FAILURE);
    }
    if expired > 0 {
        eprintln!(
            "backfill incomplete: {expired} events expired out of retention before they were read"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// One partition's share of the work.
#[derive(Debug)]
struct PartitionPlan {
    partition_id: String,
    /// The requested range as resolved (`None`: no event in it).
    range: Option<SeqRange>,
    /// What the archive does not hold of it.
    to_read: Vec<SeqRange>,
}

impl PartitionPlan {
    fn to_read_events(&self) -> u64 {
        self.to_read.iter().map(SeqRange::events).sum()
    }

    fn archived_events(&self) -> u64 {
        self.range.map_or(0, |r| r.events()) - self.to_read_events()
    }
}

/// Reads every plan's ranges, a bounded number of partitions at a time, with the progress
/// display running beside them.
async fn run(
    config: &Config,
    client: &Arc<EventHubClient>,
    sink: &crate::sink::Sink,
    plans: &[PartitionPlan],
    stop: CancellationToken,
) -> anyhow::Result<BTreeMap<String, PartitionOutcome>> {
    let daemon = supervisor_settings(config);
    let progress = Arc::new(Progress::new(
        plans
            .iter()
            .map(|plan| (plan.partition_id.clone(), plan.to_read_events())),
    ));
    let shown = CancellationToken::new();
    // Nothing to read: no progress to show.
    let display = plans
        .iter()
        .any(|plan| !plan.to_read.is_empty())
        .then(|| tokio::spawn(progress::show(Arc::clone(&progress), shown.clone())));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_PARTITIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for (plan, counters) in plans.iter().zip(&progress.partitions) {
        if plan.to_read.is_empty() {
            continue;
        }
        let mut partition_sink = sink.open_partition(
            &plan.partition_id,
            config.sink.window,
            Arc::clone(&daemon.names),
            None,
        );
        partition_sink.windows_by_event_time();
        let reader = Reader {
            client: Arc::clone(client),
            partition_id: plan.partition_id.clone(),
            sink: partition_sink,
            receiver: ReceiverOptions {
                owner_level: Some(0),
                ..daemon.partition.receiver
            },
            batch_size: daemon.partition.batch_size,
            retry_min_backoff: daemon.partition.retry_min_backoff,
            retry_max_backoff: daemon.partition.retry_max_backoff,
            progress: Arc::clone(counters),
            stop: stop.clone(),
        };
        let (ranges, permits, id) = (
            plan.to_read.clone(),
            Arc::clone(&permits),
            plan.partition_id.clone(),
        );
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (id, reader.run(ranges).await)
        });
    }
    let mut outcomes = BTreeMap::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((id, Ok(outcome))) => {
                outcomes.insert(id, outcome);
            }
            Ok((_, Err(error))) => {
                // One partition cannot go on: the others commit what they read and stop.
                stop.cancel();
                failure.get_or_insert(anyhow::Error::from(error));
            }
            Err(join) => {
                stop.cancel();
                failure.get_or_insert(anyhow::anyhow!("a partition's reader failed: {join}"));
            }
        }
    }
    shown.cancel();
    if let Some(display) = display {
        let _ = display.await;
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(outcomes),
    }
}

/// What the configured consumer group's fleet holds: its checkpoints' sequence numbers, by
/// partition (`--to latest` stops at them: what follows a checkpoint is archived by whoever
/// resumes from it, and backfilling it too would make a second copy). With `reading_there`
/// (backfill reads through the configured group), refuses while a processor owns partitions
/// there: backfill's readers would disconnect it (or be refused).
async fn fleet_state(fleet: &Fleet, reading_there: bool) -> anyhow::Result<BTreeMap<String, i64>> {
    if reading_there {
        refuse_beside_a_live_fleet(&fleet.config, &fleet.store).await?;
    }
    let checkpoints = fleet
        .store
        .list_checkpoints()
        .await
        .context("reading the consumer group's checkpoints")?;
    Ok(checkpoints
        .into_iter()
        .filter_map(|c| Some((c.partition_id, c.sequence_number?)))
        .collect())
}

async fn refuse_beside_a_live_fleet(
    config: &Config,
    store: &crate::checkpoint::Store,
) -> anyhow::Result<()> {
    let ownerships = store
        .list_ownership()
        .await
        .context("checking for processors that own partitions of the consumer group")?;
    let (now, expiration) = (
        SystemTime::now(),
        config.load_balancing.ownership_expiration,
    );
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ownership in ownerships {
        if ownership.is_active(now, expiration) {
            owners
                .entry(ownership.owner_id)
                .or_default()
                .push(ownership.partition_id);
        }
    }
    if owners.is_empty() {
        return Ok(());
    }
    let list = owners
        .iter()
        .map(|(owner, partitions)| format!("{owner} (partitions {})", partitions.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    anyhow::bail!(
        "consumer group {:?} has live owners: {list}. Backfill's readers would disconnect them; \
         pass --consumer-group with another consumer group of the event hub",
        config.eventhub.consumer_group
    )
}

/// The table printed at the end: one row per partition, then the totals.
fn summary(plans: &[PartitionPlan], outcomes: &BTreeMap<String, PartitionOutcome>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:>25} {:>12} {:>12} {:>8} {:>8}",
        "PARTITION", "RANGE", "ARCHIVED", "WRITTEN", "WINDOWS", "EXPIRED"
    );
    let (mut archived, mut written, mut windows) = (0, 0, 0);
    for plan in plans {
        let outcome = outcomes
            .get(&plan.partition_id)
            .cloned()
            .unwrap_or_default();
        let range = plan
            .range
            .map_or_else(|| "(no events)".to_owned(), |r| r.to_string());
        let state = if outcome.interrupted {
            "  interrupted"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<10} {:>25} {:>12} {:>12} {:>8} {:>8}{state}",
            plan.partition_id,
            range,
            plan.archived_events(),
            outcome.events_committed,
            outcome.windows_committed,
            outcome.events_expired,
        );
        archived += plan.archived_events();
        written += outcome.events_committed;
        windows += outcome.windows_committed;
    }
    let _ = writeln!(
        out,
        "total: {written} events written in {windows} windows; {archived} were archived already"
    );
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

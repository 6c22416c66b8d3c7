//! `hubcap checkpoints list|set|export|import`: read and move a consumer group's checkpoints in
//! the store hubcap and the SDK processors share.
//!
//! - `list` prints each partition's checkpoint and ownership record (store only);
//! - `set` writes checkpoints that start every reader at a chosen event ([`set`]);
//! - `export` prints the group's records as a JSON document, `import` writes one into the
//!   configured store ([`transfer`]), or the lease blobs of the legacy EventProcessorHost
//!   ([`legacy`]).
//!
//! `set` and `import` refuse a partition a live owner holds unless `--force`, take the
//! partition while they write, and release it ([`apply`] has the steps and why). `--dry-run`
//! prints what they would write and writes nothing. Neither `list`, `export` nor `import`
//! talks to Event Hubs; `set` does (partition properties, and the events before the new
//! positions).

pub mod apply;
pub mod legacy;
pub mod set;
pub mod transfer;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use self::apply::{Applied, OwnerState, Write};
use self::transfer::Document;
use crate::checkpoint::{Checkpoint, CheckpointStore, CommitRecord, Ownership};
use crate::config::{CheckpointStoreConfig, Config};
use crate::ops::position::PositionSpec;
use crate::ops::{parse_partition_list, Fleet};
use crate::runtime::{open_store, store_scope};

/// `hubcap checkpoints`.
#[derive(Debug, clap::Args)]
pub struct CheckpointsArgs {
    #[command(subcommand)]
    pub command: CheckpointsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CheckpointsCommand {
    /// Print each partition's checkpoint and ownership, as the checkpoint store holds them.
    List(ListArgs),
    /// Move checkpoints: where hubcap and the SDK processors resume in each partition.
    #[command(
        after_help = "A checkpoint is exclusive (readers resume after it): the one written \
        is the event before the chosen one (offset \"-1\" when the chosen event is the first \
        retained one). Refused while a live owner holds a partition unless --force, which takes \
        the partition from that owner: it stops reading, and the next owner starts from the new \
        checkpoint."
    )]
    Set(SetArgs),
    /// Print the consumer group's checkpoints and ownerships as one JSON document.
    Export(ExportArgs),
    /// Write the checkpoints of a document `export` wrote, or of EventProcessorHost lease
    /// blobs, into the configured store.
    Import(ImportArgs),
}

/// The config every subcommand reads.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// hubcap's config: [eventhub] names the event hub and consumer group, [checkpoint_store]
    /// the store, [load_balancing] ownership_expiration when an owner counts as live.
    #[arg(long, short, env = "HUBCAP_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The partitions to move, comma-separated (e.g. 0,3).
    #[arg(long, value_name = "IDS", value_parser = partition_ids, required_unless_present = "all", conflicts_with = "all")]
    pub partition: Option<PartitionIds>,
    /// Every partition of the event hub.
    #[arg(long)]
    pub all: bool,
    /// Where readers start: earliest, latest (the next event to arrive), seq:N (the event with
    /// sequence number N) or time:RFC3339 (the first event enqueued at or after that time).
    #[arg(long, value_name = "POSITION")]
    pub to: PositionSpec,
    /// Also write partitions a live owner holds, taking them from it.
    #[arg(long)]
    pub force: bool,
    /// Print what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read the events that positions resolve to through this consumer group instead of the
    /// configured one: needed while a fleet reads the configured one (the service refuses a
    /// reader without an owner level beside one with an owner level in the same group).
    #[arg(long, value_name = "NAME")]
    pub lookup_consumer_group: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Write the document to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "legacy_dir", "legacy_container"])))]
pub struct ImportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// A document `hubcap checkpoints export` wrote (`-` reads standard input).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A directory of EventProcessorHost lease files (one JSON lease per partition, e.g. the
    /// lease blobs downloaded with `az storage blob download-batch`).
    #[arg(long, value_name = "DIR")]
    pub legacy_dir: Option<PathBuf>,
    /// A container of EventProcessorHost lease blobs, in the [checkpoint_store] storage
    /// account.
    #[arg(long, value_name = "NAME")]
    pub legacy_container: Option<String>,
    /// Where the lease blobs are in --legacy-container: the host's storage blob prefix and
    /// consumer group [default: "<consumer group>/", as the host names them without a prefix].
    #[arg(long, value_name = "PREFIX", requires = "legacy_container")]
    pub legacy_prefix: Option<String>,
    /// Also write partitions a live owner holds, taking them from it.
    #[arg(long)]
    pub force: bool,
    /// Print what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Import a document exported from another namespace, event hub or consumer group (its
    /// offsets mean nothing elsewhere unless the events were copied exactly).
    #[arg(long)]
    pub ignore_scope: bool,
}

/// `--partition 0,3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionIds(pub Vec<String>);

fn partition_ids(list: &str) -> Result<PartitionIds, String> {
    parse_partition_list(list).map(PartitionIds)
}

impl CheckpointsArgs {
    /// The config file the subcommand reads.
    pub fn config_path(&self) -> &Path {
        match &self.command {
            CheckpointsCommand::List(args) => &args.config.config,
            CheckpointsCommand::Set(args) => &args.config.config,
            CheckpointsCommand::Export(args) => &args.config.config,
            CheckpointsCommand::Import(args) => &args.config.config,
        }
    }
}

/// Runs the subcommand on a loaded config.
pub async fn run(args: CheckpointsArgs, config: Config) -> anyhow::Result<ExitCode> {
    match args.command {
        CheckpointsCommand::List(_) => list(&config).await,
        CheckpointsCommand::Set(args) => set_command(&args, config).await,
        CheckpointsCommand::Export(args) => export(&args, &config).await,
        CheckpointsCommand::Import(args) => import(&args, &config).await,
    }
}

async fn list(config: &Config) -> anyhow::Result<ExitCode> {
    let store = open_store(config).await?;
    let checkpoints = store
        .list_checkpoints()
        .await
        .context("reading the checkpoints")?;
    let ownerships = store
        .list_ownership()
        .await
        .context("reading the ownership records")?;
    let mut text = format!("{}\n", describe_store(config));
    text.push_str(&render_list(
        &checkpoints,
        &ownerships,
        SystemTime::now(),
        config.load_balancing.ownership_expiration,
    ));
    print(&text)
}

/// The store and the records' scope, without secrets.
pub fn describe_store(config: &Config) -> String {
    let scope = store_scope(config);
    let store = match &config.checkpoint_store {
        CheckpointStoreConfig::File { path } => format!("file store {}", path.display()),
        CheckpointStoreConfig::AzureBlob { container, .. } => {
            format!("azure_blob store, container {container}")
        }
    };
    format!(
        "{store}: namespace {}, event hub {}, consumer group {}",
        scope.fully_qualified_namespace, scope.event_hub, scope.consumer_group
    )
}

/// `list`'s table: one row per partition that has either record.
pub fn render_list(
    checkpoints: &[Checkpoint],
    ownerships: &[Ownership],
    now: SystemTime,
    expiration: Duration,
) -> String {
    let mut ids: Vec<&str> = checkpoints
        .iter()
        .map(|c| c.partition_id.as_str())
        .chain(ownerships.iter().map(|o| o.partition_id.as_str()))
        .collect();
    ids.sort_by_key(|id| partition_order(id));
    ids.dedup();
    if ids.is_empty() {
        return "no checkpoint or ownership records\n".to_owned();
    }
    let header = [
        "PARTITION",
        "SEQUENCE",
        "OFFSET",
        "OWNER",
        "OWNERSHIP",
        "COMMIT RECORD",
    ];
    let rows: Vec<[String; 6]> = ids
        .iter()
        .map(|id| {
            let checkpoint = checkpoints.iter().find(|c| c.partition_id == *id);
            let ownership = ownerships.iter().find(|o| o.partition_id == *id);
            let dash = || "-".to_owned();
            let (owner, state) = match OwnerState::of(ownership, now, expiration) {
                OwnerState::NeverOwned => (dash(), dash()),
                OwnerState::Released => (dash(), "released".to_owned()),
                OwnerState::Owned {
                    owner_id,
                    since,
                    live,
                } => (
                    owner_id,
                    format!(
                        "{} (renewed {:.1} s ago)",
                        if live { "live" } else { "expired" },
                        since.as_secs_f64()
                    ),
                ),
            };
            [
                (*id).to_owned(),
                checkpoint
                    .and_then(|c| c.sequence_number)
                    .map_or_else(dash, |n| n.to_string()),
                checkpoint
                    .and_then(|c| c.offset.clone())
                    .filter(|o| !o.is_empty())
                    .unwrap_or_else(dash),
                owner,
                state,
                ownership
                    .and_then(|o| o.commit.as_ref())
                    .map_or_else(dash, describe_commit),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    text
}

fn describe_commit(record: &CommitRecord) -> String {
    format!(
        "{}-{} {}",
        record.first_sequence_number, record.last_sequence_number, record.name
    )
}

async fn set_command(args: &SetArgs, config: Config) -> anyhow::Result<ExitCode> {
    let lookup_group = args
        .lookup_consumer_group
        .clone()
        .unwrap_or_else(|| config.eventhub.consumer_group.clone());
    let fleet = Fleet::open(config, args.lookup_consumer_group.as_deref()).await?;
    let result = set_partitions(&fleet, args, &lookup_group).await;
    fleet.close().await;
    result
}

/// Everything is resolved and checked before the first write: a bad partition, a position
/// that cannot be resolved or a live owner (without `--force`) writes nothing anywhere.
async fn set_partitions(
    fleet: &Fleet,
    args: &SetArgs,
    lookup_group: &str,
) -> anyhow::Result<ExitCode> {
    let expiration = fleet.config.load_balancing.ownership_expiration;
    let wanted = args.partition.as_ref().map(|ids| ids.0.as_slice());
    let ids = fleet.select_partitions(wanted).await?;
    let before = apply::owner_states(&fleet.store, &ids, expiration, args.force).await?;
    let mut writes = Vec::with_capacity(ids.len());
    let mut resumes = Vec::with_capacity(ids.len());
    for id in &ids {
        let properties = fleet.partition_properties(id).await?;
        let target = set::target(&fleet.client, &properties, args.to, lookup_group).await?;
        writes.push(Write {
            partition_id: id.clone(),
            checkpoint: Some(target.checkpoint),
            // The rewound checkpoint is what counts now: see apply's module doc.
            commit: None,
        });
        resumes.push(target.resume);
    }
    let found = if args.dry_run {
        before
    } else {
        apply::apply(
            &fleet.store,
            &writes,
            expiration,
            args.force,
            &apply::tool_owner_id("set"),
        )
        .await?
    };
    let mut text = String::new();
    for ((write, resume), applied) in writes.iter().zip(&resumes).zip(&found) {
        text.push_str(&format!(
            "partition {}: {}{}: readers resume at {resume}{}\n",
            write.partition_id,
            if args.dry_run { "would write " } else { "" },
            describe_checkpoint(write.checkpoint.as_ref()),
            owner_note(applied, write, args.dry_run),
        ));
    }
    text.push_str(&summary(
        writes.len(),
        args.dry_run,
        &describe_store(&fleet.config),
    ));
    print(&text)
}

/// `checkpoint sequence number 41, offset "8200"`.
fn describe_checkpoint(checkpoint: Option<&Checkpoint>) -> String {
    let Some(checkpoint) = checkpoint else {
        return "checkpoint unchanged".to_owned();
    };
    let number = checkpoint
        .sequence_number
        .map_or_else(|| "none".to_owned(), |n| n.to_string());
    let offset = checkpoint.offset.as_deref().unwrap_or("");
    format!("checkpoint sequence number {number}, offset {offset:?}")
}

/// What changed in a partition's ownership record, for one report line.
fn owner_note(applied: &Applied, write: &Write, dry_run: bool) -> String {
    let (take, release, clear) = if dry_run {
        ("would take", "would release", "would clear")
    } else {
        ("took", "released", "cleared")
    };
    let mut notes = Vec::new();
    match &applied.previous {
        OwnerState::Owned { live: true, .. } => notes.push(format!(
            "{take} the partition from its {}",
            applied.previous
        )),
        OwnerState::Owned { live: false, .. } => {
            notes.push(format!("{release} its {}", applied.previous))
        }
        OwnerState::Released | OwnerState::NeverOwned => {}
    }
    match (&applied.previous_commit, &write.commit) {
        (Some(old), new) if new.as_ref() != Some(old) => notes.push(format!(
            "{clear} hubcap's commit record {}",
            describe_commit(old)
        )),
        _ => {}
    }
    if let Some(new) = &write.commit {
        if applied.previous_commit.as_ref() != Some(new) {
            let wrote = if dry_run { "would write" } else { "wrote" };
            notes.push(format!(
                "{wrote} hubcap's commit record {}",
                describe_commit(new)
            ));
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    }
}

fn summary(count: usize, dry_run: bool, store: &str) -> String {
    if dry_run {
        format!("dry run: nothing written ({count} partition(s) in the {store})\n")
    } else {
        format!("wrote {count} partition(s) in the {store}\n")
    }
}

async fn export(args: &ExportArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let store = open_store(config).await?;
    // Ownerships first: a checkpoint written while exporting is then newer than the commit
    // record listed, which `resume_point` reads as "done", never the other way round.
    let ownerships = store
        .list_ownership()
        .await
        .context("reading the ownership records")?;
    let checkpoints = store
        .list_checkpoints()
        .await
        .context("reading the checkpoints")?;
    let document = Document::new(
        &store_scope(config),
        &checkpoints,
        &ownerships,
        SystemTime::now(),
    );
    let text = document.to_json();
    match &args.output {
        None => print(&text),
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "exported {} checkpoint(s) and {} ownership record(s) to {}",
                document.checkpoints.len(),
                document.ownerships.len(),
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn import(args: &ImportArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let (writes, notes, source) = import_source(args, config).await?;
    let mut text: String = notes.iter().map(|note| format!("{note}\n")).collect();
    if writes.is_empty() {
        text.push_str(&format!("nothing to import from {source}\n"));
        return print(&text);
    }
    let store = open_store(config).await?;
    let expiration = config.load_balancing.ownership_expiration;
    let ids: Vec<String> = writes.iter().map(|w| w.partition_id.clone()).collect();
    let found = if args.dry_run {
        apply::owner_states(&store, &ids, expiration, args.force).await?
    } else {
        apply::apply(
            &store,
            &writes,
            expiration,
            args.force,
            &apply::tool_owner_id("import"),
        )
        .await?
    };
    for (write, applied) in writes.iter().zip(&found) {
        text.push_str(&format!(
            "partition {}: {}{}{}\n",
            write.partition_id,
            if args.dry_run { "would write " } else { "" },
            describe_checkpoint(write.checkpoint.as_ref()),
            owner_note(applied, write, args.dry_run),
        ));
    }
    text.push_str(&format!("from {source}\n"));
    text.push_str(&summary(
        writes.len(),
        args.dry_run,
        &describe_store(config),
    ));
    print(&text)
}

/// What an import writes, notes about what it leaves out, and its source for messages.
async fn import_source(
    args: &ImportArgs,
    config: &Config,
) -> anyhow::Result<(Vec<Write>, Vec<String>, String)> {
    if let Some(path) = &args.file {
        let (text, source) = if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            (text, "standard input".to_owned())
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            (text, path.display().to_string())
        };
        let document = Document::parse(&text, &source).map_err(anyhow::Error::msg)?;
        let mismatches = document.scope_mismatches(&store_scope(config));
        if !mismatches.is_empty() && !args.ignore_scope {
            anyhow::bail!(
                "{source} holds another consumer group's records: {}; offsets belong to the \
                 event hub they were read from (pass --ignore-scope if the events are the same); \
                 nothing written",
                mismatches.join(", ")
            );
        }
        return Ok((document.writes(), Vec::new(), source));
    }
    let (leases, source) = if let Some(dir) = &args.legacy_dir {
        let leases = legacy::read_dir(dir)?;
        if leases.is_empty() {
            anyhow::bail!(
                "no lease files in {}: expected one JSON lease per partition; nothing written",
                dir.display()
            );
        }
        (
            leases,
            format!("EventProcessorHost leases in {}", dir.display()),
        )
    } else if let Some(container) = &args.legacy_container {
        let CheckpointStoreConfig::AzureBlob { storage, proxy, .. } = &config.checkpoint_store
        else {
            anyhow::bail!(
                "--legacy-container reads the lease blobs with the [checkpoint_store] storage \
                 account, and this config's store is a file store: download the lease blobs to \
                 a directory and use --legacy-dir"
            );
        };
        let prefix = match &args.legacy_prefix {
            Some(prefix) if prefix.is_empty() || prefix.ends_with('/') => prefix.clone(),
            Some(prefix) => format!("{prefix}/"),
            None => format!("{}/", config.eventhub.consumer_group),
        };
        let blobs = crate::storage::BlobContainer::connect(storage, container, proxy)
            .with_context(|| format!("container {container:?}"))?;
        let leases = legacy::read_blobs(&blobs, &prefix).await?;
        if leases.is_empty() {
            anyhow::bail!(
                "no lease blobs under {prefix:?} in container {container:?} (give the host's \
                 blob prefix and consumer group with --legacy-prefix); nothing written"
            );
        }
        (
            leases,
            format!("EventProcessorHost leases under {prefix:?} in container {container}"),
        )
    } else {
        anyhow::bail!("give a FILE, --legacy-dir or --legacy-container");
    };
    let mut notes = Vec::new();
    let mut writes = Vec::new();
    for lease in &leases {
        let owner = match (&lease.owner, lease.epoch) {
            (Some(owner), Some(epoch)) => {
                format!(" (its lease owner {owner:?}, epoch {epoch}, is not carried over)")
            }
            (Some(owner), None) => format!(" (its lease owner {owner:?} is not carried over)"),
            _ => String::new(),
        };
        match lease.checkpoint() {
            Some(checkpoint) => {
                if !owner.is_empty() {
                    notes.push(format!(
                        "partition {}: {}{owner}",
                        lease.partition_id, lease.source
                    ));
                }
                writes.push(Write {
                    partition_id: lease.partition_id.clone(),
                    checkpoint: Some(checkpoint),
                    commit: None,
                });
            }
            None => notes.push(format!(
                "partition {}: {} has no checkpoint (never checkpointed): left as it is",
                lease.partition_id, lease.source
            )),
        }
    }
    Ok((writes, notes, source))
}

/// Numeric partition ids in numeric order, then any others by name.
pub(crate) fn partition_order(partition_id: &str) -> (bool, u64, &str) {
    match partition_id.parse::<u64>() {
        Ok(number) => (false, number, partition_id),
        Err(_) => (true, 0, partition_id),
    }
}

/// Prints to standard output; a reader that stops early (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("standard output: {e}"))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn the_list_shows_every_partition_with_either_record() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let checkpoints = [
            Checkpoint {
                partition_id: "10".into(),
                offset: Some("-1".into()),
                sequence_number: Some(9),
                committed_in: None,
            },
            Checkpoint {
                partition_id: "0".into(),
                offset: Some("8200".into()),
                sequence_number: Some(41),
                committed_in: None,
            },
        ];
        let ownerships = [
            Ownership {
                partition_id: "0".into(),
                owner_id: "hubcap-a".into(),
                last_modified: now - Duration::from_millis(800),
                version: "3".into(),
                commit: Some(CommitRecord {
                    first_sequence_number: 30,
                    last_sequence_number: 41,
                    name: "ns/hub1/0/w.avro".into(),
                }),
            },
            Ownership {
                partition_id: "2".into(),
                owner_id: "hubcap-b".into(),
                last_modified: now - Duration::from_secs(90),
                version: "3".into(),
                commit: None,
            },
        ];
        let table = render_list(&checkpoints, &ownerships, now, Duration::from_secs(60));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[0].starts_with("PARTITION  SEQUENCE  OFFSET  OWNER"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("0          41        8200    hubcap-a  live (renewed 0.8 s ago)"),
            "{table}"
        );
        assert!(lines[1].ends_with("30-41 ns/hub1/0/w.avro"), "{table}");
        assert!(
            lines[2].contains("hubcap-b  expired (renewed 90.0 s ago)"),
            "{table}"
        );
        assert!(lines[3].starts_with("10         9         -1"), "{table}");
        assert_eq!(
            render_list(&[], &[], now, Duration::from_secs(60)),
            "no checkpoint or ownership records\n"
        );
    }

    #[test]
    fn report_notes_say_what_changed_in_the_ownership() {
        let record = CommitRecord {
            first_sequence_number: 10,
            last_sequence_number: 19,
            name: "w.avro".into(),
        };
        let write = Write {
            partition_id: "0".into(),
            checkpoint: None,
            commit: None,
        };
        let applied = Applied {
            partition_id: "0".into(),
            previous: OwnerState::Owned {
                owner_id: "hubcap-a".into(),
                since: Duration::from_millis(400),
                live: true,
            },
            previous_commit: Some(record.clone()),
        };
        assert_eq!(
            owner_note(&applied, &write, false),
            "; took the partition from its live owner \"hubcap-a\" (renewed 0.4 s ago); \
             cleared hubcap's commit record 10-19 w.avro"
        );
        let unchanged = Write {
            commit: Some(record),
            ..write
        };
        let released = Applied {
            previous: OwnerState::Released,
            ..applied
        };
        assert_eq!(owner_note(&released, &unchanged, true), "");
    }
}

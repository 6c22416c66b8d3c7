//! Checks against the real services, before a run: `hubcap check-config --connect` and the
//! partition check of `hubcap send --partition-id`.
//!
//! Config validation ([`crate::config`]) is pure and needs no network; these checks are the
//! separate reachability step. Each one reports a [`Check`] with a sentence a user can act on;
//! they are built from the same pieces the daemon starts with ([`crate::runtime`]).

use std::collections::HashMap;
use std::path::Path;

use crate::checkpoint::CheckpointStore;
use crate::config::{CheckpointStoreConfig, Config};
use crate::eventhubs::EventHubClient;
use crate::sink::Sink;
use crate::storage::{BlobContainer, Condition};

/// The blob (in a container) or file (in a directory) the write checks create; a later check
/// overwrites it. Not `.avro` and outside the checkpoint prefixes, so no reader takes it for
/// an archive or a record.
pub const PROBE_NAME: &str = "hubcap-preflight";

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked: `event hubs`, `checkpoint store`, `sink`.
    pub what: &'static str,
    /// `Ok(what was found)` or `Err(what failed and what to do)`.
    pub outcome: Result<String, String>,
}

/// Runs every check; each runs even if an earlier one failed.
pub async fn connect_checks(config: &Config) -> Vec<Check> {
    vec![
        Check {
            what: "event hubs",
            outcome: event_hubs(config).await,
        },
        Check {
            what: "checkpoint store",
            outcome: checkpoint_store(config).await,
        },
        Check {
            what: "sink",
            outcome: sink(config).await,
        },
    ]
}

async fn event_hubs(config: &Config) -> Result<String, String> {
    let hub = &config.eventhub.name;
    let settings = crate::runtime::client_settings(config).map_err(|e| e.to_string())?;
    let endpoint = settings.endpoint();
    let client = EventHubClient::new(settings).map_err(|e| e.to_string())?;
    let result = client.event_hub_properties().await;
    client.close().await;
    match result {
        Ok(properties) => Ok(format!(
            "{endpoint} accepts the credentials; event hub {hub:?} has {} partitions ({})",
            properties.partition_ids.len(),
            properties.partition_ids.join(",")
        )),
        Err(error) => {
            use crate::eventhubs::EventHubsError;
            let hint = match &error {
                EventHubsError::Unauthorized { .. } | EventHubsError::Management { .. } => {
                    " (check the event hub name; the credential needs the Listen right on the \
                     hub, or the Azure Event Hubs Data Receiver role)"
                }
                EventHubsError::Connect { .. } | EventHubsError::Timeout { .. } => {
                    " (check the namespace host name, and that this host can reach its port: \
                     5671 for AMQP over TLS)"
                }
                _ => "",
            };
            Err(format!(
                "cannot read event hub {hub:?} at {endpoint}: {error}{hint}"
            ))
        }
    }
}

async fn checkpoint_store(config: &Config) -> Result<String, String> {
    let store = crate::runtime::open_store(config)
        .await
        .map_err(|e| format!("cannot open: {e}"))?;
    let records = store
        .list_ownership()
        .await
        .map_err(|e| format!("cannot list the ownership records: {e}"))?;
    match &config.checkpoint_store {
        CheckpointStoreConfig::File { path } => {
            probe_directory(path)?;
            Ok(format!(
                "directory {} is readable and writable ({} ownership records)",
                path.display(),
                records.len()
            ))
        }
        CheckpointStoreConfig::AzureBlob {
            storage,
            proxy,
            container,
            ..
        } => {
            let container =
                BlobContainer::connect(storage, container, proxy).map_err(|e| e.to_string())?;
            probe_container(&container, "Storage Blob Data Contributor").await?;
            Ok(format!(
                "container {:?} is readable and writable ({} ownership records)",
                container.name(),
                records.len()
            ))
        }
    }
}

async fn sink(config: &Config) -> Result<String, String> {
    match crate::runtime::sink(config)
        .await
        .map_err(|e| e.to_string())?
    {
        Sink::Stdout(_) => Ok("stdout".into()),
        Sink::File(settings) => {
            probe_directory(&settings.root)?;
            Ok(format!("directory {} is writable", settings.root.display()))
        }
        Sink::Blob(settings) => {
            probe_container(&settings.container, "Storage Blob Data Contributor").await?;
            Ok(format!(
                "container {:?} is writable",
                settings.container.name()
            ))
        }
    }
}

/// Creates `dir` if needed, then writes, reads back and removes a probe file in it.
fn probe_directory(dir: &Path) -> Result<(), String> {
    let fail = |action: &str, e: std::io::Error| {
        format!(
            "cannot {action} {}: {e} (the user hubcap runs as needs write access there)",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create the directory", e))?;
    let probe = dir.join(format!(".{PROBE_NAME}-{}", std::process::id()));
    std::fs::write(&probe, b"hubcap").map_err(|e| fail("write a file in", e))?;
    let read = std::fs::read(&probe).map_err(|e| fail("read a file in", e));
    let _ = std::fs::remove_file(&probe);
    read.map(|_| ())
}

/// Writes the empty probe blob and reads its properties back.
async fn probe_container(container: &BlobContainer, role: &str) -> Result<(), String> {
    let name = container.name().to_owned();
    let metadata = HashMap::from([("purpose".to_owned(), "hubcap-check-config".to_owned())]);
    container
        .upload_empty(PROBE_NAME, &metadata, Condition::None)
        .await
        .map_err(|e| {
            format!(
                "cannot write blob {PROBE_NAME:?} in container {name:?}: {e} (the identity needs \
                 the {role} role on the container or account, or a SAS with read, write and list)"
            )
        })?;
    match container.get_properties(PROBE_NAME).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "wrote blob {PROBE_NAME:?} in container {name:?} but cannot find it again"
        )),
        Err(e) => Err(format!(
            "cannot read blob {PROBE_NAME:?} in container {name:?}: {e}"
        )),
    }
}

/// For `hubcap send --partition-id`: an error naming the valid ids when the hub has no such
/// partition (the service would only close the link with `amqp:not-found`).
pub async fn check_partition_exists(config: &Config, partition_id: &str) -> anyhow::Result<()> {
    let client = EventHubClient::new(crate::runtime::client_settings(config)?)?;
    let properties = client.event_hub_properties().await;
    client.close().await;
    let properties = properties?;
    if properties.partition_ids.iter().any(|id| id == partition_id) {
        return Ok(());
    }
    anyhow::bail!(
        "event hub {:?} has no partition {partition_id:?}; its partitions are {}",
        properties.name,
        properties.partition_ids.join(", ")
    )
}

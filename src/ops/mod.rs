//! Operator commands: `hubcap status`, `hubcap checkpoints`, `hubcap backfill`. They read and
//! write the same checkpoint-store records as the daemon and the SDK processors, and talk to
//! the service through the same client; what they share is here.

pub mod backfill;
pub mod checkpoints;
pub mod position;
pub mod status;

use std::sync::Arc;

use crate::checkpoint::Store;
use crate::config::Config;
use crate::eventhubs::{EventHubClient, PartitionProperties};
use crate::runtime::{client_settings, open_store, SetupError};

/// What an operator command opens from a config: the event hub (through `consumer_group`,
/// the configured one unless a command names another) and the checkpoint store of the
/// configured consumer group.
pub struct Fleet {
    pub config: Config,
    pub client: Arc<EventHubClient>,
    pub store: Store,
}

impl Fleet {
    pub async fn open(config: Config, consumer_group: Option<&str>) -> Result<Self, SetupError> {
        let mut settings = client_settings(&config)?;
        if let Some(group) = consumer_group {
            settings.consumer_group = group.to_owned();
        }
        let client = Arc::new(EventHubClient::new(settings)?);
        let store = open_store(&config).await?;
        Ok(Self {
            config,
            client,
            store,
        })
    }

    /// The hub's partition ids, in the service's order.
    pub async fn partition_ids(&self) -> anyhow::Result<Vec<String>> {
        let hub = self
            .client
            .event_hub_properties()
            .await
            .map_err(|e| anyhow::anyhow!("event hub {:?}: {e}", self.config.eventhub.name))?;
        Ok(hub.partition_ids)
    }

    /// `wanted` (all partitions when `None`), each checked against the hub's partitions.
    pub async fn select_partitions(
        &self,
        wanted: Option<&[String]>,
    ) -> anyhow::Result<Vec<String>> {
        let all = self.partition_ids().await?;
        select(&self.config.eventhub.name, &all, wanted)
    }

    /// One partition's properties, with the partition named in the error.
    pub async fn partition_properties(&self, id: &str) -> anyhow::Result<PartitionProperties> {
        self.client
            .partition_properties(id)
            .await
            .map_err(|e| anyhow::anyhow!("partition {id}: {e}"))
    }

    pub async fn close(&self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.client.close()).await;
    }
}

/// Checks `wanted` against the hub's partition ids (every one when `None`), keeping the
/// hub's order and dropping repeats.
pub fn select(hub: &str, all: &[String], wanted: Option<&[String]>) -> anyhow::Result<Vec<String>> {
    let Some(wanted) = wanted else {
        return Ok(all.to_vec());
    };
    let unknown: Vec<&str> = wanted
        .iter()
        .filter(|id| !all.contains(id))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "unknown partition {}: event hub {hub:?} has partitions {}",
            unknown.join(", "),
            all.join(", ")
        );
    }
    Ok(all
        .iter()
        .filter(|id| wanted.contains(id))
        .cloned()
        .collect())
}

/// A human duration (ages, ETAs): `12s`, `4m05s`, `3h07m`, `2d04h`.
pub fn human_duration(seconds: f64) -> String {
    let total = seconds.max(0.0).floor() as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if total < 60 {
        format!("{s}s")
    } else if total < 3600 {
        format!("{m}m{s:02}s")
    } else if total < 86_400 {
        format!("{}h{m:02}m", total / 3600)
    } else {
        format!("{d}d{h:02}h")
    }
}

/// `--partitions 0,3` as one argument (clap would take a `Vec` for repeated values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionList(pub Vec<String>);

impl std::str::FromStr for PartitionList {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        parse_partition_list(list).map(PartitionList)
    }
}

/// `--partitions 0,3`: a comma-separated list of partition ids.
pub fn parse_partition_list(list: &str) -> Result<Vec<String>, String> {
    let ids: Vec<String> = list.split(',').map(|id| id.trim().to_owned()).collect();
    if ids.iter().any(String::is_empty) {
        return Err(format!(
            "{list:?}: expected partition ids separated by commas, e.g. 0,3"
        ));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn selected_partitions_keep_the_hub_order_and_unknown_ones_are_named() {
        let all = ids(&["0", "1", "2", "3"]);
        assert_eq!(select("hub", &all, None).unwrap(), all);
        assert_eq!(
            select("hub", &all, Some(&ids(&["3", "0", "3"]))).unwrap(),
            ids(&["0", "3"])
        );
        let error = select("hub", &all, Some(&ids(&["1", "7", "x"])))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "unknown partition 7, x: event hub \"hub\" has partitions 0, 1, 2, 3"
        );
    }

    #[test]
    fn partition_lists_are_comma_separated() {
        assert_eq!(parse_partition_list("0, 3").unwrap(), ids(&["0", "3"]));
        assert!(parse_partition_list("0,,3").unwrap_err().contains("0,,3"));
        assert!(parse_partition_list("").is_err());
    }
}

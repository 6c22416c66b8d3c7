//! Emulator settings, from command-line flags and/or a TOML file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::store::Retention;
use crate::token::SasKey;

/// The key name and key of the official emulator's sample connection string, used when no key
/// is configured so that sample connection strings work unchanged.
pub const DEFAULT_SAS_KEY_NAME: &str = "RootManageSharedAccessKey";
pub const DEFAULT_SAS_KEY: &str = "SAS_KEY_VALUE";
/// The service's per-publication limit on Standard and above.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorConfig {
    /// AMQP listen address; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Admin HTTP (fault injection, preload) listen address; none = no admin endpoint.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Namespace name, as in `<namespace>.servicebus.windows.net`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Event hubs and their partition counts.
    #[serde(default)]
    pub hubs: Vec<HubConfig>,
    /// Consumer groups that exist on every hub besides `$Default`.
    #[serde(default)]
    pub consumer_groups: Vec<String>,
    /// SAS keys tokens may be signed with.
    #[serde(default)]
    pub sas_keys: Vec<SasKeyConfig>,
    /// Accept `jwt` tokens on `$cbs` (Entra ID flows in tests); their signature is not checked.
    #[serde(default)]
    pub accept_jwt: bool,
    /// Largest publication accepted, advertised on sender links.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// Keep at most this many events per partition.
    #[serde(default)]
    pub retention_events: Option<u64>,
    /// Keep at most this many encoded bytes per partition.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// PEM certificate chain and key: serve TLS (amqps) instead of plain AMQP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub name: String,
    pub partitions: usize,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SasKeyConfig {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("hub spec '{spec}' is not NAME:PARTITIONS with 1 to 1024 partitions")]
    BadHubSpec { spec: String },
    #[error("hub '{name}' has {partitions} partitions; it must have 1 to 1024")]
    BadPartitionCount { name: String, partitions: usize },
    #[error("hub '{name}' is defined twice")]
    DuplicateHub { name: String },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("retention must keep at least one event")]
    ZeroRetention,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5672))
}
fn default_namespace() -> String {
    "emulatorns".to_owned()
}
fn default_max_message_size() -> u64 {
    DEFAULT_MAX_MESSAGE_SIZE
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: None,
            namespace: default_namespace(),
            hubs: Vec::new(),
            consumer_groups: Vec::new(),
            sas_keys: Vec::new(),
            accept_jwt: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            retention_events: None,
            retention_bytes: None,
            tls: None,
        }
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("namespace", &self.namespace)
            .field("hubs", &self.hubs)
            .field("consumer_groups", &self.consumer_groups)
            .field(
                "sas_key_names",
                &self.sas_keys.iter().map(|k| &k.name).collect::<Vec<_>>(),
            )
            .field("accept_jwt", &self.accept_jwt)
            .field("max_message_size", &self.max_message_size)
            .field("retention_events", &self.retention_events)
            .field("retention_bytes", &self.retention_bytes)
            .field("tls", &self.tls)
            .finish()
    }
}

impl EmulatorConfig {
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Adds a hub from a `NAME:PARTITIONS` command-line spec.
    pub fn add_hub_spec(&mut self, spec: &str) -> Result<(), ConfigError> {
        let bad = || ConfigError::BadHubSpec {
            spec: spec.to_owned(),
        };
        let (name, partitions) = spec.rsplit_once(':').ok_or_else(bad)?;
        let partitions = partitions.trim().parse().map_err(|_| bad())?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad());
        }
        self.hubs.push(HubConfig {
            name: name.to_owned(),
            partitions,
        });
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, hub) in self.hubs.iter().enumerate() {
            if !(1..=1024).contains(&hub.partitions) {
                return Err(ConfigError::BadPartitionCount {
                    name: hub.name.clone(),
                    partitions: hub.partitions,
                });
            }
            if self.hubs[..i]
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(&hub.name))
            {
                return Err(ConfigError::DuplicateHub {
                    name: hub.name.clone(),
                });
            }
        }
        if self.retention_events == Some(0) {
            return Err(ConfigError::ZeroRetention);
        }
        Ok(())
    }

    pub fn retention(&self) -> Retention {
        Retention {
            max_events: self.retention_events,
            max_bytes: self.retention_bytes,
        }
    }

    pub fn keys(&self) -> Vec<SasKey> {
        if self.sas_keys.is_empty() {
            return vec![SasKey::new(DEFAULT_SAS_KEY_NAME, DEFAULT_SAS_KEY)];
        }
        self.sas_keys
            .iter()
            .map(|k| SasKey::new(k.name.clone(), k.key.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_specs_parse_and_bad_ones_are_named() {
        let mut config = EmulatorConfig::default();
        config.add_hub_spec("hub1:4").unwrap();
        config.add_hub_spec("telemetry:32").unwrap();
        assert_eq!(config.hubs[1].partitions, 32);
        for bad in ["hub1", "hub1:x", ":4", "hub1:-1"] {
            let err = config.add_hub_spec(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        config.add_hub_spec("big:2000").unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadPartitionCount { .. })
        ));
    }

    #[test]
    fn duplicate_hubs_are_rejected_case_insensitively() {
        let mut config = EmulatorConfig::default();
        config.add_hub_spec("hub1:1").unwrap();
        config.add_hub_spec("HUB1:2").unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DuplicateHub { .. })
        ));
    }

    #[test]
    fn toml_file_form() {
        let config: EmulatorConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:0"
            namespace = "ns"
            consumer_groups = ["cg1"]
            retention_events = 10
            [[hubs]]
            name = "hub1"
            partitions = 2
            [[sas_keys]]
            name = "k"
            key = "secret-value"
            "#,
        )
        .unwrap();
        assert_eq!(config.hubs[0].partitions, 2);
        assert!(!format!("{config:?}").contains("secret-value"));
        assert!(toml::from_str::<EmulatorConfig>("bogus = 1").is_err());
    }
}

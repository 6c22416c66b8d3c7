//! Builds the daemon from a [`Config`] and runs it until shutdown.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::balance::Strategy;
use crate::checkpoint::blob::BlobCheckpointStore;
use crate::checkpoint::file::FileCheckpointStore;
use crate::checkpoint::{NameCase, Store, StoreScope};
use crate::config::{self, CheckpointStoreConfig, Config, EventHubConnection, SinkKind};
use crate::credential::{token_credential, EntraTokenProvider};
use crate::eventhubs::connection_string::{ConnectionString, ConnectionStringAuth};
use crate::eventhubs::{
    ClientSettings, Credential, EventHubClient, EventPosition, ReceiverOptions,
};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::partition::PartitionSettings;
use crate::sink::blob::BlobSinkSettings;
use crate::sink::file::FileSinkSettings;
use crate::sink::path_format::PathFormat;
use crate::sink::{Sink, WindowNames, WindowSettings};
use crate::storage::BlobContainer;
use crate::supervisor::{Supervisor, SupervisorSettings};

/// Events handed from a receiver to the sink at once.
const RECEIVE_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("[eventhub] connection_string: {0}")]
    ConnectionString(#[from] crate::eventhubs::connection_string::ConnectionStringError),
    #[error(transparent)]
    EventHubs(#[from] crate::eventhubs::EventHubsError),
    #[error("[sink] path_format: {reason}")]
    PathFormat { reason: String },
    #[error("[eventhub] credential: {0}")]
    Credential(#[from] crate::credential::CredentialError),
    #[error("[checkpoint_store] {0}")]
    Storage(String),
    #[error("checkpoint store: {0}")]
    Store(#[from] crate::checkpoint::StoreError),
}

/// The Event Hubs client settings a config describes.
pub fn client_settings(config: &Config) -> Result<ClientSettings, SetupError> {
    let hub = &config.eventhub;
    let (host, port, tls, credential) = match &hub.connection {
        EventHubConnection::ConnectionString(secret) => {
            let parsed = ConnectionString::parse(secret.expose())?;
            let tls = !parsed.use_development_emulator;
            let port = parsed.port.unwrap_or(if tls { 5671 } else { 5672 });
            let credential = match parsed.auth {
                ConnectionStringAuth::SharedAccessKey { key_name, key } => {
                    Credential::SharedAccessKey {
                        key_name,
                        key,
                        token_lifetime: hub.token_lifetime,
                    }
                }
                ConnectionStringAuth::SharedAccessSignature(token) => {
                    Credential::SharedAccessSignature(token)
                }
            };
            (parsed.host, port, tls, credential)
        }
        EventHubConnection::Credential {
            fully_qualified_namespace,
            credential,
        } => {
            let (host, port) = match fully_qualified_namespace.rsplit_once(':') {
                Some((host, port)) => match port.parse() {
                    Ok(port) => (host.to_owned(), port),
                    Err(_) => (fully_qualified_namespace.clone(), 5671),
                },
                None => (fully_qualified_namespace.clone(), 5671),
            };
            let provider = EntraTokenProvider(token_credential(credential)?);
            (host, port, true, Credential::Provider(Arc::new(provider)))
        }
    };
    Ok(ClientSettings {
        host,
        port,
        tls,
        ca_file: hub.ca_file.clone(),
        event_hub: hub.name.clone(),
        consumer_group: hub.consumer_group.clone(),
        credential,
        connect_timeout: hub.connect_timeout,
    })
}

/// The namespace name checkpoint records start with: the host as the Python SDK keeps it
/// (with `:port` when the endpoint has one), so hubcap and SDK processors share records.
pub fn fully_qualified_namespace(config: &Config) -> Result<String, SetupError> {
    Ok(match &config.eventhub.connection {
        EventHubConnection::ConnectionString(secret) => {
            ConnectionString::parse(secret.expose())?.fully_qualified_namespace()
        }
        EventHubConnection::Credential {
            fully_qualified_namespace,
            ..
        } => fully_qualified_namespace.clone(),
    })
}

pub fn start_position(position: &config::StartPosition) -> EventPosition {
    match position {
        config::StartPosition::Earliest => EventPosition::Earliest,
        config::StartPosition::Latest => EventPosition::Latest,
        config::StartPosition::SequenceNumber(n) => EventPosition::SequenceNumber {
            sequence_number: *n,
            inclusive: true,
        },
        config::StartPosition::EnqueuedTime(t) => EventPosition::EnqueuedTime {
            enqueued_time_ms: t
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            inclusive: true,
        },
    }
}

pub async fn open_store(config: &Config) -> Result<Store, SetupError> {
    let scope = StoreScope {
        fully_qualified_namespace: fully_qualified_namespace(config)?,
        event_hub: config.eventhub.name.clone(),
        consumer_group: config.eventhub.consumer_group.clone(),
    };
    match &config.checkpoint_store {
        CheckpointStoreConfig::File { path } => Ok(Store::File(FileCheckpointStore::open(
            path.clone(),
            scope,
            NameCase::Lower,
        )?)),
        CheckpointStoreConfig::AzureBlob {
            storage,
            container,
            blob_name_case,
        } => {
            let container = BlobContainer::connect(storage, container)
                .map_err(|e| SetupError::Storage(e.to_string()))?;
            // Convenient for new accounts and Azurite; a container SAS may not be allowed to
            // create containers, and then the container must exist already.
            if let Err(error) = container.create_container_if_missing().await {
                tracing::debug!(error = %error, "checkpoint container not created");
            }
            Ok(Store::Blob(BlobCheckpointStore::new(
                container,
                scope,
                *blob_name_case,
            )))
        }
    }
}

pub async fn sink(config: &Config) -> Result<Sink, SetupError> {
    match &config.sink.kind {
        SinkKind::Stdout => Ok(Sink::Stdout(Default::default())),
        SinkKind::AvroFile {
            path,
            path_format,
            codec,
            file_mode,
        } => Ok(Sink::AvroFile(Arc::new(FileSinkSettings {
            root: path.clone(),
            path_format: Arc::new(PathFormat::parse(path_format).map_err(|e| {
                SetupError::PathFormat {
                    reason: e.to_string(),
                }
            })?),
            codec: *codec,
            file_mode: *file_mode,
        }))),
        SinkKind::AvroBlob {
            storage,
            container,
            path_format,
            codec,
            block_size,
        } => {
            if path_format.contains("{LastSequenceNumber}") {
                return Err(SetupError::PathFormat {
                    reason: "{LastSequenceNumber} is not available with avro_blob: a blob is named when its window opens".into(),
                });
            }
            let container = BlobContainer::connect(storage, container)
                .map_err(|e| SetupError::Storage(e.to_string()))?;
            if let Err(error) = container.create_container_if_missing().await {
                tracing::debug!(error = %error, "sink container not created");
            }
            Ok(Sink::AvroBlob(Arc::new(BlobSinkSettings {
                container,
                path_format: Arc::new(PathFormat::parse(path_format).map_err(|e| {
                    SetupError::PathFormat {
                        reason: e.to_string(),
                    }
                })?),
                codec: *codec,
                block_size: usize::try_from(*block_size).unwrap_or(usize::MAX),
            })))
        }
    }
}

pub fn supervisor_settings(config: &Config) -> SupervisorSettings {
    let lb = &config.load_balancing;
    SupervisorSettings {
        owner_id: lb
            .owner_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        strategy: match lb.strategy {
            config::Strategy::Balanced => Strategy::Balanced,
            config::Strategy::Greedy => Strategy::Greedy,
        },
        update_interval: lb.update_interval,
        ownership_expiration: lb.ownership_expiration,
        start_position: start_position(&config.eventhub.start_position),
        window: WindowSettings {
            max_age: config.sink.window.max_age,
            max_bytes: config.sink.window.max_bytes,
            skip_empty: config.sink.window.skip_empty,
        },
        partition: PartitionSettings {
            receiver: ReceiverOptions {
                prefetch: config.eventhub.prefetch,
                prefetch_bytes: config.eventhub.prefetch_bytes,
                owner_level: Some(config.eventhub.owner_level),
                track_last_enqueued: false,
            },
            batch_size: RECEIVE_BATCH,
            retry_min_backoff: config.eventhub.retry_min_backoff,
            retry_max_backoff: config.eventhub.retry_max_backoff,
            stuck_timeout: config.eventhub.stuck_partition_timeout,
        },
        drain_timeout: config.shutdown.drain_timeout,
        names: Arc::new(WindowNames {
            namespace: namespace_name(config),
            event_hub: config.eventhub.name.clone(),
            consumer_group: config.eventhub.consumer_group.clone(),
        }),
    }
}

/// `{Namespace}` in path formats: the namespace's short name, as Capture uses it
/// (`mynamespace` of `mynamespace.servicebus.windows.net`).
fn namespace_name(config: &Config) -> String {
    let fqns = fully_qualified_namespace(config).unwrap_or_default();
    let host = fqns.split(':').next().unwrap_or_default();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_owned();
    }
    host.split('.').next().unwrap_or(host).to_owned()
}

/// Runs the daemon until `shutdown` is cancelled and the drain completes, or a fatal error.
/// The HTTP endpoint starts first and stops last, so probes and scrapes see the drain.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = Arc::new(EventHubClient::new(client_settings(&config)?)?);
    let store = Arc::new(open_store(&config).await?);
    let metrics = Metrics::new(&config.eventhub.name, &config.eventhub.consumer_group);
    // A dependency is "reachable" if it answered within three balancing cycles.
    let health = Arc::new(Health::new(config.load_balancing.update_interval * 3));
    let http_stop = CancellationToken::new();
    let http = match config.http.listen {
        Some(listen) => Some(
            crate::http::start(
                listen,
                metrics.clone(),
                Arc::clone(&health),
                http_stop.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("[http] listen {listen}: {e}"))?,
        ),
        None => None,
    };
    let supervisor = Supervisor {
        client: Arc::clone(&client),
        store,
        sink: sink(&config).await?,
        settings: supervisor_settings(&config),
        metrics,
        health,
    };
    let watchdog = crate::systemd::watchdog_interval().map(|interval| {
        // The pings come from a task on this runtime: if the runtime stalls, they stop.
        tokio::spawn(crate::systemd::run_watchdog(
            interval,
            || true,
            http_stop.clone(),
        ))
    });
    crate::systemd::notify_ready();
    let stopping = shutdown.clone();
    let result = tokio::select! {
        result = supervisor.run(shutdown) => result,
        // Tell systemd the drain has begun, then keep running the supervisor to its end.
        () = async move {
            stopping.cancelled().await;
            crate::systemd::notify_stopping();
            std::future::pending::<()>().await
        } => unreachable!("the pending future never completes"),
    };
    // Give the AMQP close a moment; a peer that does not answer must not hold up the exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
    http_stop.cancel();
    if let Some(http) = http {
        http.stopped().await;
    }
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    result.map_err(Into::into)
}

/// Events read from input before a send: enough to fill several batches, little memory.
const SEND_CHUNK: usize = 4096;

/// `hubcap send`: publishes each line of `input` as one event, in batches as large as the
/// service accepts; returns (events, batches). Each batch is confirmed before the next.
pub async fn send_lines(
    config: &Config,
    target: &crate::eventhubs::SendTarget,
    input: impl std::io::BufRead,
) -> anyhow::Result<(u64, usize)> {
    let client = EventHubClient::new(client_settings(config)?)?;
    let mut sender = client.open_sender(target).await?;
    let mut chunk = Vec::with_capacity(SEND_CHUNK);
    let (mut events, mut batches) = (0u64, 0usize);
    for line in input.lines() {
        chunk.push(crate::eventhubs::OutgoingEvent {
            body: line?.into_bytes(),
            properties: Vec::new(),
        });
        if chunk.len() == SEND_CHUNK {
            batches += sender.send(&chunk).await?;
            events += chunk.len() as u64;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        batches += sender.send(&chunk).await?;
        events += chunk.len() as u64;
    }
    sender.close().await;
    client.close().await;
    Ok((events, batches))
}

//! Builds the daemon from a [`Config`] and runs it until shutdown. Thin wiring: the config
//! already holds parsed, validated domain types, so nothing here parses or validates.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::checkpoint::blob::BlobCheckpointStore;
use crate::checkpoint::file::FileCheckpointStore;
use crate::checkpoint::{NameCase, Store, StoreScope};
use crate::config::{CheckpointStoreConfig, Config, EventHubConnection, SinkKind};
use crate::credential::{token_credential, EntraTokenProvider};
use crate::eventhubs::{
    ClientSettings, ConnectionStringAuth, Credential, EventHubClient, ReceiverOptions, Transport,
};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::partition::PartitionSettings;
use crate::sink::blob::BlobSinkSettings;
use crate::sink::file::FileSinkSettings;
use crate::sink::{Sink, WindowNames};
use crate::storage::BlobContainer;
use crate::supervisor::{Supervisor, SupervisorSettings};

/// Events handed from a receiver to the sink at once.
const RECEIVE_BATCH: usize = 256;

/// What can still stop the daemon while it is built from a validated [`Config`]: what depends
/// on the machine (the process environment of workload and managed identity, the TLS trust
/// store, directories), never the config's own values.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    EventHubs(#[from] crate::eventhubs::EventHubsError),
    #[error("[eventhub] credential: {0}")]
    Credential(#[from] crate::credential::CredentialError),
    #[error("[{section}] {error}")]
    Storage {
        /// `checkpoint_store` or `sink`.
        section: &'static str,
        error: crate::storage::StorageError,
    },
    #[error("checkpoint store: {0}")]
    Store(#[from] crate::checkpoint::StoreError),
}

/// The Event Hubs client settings a config describes.
pub fn client_settings(config: &Config) -> Result<ClientSettings, SetupError> {
    let hub = &config.eventhub;
    let (host, port, tls, credential) = match &hub.connection {
        EventHubConnection::ConnectionString(parsed) => {
            let tls = !parsed.use_development_emulator;
            let port = parsed.port.unwrap_or(if tls { 5671 } else { 5672 });
            let credential = match &parsed.auth {
                ConnectionStringAuth::SharedAccessKey { key_name, key } => {
                    Credential::SharedAccessKey {
                        key_name: key_name.clone(),
                        key: key.clone(),
                        token_lifetime: hub.token_lifetime,
                    }
                }
                ConnectionStringAuth::SharedAccessSignature(token) => {
                    Credential::SharedAccessSignature(token.clone())
                }
            };
            (parsed.host.clone(), port, tls, credential)
        }
        EventHubConnection::Credential {
            fully_qualified_namespace,
            credential,
        } => {
            let provider = EntraTokenProvider(token_credential(credential)?);
            (
                fully_qualified_namespace.host.clone(),
                fully_qualified_namespace.port.unwrap_or(5671),
                true,
                Credential::Provider(Arc::new(provider)),
            )
        }
    };
    // WebSockets go to 443 (`wss`), whatever AMQP port the connection string names; the
    // custom endpoint's port, when it has one, wins over both.
    let port = match hub.transport {
        Transport::Amqp => port,
        Transport::AmqpWebSockets if tls => 443,
        Transport::AmqpWebSockets => 80,
    };
    let custom_endpoint = hub
        .custom_endpoint
        .as_ref()
        .map(|(custom_host, custom_port)| (custom_host.clone(), custom_port.unwrap_or(port)));
    Ok(ClientSettings {
        host,
        port,
        tls,
        transport: hub.transport,
        custom_endpoint,
        proxy: hub.proxy.clone(),
        ca_file: hub.ca_file.clone(),
        event_hub: hub.name.clone(),
        consumer_group: hub.consumer_group.clone(),
        credential,
        connect_timeout: hub.connect_timeout,
    })
}

/// The checkpoint-store records a config reads and writes: its hub and consumer group.
pub fn store_scope(config: &Config) -> StoreScope {
    StoreScope {
        fully_qualified_namespace: config.eventhub.connection.fully_qualified_namespace(),
        event_hub: config.eventhub.name.clone(),
        consumer_group: config.eventhub.consumer_group.clone(),
    }
}

pub async fn open_store(config: &Config) -> Result<Store, SetupError> {
    let scope = store_scope(config);
    match &config.checkpoint_store {
        CheckpointStoreConfig::File { path } => Ok(Store::File(FileCheckpointStore::open(
            path.clone(),
            scope,
            NameCase::Lower,
        )?)),
        CheckpointStoreConfig::AzureBlob {
            storage,
            proxy,
            container,
            blob_name_case,
        } => {
            let container = BlobContainer::connect(storage, container, proxy).map_err(|error| {
                SetupError::Storage {
                    section: "checkpoint_store",
                    error,
                }
            })?;
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
        SinkKind::File {
            path,
            path_format,
            format,
            file_mode,
        } => Ok(Sink::File(Arc::new(FileSinkSettings {
            root: path.clone(),
            path_format: Arc::new(path_format.clone()),
            format: format.clone(),
            file_mode: *file_mode,
        }))),
        SinkKind::Blob {
            storage,
            proxy,
            container,
            path_format,
            format,
            block_size,
        } => {
            let container = BlobContainer::connect(storage, container, proxy).map_err(|error| {
                SetupError::Storage {
                    section: "sink",
                    error,
                }
            })?;
            if let Err(error) = container.create_container_if_missing().await {
                tracing::debug!(error = %error, "sink container not created");
            }
            Ok(Sink::Blob(Arc::new(BlobSinkSettings {
                container,
                path_format: Arc::new(path_format.clone()),
                format: format.clone(),
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
        strategy: lb.strategy,
        update_interval: lb.update_interval,
        ownership_expiration: lb.ownership_expiration,
        start_position: config.eventhub.start_position.clone(),
        window: config.sink.window,
        partition: PartitionSettings {
            receiver: ReceiverOptions {
                prefetch: config.eventhub.prefetch,
                prefetch_bytes: config.eventhub.prefetch_bytes,
                owner_level: Some(config.eventhub.owner_level),
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
    let fqns = config.eventhub.connection.fully_qualified_namespace();
    let host = fqns.split(':').next().unwrap_or_default();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_owned();
    }
    host.split('.').next().unwrap_or(host).to_owned()
}

/// Logged when a shutdown was asked for before the daemon claimed anything.
pub const STOPPED_BEFORE_STARTING: &str =
    "stopped before starting: a signal arrived during start-up; nothing was claimed";

/// Runs the daemon until `shutdown` is cancelled and the drain completes, or a fatal error.
/// The HTTP endpoint starts first and stops last, so probes and scrapes see the drain. A
/// shutdown during set-up (the store, the HTTP listener, the sink: each may wait on the
/// network) ends it there, before anything is claimed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(variable) = config.eventhub.ignored_proxy_variable {
        tracing::info!(
            variable,
            "{variable} is set but not used: transport = \"amqp\" cannot go through an HTTP \
             proxy; set [eventhub] transport = \"amqp_websockets\" to use it"
        );
    }
    let client = Arc::new(EventHubClient::new(client_settings(&config)?)?);
    let metrics = Metrics::new(&config.eventhub.name, &config.eventhub.consumer_group);
    // A dependency is "reachable" if it answered within three balancing cycles.
    let health = Arc::new(Health::new(config.load_balancing.update_interval * 3));
    let http_stop = CancellationToken::new();
    let set_up = async {
        let store = Arc::new(open_store(&config).await?);
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
        let sink = sink(&config).await?;
        anyhow::Ok((store, http, sink))
    };
    let set_up = tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        built = set_up => Some(built?),
    };
    let Some((store, http, sink)) = set_up else {
        tracing::info!("{STOPPED_BEFORE_STARTING}");
        http_stop.cancel();
        return Ok(());
    };
    if shutdown.is_cancelled() {
        tracing::info!("{STOPPED_BEFORE_STARTING}");
        http_stop.cancel();
        if let Some(http) = http {
            http.stopped().await;
        }
        return Ok(());
    }
    let supervisor = Supervisor {
        client: Arc::clone(&client),
        store,
        sink,
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

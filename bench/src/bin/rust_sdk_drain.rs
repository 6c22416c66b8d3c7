//! Drain-benchmark contestant "Rust SDK": the official `azure_messaging_eventhubs` crate
//! receiving and discarding events.
//!
//! One `ConsumerClient` (one connection), one `EventReceiver` per partition opened at the earliest
//! event with the SDK's defaults (prefetch 300, auto credit, auto accept), each partition's
//! `stream_events()` consumed in its own task; every event's body is taken through the SDK's
//! accessor (`event_data().body()`) and dropped. It exits once every partition has delivered
//! `--events-per-partition` events and prints `{"events": N, "body_bytes": B, "elapsed_s": S}`.
//!
//! The SDK speaks amqps only and authenticates with an Entra ID `TokenCredential` (no SAS in
//! 0.15), so it runs against the emulator started with `--tls-cert/--tls-key --accept-jwt`: the
//! credential here hands out an unsigned JWT for Event Hubs (the emulator checks expiry and
//! audience, not signatures), and the test CA is trusted through `SSL_CERT_FILE` (the SDK's
//! fe2o3-amqp 0.14 uses native-tls, i.e. OpenSSL's default verify paths).
//!
//! `SSL_CERT_FILE=ca.pem cargo run --release -p hubcap-bench --features rust-sdk --bin
//!  rust_sdk_drain -- --namespace localhost:5671 --hub bench --partitions 4
//!  --events-per-partition 5000`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, StartLocation, StartPosition,
};
use base64::Engine as _;
use clap::Parser;
use futures_util::StreamExt;

#[derive(Parser, Debug)]
#[command(about = "Drain N events per partition with the official Rust SDK")]
struct Args {
    /// The tokio scheduler (hubcap runs on one thread by default).
    #[arg(long, value_enum, default_value = "current-thread")]
    scheduler: hubcap_bench::Scheduler,
    /// `host:port` of the amqps endpoint (the SDK's fully qualified namespace).
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    hub: String,
    #[arg(long, default_value = "$Default")]
    consumer_group: String,
    /// Partitions "0" .. "N-1" are drained.
    #[arg(long)]
    partitions: u32,
    #[arg(long)]
    events_per_partition: u64,
    /// The SDK's default prefetch.
    #[arg(long, default_value_t = 300)]
    prefetch: u32,
}

/// Hands out an unsigned JWT for Event Hubs, valid for an hour.
#[derive(Debug)]
struct EmulatorJwt;

#[async_trait::async_trait]
impl TokenCredential for EmulatorJwt {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(
                r#"{{"aud":"https://eventhubs.azure.net","exp":{exp}}}"#
            )),
            b64("unsigned")
        );
        let expires_on = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        Ok(AccessToken::new(token, expires_on))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.scheduler.runtime()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let consumer = ConsumerClient::builder()
        .with_consumer_group(args.consumer_group.clone())
        .open(&args.namespace, args.hub.clone(), Arc::new(EmulatorJwt))
        .await?;

    let mut tasks = Vec::new();
    for partition in 0..args.partitions {
        let receiver = consumer
            .open_receiver_on_partition(
                partition.to_string(),
                Some(OpenReceiverOptions {
                    start_position: Some(StartPosition {
                        location: StartLocation::Earliest,
                        ..Default::default()
                    }),
                    prefetch: Some(args.prefetch),
                    ..Default::default()
                }),
            )
            .await?;
        let target = args.events_per_partition;
        tasks.push(tokio::spawn(async move {
            let mut received = 0u64;
            let mut body_bytes = 0u64;
            {
                let mut stream = receiver.stream_events();
                while received < target {
                    let Some(event) = stream.next().await else {
                        anyhow::bail!("partition {partition}: the stream ended after {received}");
                    };
                    let event = event?;
                    body_bytes += event.event_data().body().map_or(0, |b| b.len() as u64);
                    received += 1;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), receiver.close()).await;
            Ok((received, body_bytes))
        }));
    }

    let mut events = 0u64;
    let mut body_bytes = 0u64;
    for task in tasks {
        let (n, bytes) = task.await??;
        events += n;
        body_bytes += bytes;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({ "events": events, "body_bytes": body_bytes, "elapsed_s": elapsed })
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), consumer.close()).await;
    Ok(())
}

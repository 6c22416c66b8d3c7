//! Drain-benchmark contestant "fe2o3 drain", the ceiling: a plain fe2o3-amqp receive loop that
//! discards events.
//!
//! One connection (plain AMQP, or TLS first like the service), a CBS put-token signed with
//! hubcap's SAS signer over hubcap's `$cbs` link, then per partition its own session and a
//! receiver asking for pre-settled transfers (`SenderSettleMode::Settled`, so no disposition per
//! event) with manual credit topped up to `--prefetch` whenever half of it is used (what hubcap's
//! receiver does), each partition in its own task: `recv::<Body<Value>>()`, count, drop. It exits
//! once every partition has delivered `--events-per-partition` events and prints one JSON line,
//! `{"events": N, "body_bytes": B, "elapsed_s": S}`, S measured from before the TCP connect.
//!
//! `cargo run --release -p hubcap-bench --bin fe2o3_drain -- --host 127.0.0.1 --port 5672
//!  --hub bench --partitions 4 --events-per-partition 5000` (key from `BENCH_SAS_KEY`)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::Parser;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Body, Source};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Session};
use hubcap::eventhubs::testing::{sign, CbsLink, SAS_TOKEN_TYPE};
use hubcap::secret::Secret;
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use tokio::net::TcpStream;

const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";

#[derive(Parser, Debug)]
#[command(about = "Drain N events per partition with a plain fe2o3-amqp receive loop")]
struct Args {
    /// The tokio scheduler (hubcap runs on one thread by default).
    #[arg(long, value_enum, default_value = "current-thread")]
    scheduler: hubcap_bench::Scheduler,
    /// Host to connect to; also the AMQP hostname, the TLS server name and the token audience.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    /// TLS first (amqps), trusting --ca-file.
    #[arg(long)]
    tls: bool,
    /// PEM trust root for --tls.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[arg(long)]
    hub: String,
    #[arg(long, default_value = "$Default")]
    consumer_group: String,
    /// Partitions "0" .. "N-1" are drained.
    #[arg(long)]
    partitions: u32,
    #[arg(long)]
    events_per_partition: u64,
    /// Credit kept outstanding per partition (hubcap's default prefetch).
    #[arg(long, default_value_t = 300)]
    prefetch: u32,
    #[arg(long, default_value = "RootManageSharedAccessKey")]
    sas_key_name: String,
    #[arg(long, env = "BENCH_SAS_KEY", hide_env_values = true)]
    sas_key: String,
    /// Diagnostics: block the partition's task this long per event (in 64-event steps), to
    /// imitate a slow sink behind the receive loop.
    #[arg(long, default_value_t = 0)]
    pause_us_per_event: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.scheduler.runtime()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut connection = connect(&args).await?;

    let audience = format!("sb://{}/{}", args.host, args.hub);
    let token = sign(
        &audience,
        &args.sas_key_name,
        &Secret::new(args.sas_key.clone()),
        SystemTime::now(),
        Duration::from_secs(3600),
    );
    let mut cbs = CbsLink::attach(&mut connection).await?;
    cbs.put_token(&audience, &token, SAS_TOKEN_TYPE).await?;

    let mut tasks = Vec::new();
    for partition in 0..args.partitions {
        let window = (args.prefetch * 2).max(64);
        let mut session = Session::builder()
            .incoming_window(window)
            .outgoing_window(window)
            .begin(&mut connection)
            .await
            .context("begin session")?;
        let address = format!(
            "{}/ConsumerGroups/{}/Partitions/{partition}",
            args.hub, args.consumer_group
        );
        let filter = Some(Described {
            descriptor: Descriptor::Name(Symbol::from(SELECTOR_FILTER)),
            value: Value::String("amqp.annotation.x-opt-offset > '-1'".into()),
        });
        let source = Source::builder()
            .address(address)
            .add_to_filter(Symbol::from(SELECTOR_FILTER), filter)
            .build();
        let mut receiver = Receiver::builder()
            .name(format!("fe2o3-drain-{partition}"))
            .source(source)
            .target(format!("fe2o3-drain-receiver-{partition}"))
            .sender_settle_mode(SenderSettleMode::Settled)
            .receiver_settle_mode(ReceiverSettleMode::First)
            .credit_mode(CreditMode::Manual)
            .attach(&mut session)
            .await
            .with_context(|| format!("attach receiver for partition {partition}"))?;
        receiver.set_credit(args.prefetch).await?;
        let target = args.events_per_partition;
        let prefetch = args.prefetch;
        let pause = Duration::from_micros(args.pause_us_per_event * 64);
        tasks.push(tokio::spawn(async move {
            let result = drain(&mut receiver, target, prefetch, pause).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = receiver.close().await;
                let _ = session.end().await;
            })
            .await;
            result
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
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        cbs.close().await;
        let _ = connection.close().await;
    })
    .await;
    Ok(())
}

/// Receives `target` events, discarding them; returns (events, body bytes).
async fn drain(
    receiver: &mut Receiver,
    target: u64,
    prefetch: u32,
    pause: Duration,
) -> anyhow::Result<(u64, u64)> {
    let mut received = 0u64;
    let mut body_bytes = 0u64;
    let mut used_credit = 0u32;
    while received < target {
        let delivery = receiver.recv::<Body<Value>>().await?;
        if let Body::Data(sections) = delivery.body() {
            body_bytes += sections.iter().map(|d| d.0.len() as u64).sum::<u64>();
        }
        drop(delivery);
        received += 1;
        used_credit += 1;
        if !pause.is_zero() && received % 64 == 0 {
            std::thread::sleep(pause);
        }
        if used_credit >= prefetch / 2 {
            used_credit = 0;
            receiver.set_credit(prefetch).await?;
        }
    }
    Ok((received, body_bytes))
}

async fn connect(args: &Args) -> anyhow::Result<ConnectionHandle<()>> {
    let tcp = TcpStream::connect((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("connect {}:{}", args.host, args.port))?;
    let _ = tcp.set_nodelay(true);
    let builder = Connection::builder()
        .container_id(format!("fe2o3-drain-{}", uuid::Uuid::new_v4()))
        .hostname(args.host.as_str())
        .sasl_profile(SaslProfile::Anonymous)
        .max_frame_size(1024 * 1024)
        .scheme("amqp");
    if !args.tls {
        return Ok(builder.open_with_stream(tcp).await?);
    }
    let Some(ca_file) = &args.ca_file else {
        bail!("--tls needs --ca-file");
    };
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_file).with_context(|| format!("read {}", ca_file.display()))?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(args.host.clone())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .context("TLS handshake")?;
    Ok(builder.open_with_stream(stream).await?)
}

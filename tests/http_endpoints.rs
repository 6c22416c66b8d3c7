//! `/livez`, `/readyz` and `/metrics` served by a real `hubcap::http` server on a loopback port.
//!
//! The promtool test needs `promtool` on PATH (Debian: `apt-get install -y --no-install-recommends
//! prometheus`); set `HUBCAP_SKIP_PROMTOOL=1` to skip it where that cannot be installed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hubcap::health::Health;
use hubcap::http::{self, HttpServer};
use hubcap::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// A server on 127.0.0.1 with its own Metrics and Health, and the token that stops it.
struct Fixture {
    server: HttpServer,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

impl Fixture {
    async fn start() -> Self {
        let metrics = Metrics::new("telemetry", "$Default");
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let shutdown = CancellationToken::new();
        let server = http::start(
            "127.0.0.1:0".parse().expect("valid address"),
            metrics.clone(),
            Arc::clone(&health),
            shutdown.clone(),
        )
        .await
        .expect("bind 127.0.0.1:0");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Self {
            server,
            metrics,
            health,
            shutdown,
            client,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let url = format!("http://{}{path}", self.server.local_addr);
        self.client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {url}: {error}"))
    }

    /// `/readyz` as (status, parsed JSON body).
    async fn readyz(&self) -> (u16, serde_json::Value) {
        let response = self.get("/readyz").await;
        let status = response.status().as_u16();
        let body = response.text().await.expect("readyz body");
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("readyz body is not JSON ({error}): {body}"));
        (status, json)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server.stopped())
            .await
            .expect("http server stops within 10 s of shutdown");
    }
}

fn reasons(readiness: &serde_json::Value) -> Vec<String> {
    readiness["reasons"]
        .as_array()
        .expect("reasons is an array")
        .iter()
        .map(|reason| reason.as_str().expect("reason is a string").to_owned())
        .collect()
}

#[tokio::test]
async fn livez_answers_ok_while_the_runtime_is_responsive() {
    let fixture = Fixture::start().await;
    let response = fixture.get("/livez").await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.expect("livez body"), "ok");
    fixture.stop().await;
}

#[tokio::test]
async fn readyz_follows_dependencies_and_drain() {
    let fixture = Fixture::start().await;

    let (status, readiness) = fixture.readyz().await;
    assert_eq!(status, 503, "{readiness}");
    assert_eq!(readiness["ready"], false);
    assert_eq!(readiness["draining"], false);
    assert_eq!(
        reasons(&readiness),
        [
            "event hubs not reached recently",
            "checkpoint store not reached recently"
        ]
    );

    fixture.health.eventhubs_reachable();
    let (status, readiness) = fixture.readyz().await;
    assert_eq!(status, 503, "{readiness}");
    assert_eq!(
        reasons(&readiness),
        ["checkpoint store not reached recently"]
    );

    fixture.health.store_reachable();
    let (status, readiness) = fixture.readyz().await;
    assert_eq!(status, 200, "{readiness}");
    assert_eq!(readiness["ready"], true);
    assert!(reasons(&readiness).is_empty());

    fixture.health.set_draining();
    let (status, readiness) = fixture.readyz().await;
    assert_eq!(status, 503, "{readiness}");
    assert_eq!(readiness["draining"], true);
    assert_eq!(reasons(&readiness), ["draining"]);

    fixture.stop().await;
}

#[tokio::test]
async fn readyz_shows_each_partition() {
    let fixture = Fixture::start().await;
    fixture.health.eventhubs_reachable();
    fixture.health.store_reachable();
    fixture.health.partition("0", |partition| {
        partition.receiving = true;
        partition.last_committed_sequence_number = Some(41);
        partition.lag_events = Some(7);
    });
    fixture.health.partition("1", |partition| {
        partition.sink_failing = true;
        partition.last_error = Some("disk full".to_owned());
    });

    let (status, readiness) = fixture.readyz().await;
    assert_eq!(
        status, 503,
        "a failing sink makes the instance unready: {readiness}"
    );
    assert_eq!(reasons(&readiness), ["partition 1: sink failing"]);
    assert_eq!(
        readiness["partitions"]["0"],
        serde_json::json!({
            "receiving": true,
            "last_committed_sequence_number": 41,
            "lag_events": 7,
            "sink_failing": false,
            "checkpoint_failing": false,
            "last_error": null,
        })
    );
    assert_eq!(readiness["partitions"]["1"]["sink_failing"], true);
    assert_eq!(readiness["partitions"]["1"]["last_error"], "disk full");

    fixture.health.remove_partition("1");
    let (status, readiness) = fixture.readyz().await;
    assert_eq!(status, 200, "{readiness}");
    assert!(readiness["partitions"].get("1").is_none(), "{readiness}");

    fixture.stop().await;
}

#[tokio::test]
async fn metrics_serves_the_prometheus_text_format() {
    let fixture = Fixture::start().await;
    fixture.metrics.partition("0").received(3, 300);

    let response = fixture.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .expect("content type")
        .to_str()
        .expect("ascii content type")
        .to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let body = response.text().await.expect("metrics body");
    assert!(body.contains("hubcap_build_info"), "{body}");
    assert!(
        body.contains(
            r#"hubcap_events_received_total{consumer_group="$Default",eventhub="telemetry",partition="0"} 3"#
        ),
        "{body}"
    );

    fixture.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let fixture = Fixture::start().await;
    for path in ["/", "/health", "/metrics/extra", "/livez/"] {
        let response = fixture.get(path).await;
        assert_eq!(response.status().as_u16(), 404, "GET {path}");
    }
    fixture.stop().await;
}

#[tokio::test]
async fn shutdown_token_stops_the_server() {
    let fixture = Fixture::start().await;
    let address = fixture.server.local_addr;
    // An open keep-alive connection must not hold the server up.
    assert_eq!(fixture.get("/livez").await.status().as_u16(), 200);

    let client = fixture.client.clone();
    fixture.stop().await;

    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await;
    assert!(
        matches!(connect, Ok(Err(_))),
        "connecting to {address} after shutdown should be refused, got {connect:?}"
    );
    let request = client.get(format!("http://{address}/livez")).send().await;
    assert!(
        request.is_err(),
        "request after shutdown succeeded: {request:?}"
    );
}

/// Records a value in every metric family, so promtool sees each one with samples.
fn record_every_metric(metrics: &Metrics) {
    let partition = metrics.partition("0");
    partition.received(10, 1_000);
    partition.committed(10, 2_048, Duration::from_millis(12));
    partition.checkpointed(9);
    partition.lag(5, 1.5);
    partition.checkpoint_error("unavailable");
    partition.sink_error("io");
    partition.reconnect("server_busy");
    partition.expired(3);
    partition.position_fallback();
    partition.receiver_recycled();
    metrics.set_owned_partitions(1);
    metrics.ownership_change("claimed");
}

#[tokio::test]
async fn promtool_accepts_the_metrics_exposition() {
    if std::env::var("HUBCAP_SKIP_PROMTOOL").as_deref() == Ok("1") {
        eprintln!("skipped: HUBCAP_SKIP_PROMTOOL=1");
        return;
    }
    let fixture = Fixture::start().await;
    record_every_metric(&fixture.metrics);
    let body = fixture
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics body");
    fixture.stop().await;

    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH; install it with \
             `apt-get update && apt-get install -y --no-install-recommends prometheus` (Debian/Ubuntu), \
             or set HUBCAP_SKIP_PROMTOOL=1 to skip this test"
        ),
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(body.as_bytes())
        .expect("write the exposition to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let complaints: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains("hubcap_") || line.to_lowercase().contains("metric"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "promtool check metrics failed ({}):\n{printed}\nexposition:\n{body}",
        output.status
    );
}

#[tokio::test]
async fn a_stalled_client_delays_shutdown_by_at_most_the_grace_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fixture = Fixture::start().await;
    let address = fixture.server.local_addr;
    let mut stalled = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // One whole request answered first: the server has accepted and is serving the connection.
    stalled
        .write_all(b"GET /livez HTTP/1.1\r\nHost: hubcap\r\n\r\n")
        .await
        .expect("send a request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stalled.read(&mut chunk).await.expect("read the answer");
            assert!(n > 0, "the server closed the connection");
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the first answer within 5 s");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Then headers never finished: hyper's graceful shutdown would wait for this request
    // forever.
    stalled
        .write_all(b"GET /livez HTTP/1.1\r\nHost: hubcap\r\n")
        .await
        .expect("send half a request");

    let started = std::time::Instant::now();
    fixture.stop().await;
    let took = started.elapsed();
    assert!(
        took < http::SHUTDOWN_GRACE + Duration::from_secs(3),
        "stopping took {took:?}"
    );
    let connect = tokio::net::TcpStream::connect(address).await;
    assert!(connect.is_err(), "listener still open after shutdown");
    drop(stalled);
}

//! The operations endpoints every instance serves: `/livez`, `/readyz` and `/metrics`.
//!
//! - `GET /livez`: `200 ok` while the process and its tokio runtime are responsive. The handler
//!   running at all proves the runtime still schedules tasks; a heartbeat task that stamps the
//!   time every second catches a runtime whose workers are blocked (a stale stamp answers 503).
//! - `GET /readyz`: the [`Readiness`](crate::health::Readiness) JSON, 200 when ready, 503 when not
//!   (including while draining, so a load balancer or Kubernetes stops routing to us).
//! - `GET /metrics`: the Prometheus text exposition of [`Metrics`].
//! - Any other path is 404. The handlers see only `Metrics` and `Health`, so no configuration
//!   value, and therefore no secret, can reach a response.
//!
//! # Shutdown order
//!
//! The delivery contract says "stop HTTP last": during a drain `/readyz` must keep answering
//! 503 `draining` and `/metrics` must stay scrapeable so the final commits and checkpoints are
//! observable. So the `shutdown` token given to [`start`] is not the daemon's shutdown token:
//! it is a separate token that the runtime cancels only after the drain has finished (or timed
//! out). Cancelling it stops accepting connections, lets requests in flight finish (for at most
//! [`SHUTDOWN_GRACE`]), and ends the heartbeat task; [`HttpServer::stopped`] waits for both tasks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::Metrics;

/// How often the heartbeat task stamps the time.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// A heartbeat older than this means the runtime has stopped scheduling tasks.
pub const HEARTBEAT_STALE_AFTER: Duration = Duration::from_secs(10);

/// After `shutdown` is cancelled, how long requests in flight may take before the server task
/// ends regardless (a client that never finishes its request must not hold up process exit).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text exposition format 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    /// The address actually bound (the port is the OS's choice when `listen` asked for port 0).
    pub local_addr: SocketAddr,
    /// Serves requests until `shutdown` is cancelled.
    server: JoinHandle<std::io::Result<()>>,
    /// Stamps [`Heartbeat`] every second until `shutdown` is cancelled.
    heartbeat: JoinHandle<()>,
}

/// Binds `listen` and serves the endpoints on tracked tasks until `shutdown` is cancelled.
///
/// `shutdown` must be the token the runtime cancels after the drain, not the daemon's shutdown
/// token (see the module documentation).
pub async fn start(
    listen: SocketAddr,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<HttpServer> {
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;

    let heartbeat = Arc::new(Heartbeat::new());
    let heartbeat_task = tokio::spawn(run_heartbeat(Arc::clone(&heartbeat), shutdown.clone()));

    let app = router(AppState {
        metrics,
        health,
        heartbeat,
    });
    let server = tokio::spawn(serve(listener, app, shutdown));
    tracing::info!(address = %local_addr, "http server listening");
    Ok(HttpServer {
        local_addr,
        server,
        heartbeat: heartbeat_task,
    })
}

impl HttpServer {
    /// Waits until the server and its heartbeat task have ended (after `shutdown` is cancelled).
    pub async fn stopped(self) {
        match self.server.await {
            Ok(Ok(())) => tracing::info!(address = %self.local_addr, "http server stopped"),
            Ok(Err(error)) => {
                tracing::error!(address = %self.local_addr, error = %error, "http server failed")
            }
            Err(error) => {
                tracing::error!(address = %self.local_addr, error = %error, "http server task panicked")
            }
        }
        if let Err(error) = self.heartbeat.await {
            tracing::error!(error = %error, "http heartbeat task panicked");
        }
    }
}

async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace_expired = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = graceful => result,
        () = grace_expired => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "http requests still in flight at shutdown, stopping anyway");
            Ok(())
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    /// Rendered by `/metrics`.
    metrics: Metrics,
    /// Read by `/readyz`.
    health: Arc<Health>,
    /// Read by `/livez`.
    heartbeat: Arc<Heartbeat>,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The last time the heartbeat task ran, as milliseconds since `started`.
///
/// An atomic rather than a lock: the writer and the reader each touch one word, and `/livez`
/// must not be able to block on anything the runtime could be stuck behind.
#[derive(Debug)]
struct Heartbeat {
    /// The reference point of `last_beat_ms` (monotonic, unaffected by wall-clock jumps).
    started: Instant,
    /// Milliseconds from `started` to the latest beat.
    last_beat_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
        }
    }

    fn beat(&self) {
        self.last_beat_ms
            .store(self.millis_at(Instant::now()), Ordering::Relaxed);
    }

    /// How long before `now` the latest beat was.
    fn age(&self, now: Instant) -> Duration {
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.millis_at(now).saturating_sub(last))
    }

    fn millis_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }
}

async fn run_heartbeat(heartbeat: Arc<Heartbeat>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(HEARTBEAT_INTERVAL);
    // After a stall, beat once and carry on: a burst of catch-up beats would hide nothing but
    // serves no purpose either.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => heartbeat.beat(),
        }
    }
}

async fn livez(State(state): State<AppState>) -> Response {
    let age = state.heartbeat.age(Instant::now());
    if age > HEARTBEAT_STALE_AFTER {
        tracing::warn!(heartbeat_age = ?age, "liveness check failed: runtime heartbeat is stale");
        let body = format!(
            "runtime heartbeat is stale: last beat {:.1} s ago\n",
            age.as_secs_f64()
        );
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_age_is_measured_from_the_latest_beat() {
        let heartbeat = Heartbeat::new();
        heartbeat.beat();
        let later = Instant::now() + Duration::from_secs(11);
        assert!(heartbeat.age(later) > HEARTBEAT_STALE_AFTER);
        assert!(heartbeat.age(Instant::now()) < HEARTBEAT_STALE_AFTER);
    }

    #[tokio::test]
    async fn livez_answers_503_when_the_heartbeat_is_stale() {
        let state = AppState {
            metrics: Metrics::new("hub", "$Default"),
            health: Arc::new(Health::new(Duration::from_secs(60))),
            heartbeat: Arc::new(Heartbeat {
                // Beat 0 ms after a start 30 s ago: the latest beat is 30 s old.
                started: Instant::now() - Duration::from_secs(30),
                last_beat_ms: AtomicU64::new(0),
            }),
        };
        let response = livez(State(state.clone())).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

        state.heartbeat.beat();
        let response = livez(State(state)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

//! The admin HTTP endpoint: fault injection and preloading for tests and benchmarks.
//!
//! | route | body | effect |
//! |---|---|---|
//! | `POST /faults/drop-connections` | — | every open connection fails abruptly |
//! | `POST /faults/refuse-connections` | `{"seconds": 5}` | new connections are closed at once |
//! | `POST /faults/detach` | `{"hub", "partition"?, "consumer_group"?, "condition", "description"?}` | consumers detached with that error |
//! | `POST /preload` | `{"hub", "partitions"?, "events_per_partition", "size"}` | events appended without AMQP |
//! | `GET /hubs/{hub}/partitions/{id}` | — | partition properties as JSON |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::faults::LinkFault;
use crate::server::{self, Shared};

type Reply = Result<Json<Value>, (StatusCode, String)>;

pub async fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/faults/drop-connections", post(drop_connections))
        .route("/faults/refuse-connections", post(refuse_connections))
        .route("/faults/detach", post(detach))
        .route("/preload", post(preload))
        .route("/hubs/{hub}/partitions/{id}", get(partition_properties))
        .with_state(shared);
    tasks.spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(local)
}

async fn drop_connections(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "dropped": server::drop_connections(&shared) }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refuse {
    seconds: f64,
}

async fn refuse_connections(State(shared): State<Arc<Shared>>, Json(body): Json<Refuse>) -> Reply {
    let duration = Duration::try_from_secs_f64(body.seconds)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("seconds: {e}")))?;
    shared.connection_faults.refuse_for(duration);
    Ok(Json(json!({ "refusing_seconds": body.seconds })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Detach {
    hub: String,
    partition: Option<String>,
    consumer_group: Option<String>,
    condition: String,
    description: Option<String>,
}

async fn detach(State(shared): State<Arc<Shared>>, Json(body): Json<Detach>) -> Json<Value> {
    let description = body
        .description
        .unwrap_or_else(|| format!("detached by fault injection ({})", body.condition));
    let fault = LinkFault::new(body.condition, description);
    let detached = server::detach_receivers(
        &shared,
        &body.hub,
        body.partition.as_deref(),
        body.consumer_group.as_deref(),
        &fault,
    );
    Json(json!({ "detached": detached }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Preload {
    hub: String,
    partitions: Option<Vec<String>>,
    events_per_partition: u64,
    size: usize,
}

async fn preload(State(shared): State<Arc<Shared>>, Json(body): Json<Preload>) -> Reply {
    let not_found = |what: String| (StatusCode::NOT_FOUND, what);
    let hub = shared
        .namespace
        .hub(&body.hub)
        .ok_or_else(|| not_found(format!("no hub '{}'", body.hub)))?;
    let partitions = match &body.partitions {
        None => hub.partitions.clone(),
        Some(ids) => ids
            .iter()
            .map(|id| {
                hub.partition(id)
                    .cloned()
                    .ok_or_else(|| not_found(format!("no partition '{id}'")))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let count = body.events_per_partition;
    let size = body.size;
    let total = partitions.len() as u64 * count;
    // Stamping a million events takes seconds of CPU: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        partitions
            .iter()
            .try_for_each(|partition| partition.preload(count, size))
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "events": total })))
}

async fn partition_properties(
    State(shared): State<Arc<Shared>>,
    Path((hub, id)): Path<(String, String)>,
) -> Reply {
    let partition = shared
        .namespace
        .hub(&hub)
        .and_then(|hub| hub.partition(&id))
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no partition {hub}/{id}")))?;
    let props = partition.properties();
    Ok(Json(json!({
        "begin_sequence_number": props.begin_sequence_number,
        "last_enqueued_sequence_number": props.last_enqueued_sequence_number,
        "last_enqueued_offset": props.last_enqueued_offset,
        "last_enqueued_time_utc_ms": props.last_enqueued_time_ms,
        "is_empty": props.is_empty,
    })))
}

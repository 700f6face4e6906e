//! HTTP routes of the main listener that belong to signaling.

use crate::Gateway;
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;

/// The client's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// `/v1/ws`, `/healthz` and `/readyz`.
pub fn routes(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/ws", get(ws))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(gw)
}

async fn ws(
    State(gw): State<Arc<Gateway>>,
    peer: Option<axum::Extension<PeerAddr>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    if gw.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let ip = peer
        .map(|p| p.0.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let max = gw.config.max_frame_bytes;
    let tasks = gw.tasks.clone();
    let region = crate::calls::regions::hint_from_query(query.as_deref());
    upgrade
        .read_buffer_size(gw.config.read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| tasks.track_future(crate::serve_socket(gw, socket, ip, region)))
}

async fn ready(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if let Err(e) = gw.store.health().await {
        tracing::warn!(error = %e, "readiness check failed");
        return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response();
    }
    if let Some(c) = &gw.cluster
        && !c.ping().await
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable\n").into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

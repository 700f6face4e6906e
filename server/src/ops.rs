//! The admin listener of roles that have no other (`palaver media`, `palaver turn`,
//! `palaver transcoder` on the Redis queue): `/metrics`, `/healthz`, and
//! a `/readyz` that asks the role's dependencies.

use crate::config::{Config, Secrets};
use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A readiness probe: `Err(what)` names the dependency that failed.
pub type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// `/readyz`: 200 `ready`, or 503 naming what is down (details logged).
pub fn readyz(probe: Probe) -> Router {
    Router::new().route(
        "/readyz",
        axum::routing::get(move || {
            let probe = probe.clone();
            async move { answer(probe().await) }
        }),
    )
}

fn answer(r: Result<(), String>) -> Response {
    match r {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(what) => {
            tracing::warn!(dependency = %what, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what} unavailable\n"),
            )
                .into_response()
        }
    }
}

/// Binds `admin.listen` and serves the admin routes plus `/readyz`.
pub async fn admin_listener(
    cfg: &Config,
    secrets: &Secrets,
    registry: Registry,
    probe: Probe,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen = {}", cfg.admin.listen))?;
    let addr = listener.local_addr()?;
    let app = crate::admin::routes(crate::admin::AdminState {
        registry: Arc::new(registry),
        verifier: None,
        token: secrets.admin_token.clone(),
        turn: None,
        store: None,
        sfu: None,
    })
    .merge(readyz(probe));
    let opts = crate::http::HttpOptions {
        header_timeout: cfg.server.header_timeout,
        max_connections: 256,
        shutdown_timeout: cfg.server.shutdown_timeout,
    };
    crate::run::announce("admin", addr);
    tracing::info!(admin_addr = %addr, "admin listener");
    Ok(tokio::spawn(crate::http::serve(listener, app, opts, stop)))
}

/// Readiness of `palaver turn`: its sockets are bound (and its TLS
/// certificate loaded, when `turn.tls` is set: both happen before
/// `running` is set) and its server loop has not stopped.
pub fn turn_probe(running: Arc<std::sync::atomic::AtomicBool>) -> Probe {
    Arc::new(move || {
        let up = running.load(std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move { if up { Ok(()) } else { Err("turn".to_owned()) } })
    })
}

//! The admin listener: Prometheus metrics, health, and development helpers.
//! Loopback by default; when a token is configured every route needs
//! `Authorization: Bearer <token>`.

use crate::config::Secret;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use palaver_messaging::policy::Phone;
use palaver_signaling::Verifier;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub verifier: Option<Arc<dyn Verifier>>,
    pub token: Option<Secret>,
    pub turn: Option<palaver_turn::StatsHandle>,
    /// The messaging store, for the reports list (signaling roles only).
    pub store: Option<Arc<dyn palaver_messaging::Store>>,
    pub sfu: Option<Arc<palaver_sfu::Sfu>>,
}

pub fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/dev/codes/{phone}", get(dev_code))
        .route("/reports", get(reports))
        .route("/sfu/participants", get(sfu_participants))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !palaver_messaging::policy::hashes_equal(given.as_bytes(), token.expose().as_bytes()) {
            return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
        }
    }
    next.run(req).await
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode_registry(&mut text, &state.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if let Some(turn) = &state.turn {
        text.push_str(&openmetrics_counters(&turn.get().to_prometheus()));
    }
    if let Some(sfu) = &state.sfu {
        text.push_str(&sfu.stats().await.to_openmetrics());
    }
    text.push_str(&process_metrics());
    text.push_str("# EOF\n");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// OpenMetrics names a counter family without its `_total` suffix (the
/// samples keep it); Prometheus text format does not. Convert the TYPE lines.
fn openmetrics_counters(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_suffix("_total counter") {
            Some(name) if l.starts_with("# TYPE ") => format!("{name} counter\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// Resident memory and open file descriptors of this process.
fn process_metrics() -> String {
    let page = 4096u64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page)
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    format!(
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n\
         # TYPE process_open_fds gauge\nprocess_open_fds {fds}\n"
    )
}

#[derive(serde::Deserialize)]
struct ReportsQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

/// Reports filed by users, newest first, as JSON.
async fn reports(
    State(state): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<ReportsQuery>,
) -> Response {
    let Some(store) = state.store else {
        return (StatusCode::NOT_FOUND, "no messaging store in this role\n").into_response();
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match store.reports(q.before.unwrap_or(u64::MAX), limit).await {
        Ok(list) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&list).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list reports");
            (StatusCode::INTERNAL_SERVER_ERROR, "store error\n").into_response()
        }
    }
}

async fn dev_code(State(state): State<AdminState>, Path(phone): Path<String>) -> Response {
    let Some(verifier) = state.verifier else {
        return (
            StatusCode::NOT_FOUND,
            "only the development verifier shows codes\n",
        )
            .into_response();
    };
    let Ok(phone) = Phone::parse(&phone) else {
        return (StatusCode::BAD_REQUEST, "invalid phone number\n").into_response();
    };
    match verifier.last_code(&phone) {
        Some(code) => (StatusCode::OK, code).into_response(),
        None => (StatusCode::NOT_FOUND, "no code sent to this number\n").into_response(),
    }
}

/// Per-participant statistics of the SFU in this process (docs/sfu.md).
async fn sfu_participants(State(state): State<AdminState>) -> Response {
    let Some(sfu) = state.sfu else {
        return (StatusCode::NOT_FOUND, "no SFU in this role\n").into_response();
    };
    let list = sfu.participants().await;
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&list).unwrap_or_default(),
    )
        .into_response()
}

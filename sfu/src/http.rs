//! `POST /v1/rooms/{room}/join`: a bearer join token and an SDP offer in,
//! the SDP answer out. `POST /v1/rooms/{room}/restart`: the same with the
//! session token of `welcome`, for an ICE restart. Errors are JSON `{"error": code, "message": text}`;
//! the codes are in docs/sfu.md.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::restart::RestartError;
use crate::server::{JoinFailure, Sfu};
use crate::worker::JoinError;

/// Largest SDP offer accepted.
const MAX_OFFER: usize = 64 * 1024;

/// The SFU's HTTP routes.
pub fn routes(sfu: Arc<Sfu>) -> Router {
    Router::new()
        .route("/v1/rooms/{room}/join", post(join).options(preflight))
        .route("/v1/rooms/{room}/restart", post(restart).options(preflight))
        .layer(DefaultBodyLimit::max(MAX_OFFER))
        .with_state(sfu)
}

async fn join(
    State(sfu): State<Arc<Sfu>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <join token>",
        );
    };
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "bad_sdp", "the offer is not UTF-8");
    };
    match sfu.join(&room, token, offer).await {
        Ok(answer) => with_cors(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/sdp")],
                answer,
            )
                .into_response(),
        ),
        Err(e) => failure(&e),
    }
}

async fn restart(
    State(sfu): State<Arc<Sfu>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <session token>",
        );
    };
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "bad_sdp", "the offer is not UTF-8");
    };
    match sfu.restart(&room, token, offer).await {
        Some(Ok(answer)) => with_cors(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/sdp")],
                answer,
            )
                .into_response(),
        ),
        Some(Err(e @ RestartError::NoSession)) => {
            error(StatusCode::NOT_FOUND, "no_session", &e.to_string())
        }
        Some(Err(e @ RestartError::BadOffer(_))) => {
            error(StatusCode::BAD_REQUEST, "bad_sdp", &e.to_string())
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the SFU is shutting down",
        ),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn failure(e: &JoinFailure) -> Response {
    let (status, code) = match e {
        JoinFailure::Token(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        JoinFailure::WrongRoom => (StatusCode::FORBIDDEN, "wrong_room"),
        JoinFailure::Join(JoinError::RoomFull { .. }) => (StatusCode::CONFLICT, "room_full"),
        JoinFailure::Join(JoinError::BadOffer(_)) => (StatusCode::BAD_REQUEST, "bad_sdp"),
        JoinFailure::Join(JoinError::Kicked) => (StatusCode::FORBIDDEN, "kicked"),
        JoinFailure::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    error(status, code, &e.to_string())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message });
    with_cors((status, axum::Json(body)).into_response())
}

/// Browsers on another origin may call the endpoint: the token travels in
/// a header, not a cookie, so any origin is fine.
async fn preflight() -> Response {
    let mut r = with_cors(StatusCode::NO_CONTENT.into_response());
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    r
}

fn with_cors(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

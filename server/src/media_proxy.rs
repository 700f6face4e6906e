//! Forwards `/v1/media/...` and `/v1/uploads...` from the main listener to
//! the media listener of the same process, so that the web client (served
//! at `/` on the main listener) reaches the media store from its own origin:
//! the media listener sends no CORS headers. Bodies stream both ways; one
//! upstream connection per request.
//!
//! The media store would see the proxy's loopback address; so the proxy
//! passes the client's address in a header together with a secret made for
//! this process, and the media store counts failed logins per client.
//! Headers of those names that a client sends are dropped.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// The proxy routes, forwarding to the media listener at `upstream`.
pub fn routes(upstream: SocketAddr, secret: String) -> axum::Router {
    let secret: std::sync::Arc<str> = secret.into();
    let forward = move |req: Request| {
        let secret = secret.clone();
        async move { forward(upstream, &secret, req).await }
    };
    axum::Router::new()
        .route("/v1/media", axum::routing::any(forward.clone()))
        .route("/v1/media/{*rest}", axum::routing::any(forward.clone()))
        .route("/v1/uploads", axum::routing::any(forward.clone()))
        .route("/v1/uploads/{*rest}", axum::routing::any(forward.clone()))
}

/// Replaces whatever the client sent in the trusted headers with its real
/// address and this process's secret.
fn vouch_for_client(parts: &mut axum::http::request::Parts, secret: &str) {
    use palaver_media_store::http::{CLIENT_ADDR_HEADER, PROXY_SECRET_HEADER};
    parts.headers.remove(CLIENT_ADDR_HEADER);
    parts.headers.remove(PROXY_SECRET_HEADER);
    let Some(peer) = parts
        .extensions
        .get::<palaver_signaling::http::PeerAddr>()
        .map(|p| p.0.ip())
    else {
        return;
    };
    if let (Ok(addr), Ok(secret)) = (peer.to_string().parse(), secret.parse()) {
        parts.headers.insert(CLIENT_ADDR_HEADER, addr);
        parts.headers.insert(PROXY_SECRET_HEADER, secret);
    }
}

/// Hop-by-hop headers, which a proxy does not pass on.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut axum::http::HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| hop_by_hop(n)).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

async fn forward(upstream: SocketAddr, secret: &str, req: Request) -> Response {
    match try_forward(upstream, secret, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = %e, "media proxy: the media listener did not answer");
            (StatusCode::BAD_GATEWAY, "the media store is unavailable\n").into_response()
        }
    }
}

async fn try_forward(
    upstream: SocketAddr,
    secret: &str,
    req: Request,
) -> Result<Response, ProxyError> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    vouch_for_client(&mut parts, secret);
    parts.headers.insert(
        header::HOST,
        upstream
            .to_string()
            .parse()
            .expect("an address is a valid host"),
    );
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = path.parse().map_err(|_| ProxyError::Uri)?;
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "media proxy connection ended with an error");
        }
    });
    let resp = sender
        .send_request(axum::http::Request::from_parts(parts, body))
        .await?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("cannot connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("bad request target")]
    Uri,
}

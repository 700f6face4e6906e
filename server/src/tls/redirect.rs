//! The plain HTTP listener of `tls.redirect_listen`: every request gets a
//! permanent redirect (308, method and body kept) to the same host and
//! path over HTTPS on the main listener's port.

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The redirect app; `https_port` is the main listener's port.
pub fn routes(https_port: u16) -> axum::Router {
    axum::Router::new().fallback(move |headers: HeaderMap, uri: Uri| async move {
        redirect(&headers, &uri, https_port)
    })
}

fn redirect(headers: &HeaderMap, uri: &Uri, https_port: u16) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_name);
    let Some(host) = host else {
        return (StatusCode::BAD_REQUEST, "missing or bad Host header\n").into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    match axum::http::HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad request target\n").into_response(),
    }
}

/// The host part of a Host header (port dropped), if it is a plausible
/// DNS name or IP literal; anything else is refused rather than echoed.
fn host_name(value: &str) -> Option<&str> {
    let host = if value.starts_with('[') {
        &value[..=value.find(']')?]
    } else {
        value.split(':').next()?
    };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: &str, target: &str, port: u16) -> Option<String> {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        let r = redirect(&h, &target.parse().unwrap(), port);
        r.headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn keeps_host_and_path_and_swaps_the_port() {
        assert_eq!(
            location("chat.example:80", "/v1/ws?x=1", 443).as_deref(),
            Some("https://chat.example/v1/ws?x=1")
        );
        assert_eq!(
            location("[::1]:8080", "/", 8443).as_deref(),
            Some("https://[::1]:8443/")
        );
    }

    #[test]
    fn refuses_odd_hosts() {
        assert_eq!(location("a b", "/", 443), None);
        assert_eq!(location("evil.example/@x", "/", 443), None);
        assert_eq!(location("", "/", 443), None);
    }
}

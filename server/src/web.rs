//! Serves the browser client (`web/`, built by `scripts/web.sh`) at `/` on
//! the main listener, as the fallback of every other route.
//!
//! The pure part, [`resolve`], maps a request path to a file below the web
//! directory (refusing traversal) and says how to cache it; the handler only
//! reads the file. Unknown paths without an extension get `index.html` (the
//! client routes in the page); a missing build gets a page that says how to
//! make it.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[web]`: where the built browser client is.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// The folder holding `index.html` (the output of `npm run build` in
    /// `web/`). Unset: `<exe dir>/../share/palaver/web`, then `web/dist`
    /// under the working directory, then the `web/dist` of the checkout the
    /// binary was built from.
    pub dir: Option<PathBuf>,
}

/// Where the client's files are, or why there are none.
#[derive(Debug, Clone)]
pub enum WebDir {
    Found(PathBuf),
    /// No candidate holds an `index.html`; these were tried.
    Missing(Vec<PathBuf>),
}

/// Finds the built client: the configured folder, or the first default
/// candidate that holds an `index.html`.
pub fn locate(section: &WebSection) -> WebDir {
    let candidates = match &section.dir {
        Some(dir) => vec![dir.clone()],
        None => default_candidates(),
    };
    match candidates.iter().find(|d| d.join("index.html").is_file()) {
        Some(d) => WebDir::Found(d.clone()),
        None => WebDir::Missing(candidates),
    }
}

fn default_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        out.push(bin_dir.join("../share/palaver/web"));
    }
    out.push(PathBuf::from("web/dist"));
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist"));
    out
}

/// What to answer for a request path.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// This file (relative to the web directory), with its type and caching.
    File {
        rel: PathBuf,
        content_type: &'static str,
        immutable: bool,
    },
    /// A path that tries to leave the web directory or is not valid.
    Refused,
    /// A file-like path (it has an extension) that the SPA does not know.
    NotFound,
}

/// Maps a URL path to a file of the web directory. `exists` says whether a
/// relative path is a file there (injected so that this stays pure).
pub fn resolve(path: &str, exists: impl Fn(&Path) -> bool) -> Resolved {
    let Some(rel) = safe_relative(path) else {
        return Resolved::Refused;
    };
    if !rel.as_os_str().is_empty() && exists(&rel) {
        let immutable = rel.starts_with("assets");
        let content_type = content_type(&rel);
        return Resolved::File {
            rel,
            content_type,
            immutable,
        };
    }
    if rel.extension().is_some() {
        return Resolved::NotFound;
    }
    Resolved::File {
        rel: PathBuf::from("index.html"),
        content_type: "text/html; charset=utf-8",
        immutable: false,
    }
}

/// The path's segments as a relative path, or `None` when a segment is
/// `..`, empty after decoding rules, or holds a backslash, a NUL or `%`.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for seg in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        let bad = seg == ".." || seg.contains(['\\', '\0', '%', ':']) || seg.starts_with('.');
        if bad {
            return None;
        }
        rel.push(seg);
    }
    Some(rel)
}

fn content_type(rel: &Path) -> &'static str {
    let ext = rel.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The fallback handler of the main listener.
pub fn router(dir: WebDir) -> axum::Router {
    let dir = Arc::new(dir);
    axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let dir = dir.clone();
        async move { serve(&dir, &method, uri.path()).await }
    })
}

async fn serve(dir: &WebDir, method: &Method, path: &str) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let root = match dir {
        WebDir::Found(root) => root,
        WebDir::Missing(tried) => return missing_page(tried),
    };
    match resolve(path, |rel| root.join(rel).is_file()) {
        Resolved::Refused => (StatusCode::BAD_REQUEST, "bad path\n").into_response(),
        Resolved::NotFound => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Resolved::File {
            rel,
            content_type,
            immutable,
        } => file_response(&root.join(rel), content_type, immutable, method).await,
    }
}

async fn file_response(
    path: &Path,
    ct: &'static str,
    immutable: bool,
    method: &Method,
) -> Response {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a web client file");
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        }
    };
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let len = bytes.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn missing_page(tried: &[PathBuf]) -> Response {
    let list: String = tried
        .iter()
        .map(|p| {
            format!(
                "<li><code>{}</code></li>",
                html_escape(&p.display().to_string())
            )
        })
        .collect();
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Palaver: web client not built</title>\
         <h1>The web client is not built</h1>\
         <p>Build it with <code>scripts/web.sh</code> (runs <code>npm ci</code> and \
         <code>npm run build</code> in <code>web/</code>), or point <code>[web] dir</code> \
         (<code>PALAVER__WEB__DIR</code>) at a built copy. Looked in:</p><ul>{list}</ul>"
    );
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, page).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(rel: &Path) -> bool {
        [
            "index.html",
            "assets/app-1a2b.js",
            "assets/olm-9f.wasm",
            "favicon.svg",
        ]
        .iter()
        .any(|f| Path::new(f) == rel)
    }

    #[test]
    fn hashed_assets_are_immutable_with_their_type() {
        let r = resolve("/assets/app-1a2b.js", files);
        assert_eq!(
            r,
            Resolved::File {
                rel: "assets/app-1a2b.js".into(),
                content_type: "text/javascript; charset=utf-8",
                immutable: true
            }
        );
        let Resolved::File { content_type, .. } = resolve("/assets/olm-9f.wasm", files) else {
            panic!("wasm not found")
        };
        assert_eq!(content_type, "application/wasm");
    }

    #[test]
    fn app_routes_fall_back_to_index_which_is_not_cached() {
        for p in ["/", "", "/chat/42", "/settings/"] {
            assert_eq!(
                resolve(p, files),
                Resolved::File {
                    rel: "index.html".into(),
                    content_type: "text/html; charset=utf-8",
                    immutable: false
                },
                "{p}"
            );
        }
        assert_eq!(resolve("/missing.js", files), Resolved::NotFound);
    }

    #[test]
    fn traversal_and_hidden_files_are_refused() {
        for p in [
            "/../etc/passwd",
            "/assets/../../secret",
            "/%2e%2e/x",
            "/a\\..\\b",
            "/.env",
            "/c:/windows",
        ] {
            assert_eq!(resolve(p, |_| true), Resolved::Refused, "{p}");
        }
    }
}

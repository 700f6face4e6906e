//! The media role's internal endpoint for Redis-queue workers
//! (`transcoder.internal_listen`). Each request carries the job's token
//! (`Authorization: Bearer <hex>`, from the job's stream entry), which
//! grants that job only, and only while it is unfinished:
//!
//! - `GET /internal/transcode/{job}/input`: the original, decrypted.
//! - `PUT /internal/transcode/{job}/{run}/{file}`: one output of run
//!   `run` (the job entry's stream id), kept as a plaintext file (mode
//!   0600) under the media folder until the run's result is committed
//!   (then encrypted into the blob store) or the job finishes otherwise.
//!
//! Workers get no blob-store credentials and no master key.

use super::dispatch::MediaSide;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use palaver_media_store::id::ObjectId;
use std::sync::Arc;

/// Why a request is refused; each maps to one status, details stay in
/// the log.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error("bad or missing job token")]
    Token,
    #[error("malformed request")]
    Malformed,
    #[error("the job is finished or unknown")]
    Finished,
    #[error("storage: {0}")]
    Storage(String),
}

impl IntoResponse for InternalError {
    fn into_response(self) -> Response {
        let status = match &self {
            InternalError::Token => StatusCode::UNAUTHORIZED,
            InternalError::Malformed => StatusCode::BAD_REQUEST,
            InternalError::Finished => StatusCode::GONE,
            InternalError::Storage(e) => {
                tracing::warn!(error = %e, "internal transcoder endpoint failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut body = self.to_string();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            body = "internal error".into();
        }
        (status, body + "\n").into_response()
    }
}

pub fn routes(side: Arc<MediaSide>, max_output_bytes: u64) -> Router {
    let limit = usize::try_from(max_output_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/internal/transcode/{job}/input", get(input))
        .route(
            "/internal/transcode/{job}/{run}/{file}",
            put(output).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(side)
}

/// Checks the token and that the job is unfinished.
async fn authorize(side: &MediaSide, job: &str, h: &HeaderMap) -> Result<ObjectId, InternalError> {
    let token = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(InternalError::Token)?;
    if !side.key.verify(job, token) {
        return Err(InternalError::Token);
    }
    let id = ObjectId::parse(job.as_bytes()).map_err(|_| InternalError::Malformed)?;
    match side.media.open_job(id).await {
        Ok(Some(_)) => Ok(id),
        Ok(None) => Err(InternalError::Finished),
        Err(e) => Err(InternalError::Storage(e.to_string())),
    }
}

async fn input(
    State(side): State<Arc<MediaSide>>,
    Path(job): Path<String>,
    h: HeaderMap,
) -> Result<Response, InternalError> {
    let id = authorize(&side, &job, &h).await?;
    let storage = |e: std::io::Error| InternalError::Storage(e.to_string());
    let dir = side.staging.join(&job);
    tokio::fs::create_dir_all(&dir).await.map_err(storage)?;
    let path = dir.join(format!("in-{:016x}", rand::random::<u64>()));
    let exported = side.media.export_plain(id, &path).await;
    let file = match exported {
        Ok(_) => tokio::fs::File::open(&path).await,
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    // The open file stays readable; the name goes at once.
    let _ = tokio::fs::remove_file(&path).await;
    let file = file.map_err(storage)?;
    let len = file.metadata().await.map_err(storage)?.len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// A worker output's file name: what `checked_output` accepts.
fn plain_name(f: &str) -> bool {
    !f.is_empty()
        && f.len() < 64
        && !f.starts_with('.')
        && f.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

async fn output(
    State(side): State<Arc<MediaSide>>,
    Path((job, run, file)): Path<(String, String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, InternalError> {
    authorize(&side, &job, &h).await?;
    if !super::valid_run(&run) || !plain_name(&file) {
        return Err(InternalError::Malformed);
    }
    let dir = side.run_dir(&job, &run);
    let storage = |e: std::io::Error| InternalError::Storage(e.to_string());
    tokio::fs::create_dir_all(&dir).await.map_err(storage)?;
    write_private(&dir.join(&file), &body)
        .await
        .map_err(storage)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    f.write_all(data).await?;
    f.flush().await
}

#[cfg(test)]
mod tests {
    #[test]
    fn output_names_are_plain() {
        assert!(super::plain_name("video.mp4"));
        for bad in ["", ".hidden", "../x", "a/b", "a b", &"x".repeat(70)] {
            assert!(!super::plain_name(bad), "{bad}");
        }
    }
}

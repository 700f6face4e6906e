//! Local transcoding before an end-to-end encrypted upload (cargo feature
//! `transcode`): the server cannot transcode what it cannot read, so the
//! SDK does it on the device with the same library the server uses
//! (palaver-transcoder, FFmpeg's libraries), then seals and uploads the
//! outputs. Without the feature the SDK does not link FFmpeg.
//!
//! The job runs on a blocking thread of the caller's runtime, in this
//! process: the file is the user's own, so the worker-process isolation
//! the server needs for hostile uploads is not used here.

use std::path::{Path, PathBuf};

pub use palaver_transcoder::{JobError, Limits, MediaKind, Settings};

use crate::media::{self, MediaError, Sealed, Uploaded};

/// Why preparing or uploading failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("transcoding failed: {0}")]
    Job(#[from] JobError),
    #[error("upload failed: {0}")]
    Upload(#[from] MediaError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the transcoding thread failed")]
    Join,
}

/// One prepared file, in memory.
#[derive(Debug, Clone)]
pub struct Part {
    /// `video`, `voice`, `image`, `poster`, `thumb`.
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
}

/// What the transcoder made of a file: the parts, and what a message
/// shows before download (a tiny JPEG preview as base64, a waveform).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub parts: Vec<Part>,
    pub preview: Option<String>,
    pub waveform: Option<Vec<u8>>,
}

impl Prepared {
    /// The part named `name`.
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }
}

/// Transcodes and thumbnails `input` as `kind` with `settings`.
pub async fn prepare(
    input: &Path,
    kind: MediaKind,
    no_audio: bool,
    settings: Settings,
) -> Result<Prepared, TranscodeError> {
    let dir = tempfile::tempdir()?;
    let job = palaver_transcoder::Job {
        input: input.to_owned(),
        out_dir: dir.path().to_owned(),
        request: palaver_transcoder::Request { kind, no_audio },
        settings,
        limits: Limits {
            max_input_bytes: u64::MAX,
            ..Limits::default()
        },
        timeout: std::time::Duration::from_secs(3600),
    };
    let out = tokio::task::spawn_blocking(move || palaver_transcoder::job::run(&job, &mut |_| {}))
        .await
        .map_err(|_| TranscodeError::Join)??;
    let mut parts = Vec::new();
    for o in &out.outputs {
        let path: PathBuf = dir.path().join(&o.file);
        parts.push(Part {
            name: o.name.clone(),
            content_type: o.content_type.clone(),
            bytes: tokio::fs::read(&path).await?,
            width: o.width,
            height: o.height,
            duration_ms: o.duration_ms,
        });
    }
    Ok(Prepared {
        parts,
        preview: out.preview,
        waveform: out.waveform,
    })
}

/// A part sealed and uploaded: what a message needs to refer to it.
#[derive(Debug, Clone)]
pub struct SentPart {
    pub part: Part,
    pub sealed: Sealed,
    pub uploaded: Uploaded,
}

/// Prepares `input`, seals every part with its own media key and uploads
/// them as sealed objects.
pub async fn prepare_and_upload(
    media_url: &str,
    device: crate::DeviceId,
    credential: &str,
    input: &Path,
    kind: MediaKind,
) -> Result<(Prepared, Vec<SentPart>), TranscodeError> {
    let prepared = prepare(input, kind, false, Settings::default()).await?;
    let mut sent = Vec::new();
    for part in &prepared.parts {
        let sealed = media::seal(&part.bytes);
        let uploaded = media::upload_sealed(media_url, device, credential, &sealed).await?;
        sent.push(SentPart {
            part: part.clone(),
            sealed,
            uploaded,
        });
    }
    Ok((prepared, sent))
}

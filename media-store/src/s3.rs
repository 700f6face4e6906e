//! The S3-compatible blob backend (aws-sdk-s3): objects under
//! `<prefix><blob path>` in one bucket, uploaded in one request or, above
//! the part size, as a multipart upload read straight from the staged
//! file; read back with ranged GETs streamed to the client.
//!
//! Tested against Garage (scripts/garage.sh). Works with any service that
//! speaks SigV4 and accepts unsigned-trailer-free uploads: request
//! checksums are only computed where the API requires them, because some
//! S3-compatible servers reject the SDK's default streaming checksums.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::blob::{Blob, BlobError, BlobStore, Chunks, RangeSource};

/// The smallest part S3 accepts (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// The most parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// Settings of the S3 backend (`[media.s3]` in the server's config).
#[derive(Clone)]
pub struct S3Config {
    /// Service URL, e.g. `http://127.0.0.1:3900`; `None`: AWS for the region.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key, e.g. `media/`.
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual hosts.
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Objects larger than this are uploaded in parts of this size.
    pub part_size: u64,
    /// Attempts per request, the first included (exponential backoff between).
    pub max_attempts: u32,
    /// Delay before the first retry (doubled each time, with jitter).
    pub initial_backoff: Duration,
    /// Connect timeout, and longest wait for a read on an S3 connection.
    pub timeout: Duration,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("part_size", &self.part_size)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// Blobs in an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: u64,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// An error and its sources, `a: b: c` (without the SDK's Debug dumps).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn remote(op: &'static str, path: &str, e: impl std::error::Error + 'static) -> BlobError {
    BlobError::Remote {
        op,
        path: path.to_owned(),
        message: chain(&e),
    }
}

/// A failed request: the service's status and error code when it
/// answered, else the transport error (timeout, connection refused...).
fn sdk<E>(op: &'static str, path: &str, e: SdkError<E>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = match &e {
        SdkError::ServiceError(s) => format!(
            "HTTP {} {} {}",
            s.raw().status().as_u16(),
            e.code().unwrap_or("(no code)"),
            e.message().unwrap_or("")
        ),
        _ => chain(&e),
    };
    BlobError::Remote {
        op,
        path: path.to_owned(),
        message: message.trim_end().to_owned(),
    }
}

impl S3Store {
    /// Builds the client (no request is made; see [`S3Store::check`]).
    pub fn new(c: &S3Config) -> S3Store {
        let retry = RetryConfig::standard()
            .with_max_attempts(c.max_attempts.max(1))
            .with_initial_backoff(c.initial_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(c.timeout)
            .read_timeout(c.timeout)
            .build();
        let creds = Credentials::new(
            &c.access_key_id,
            &c.secret_access_key,
            None,
            None,
            "palaver-config",
        );
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(c.region.clone()))
            .credentials_provider(creds)
            .force_path_style(c.path_style)
            .retry_config(retry)
            .timeout_config(timeouts)
            // The default streaming checksums (aws-chunked with a trailer)
            // are refused by some S3-compatible servers, Garage among them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(e) = &c.endpoint {
            b = b.endpoint_url(e);
        }
        S3Store {
            inner: Arc::new(Inner {
                client: Client::from_conf(b.build()),
                bucket: c.bucket.clone(),
                prefix: c.prefix.clone(),
                part_size: c.part_size.max(MIN_PART_SIZE),
            }),
        }
    }

    /// Checks that the bucket exists and the credentials may use it.
    pub async fn check(&self) -> Result<(), BlobError> {
        let i = &self.inner;
        i.client
            .head_bucket()
            .bucket(&i.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk("HeadBucket", &i.bucket, e))
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.inner.prefix)
    }

    /// The size of an object, `None` if there is none.
    async fn head(&self, path: &str) -> Result<Option<u64>, BlobError> {
        let i = &self.inner;
        match i
            .client
            .head_object()
            .bucket(&i.bucket)
            .key(self.key(path))
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(sdk("HeadObject", path, e)),
        }
    }

    async fn put_single(&self, path: &str, staged: &Path, len: u64) -> Result<(), BlobError> {
        let i = &self.inner;
        let body = file_part(staged, 0, len)
            .await
            .map_err(|e| remote("read", path, e))?;
        i.client
            .put_object()
            .bucket(&i.bucket)
            .key(self.key(path))
            .content_length(len as i64)
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk("PutObject", path, e))
    }

    async fn put_multipart(&self, path: &str, staged: &Path, len: u64) -> Result<(), BlobError> {
        let i = &self.inner;
        let key = self.key(path);
        let created = i
            .client
            .create_multipart_upload()
            .bucket(&i.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| sdk("CreateMultipartUpload", path, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(path, &key, &upload_id, staged, len).await;
        if result.is_err() {
            // Best effort: parts of a failed upload would otherwise stay
            // billed until the bucket's lifecycle rule (if any) drops them.
            let _ = i
                .client
                .abort_multipart_upload()
                .bucket(&i.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        path: &str,
        key: &str,
        upload_id: &str,
        staged: &Path,
        len: u64,
    ) -> Result<(), BlobError> {
        let i = &self.inner;
        // Parts grow for huge objects so that they stay under 10,000.
        let part = i.part_size.max(len.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut at = 0u64;
        while at < len {
            let n = part.min(len - at);
            let number = (parts.len() + 1) as i32;
            let body = file_part(staged, at, n)
                .await
                .map_err(|e| remote("read", path, e))?;
            let out = i
                .client
                .upload_part()
                .bucket(&i.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(n as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| sdk("UploadPart", path, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            at += n;
        }
        i.client
            .complete_multipart_upload()
            .bucket(&i.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk("CompleteMultipartUpload", path, e))
    }
}

/// `len` bytes of a local file from `offset`, re-readable for retries.
async fn file_part(
    p: &Path,
    offset: u64,
    len: u64,
) -> Result<ByteStream, aws_sdk_s3::primitives::ByteStreamError> {
    ByteStream::read_from()
        .path(p)
        .offset(offset)
        .length(Length::Exact(len))
        .build()
        .await
}

#[async_trait]
impl BlobStore for S3Store {
    /// Uploads the staged file and removes it (also when the upload fails:
    /// the caller discards the upload then). A blob that already exists
    /// (content-addressed duplicate) is kept and not uploaded again.
    async fn put(&self, path: &str, staged: &Path) -> Result<(), BlobError> {
        let result = async {
            if self.head(path).await?.is_some() {
                return Ok(());
            }
            let len = tokio::fs::metadata(staged)
                .await
                .map_err(|e| remote("stat", path, e))?
                .len();
            if len > self.inner.part_size {
                self.put_multipart(path, staged, len).await
            } else {
                self.put_single(path, staged, len).await
            }
        }
        .await;
        let _ = tokio::fs::remove_file(staged).await;
        result
    }

    async fn open(&self, path: &str) -> Result<Option<Blob>, BlobError> {
        Ok(self.head(path).await?.map(|len| Blob::Remote {
            source: Arc::new(self.clone()),
            path: path.to_owned(),
            len,
            small: Arc::default(),
        }))
    }

    async fn delete(&self, path: &str) -> Result<(), BlobError> {
        let i = &self.inner;
        i.client
            .delete_object()
            .bucket(&i.bucket)
            .key(self.key(path))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk("DeleteObject", path, e))
    }

    async fn list(&self) -> Result<Vec<String>, BlobError> {
        let i = &self.inner;
        let mut pages = i
            .client
            .list_objects_v2()
            .bucket(&i.bucket)
            .prefix(&i.prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk("ListObjectsV2", &i.prefix, e))?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key()?.strip_prefix(&i.prefix).map(str::to_owned)),
            );
        }
        Ok(out)
    }
}

struct Body(ByteStream);

#[async_trait]
impl Chunks for Body {
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, BlobError> {
        self.0
            .try_next()
            .await
            .map_err(|e| remote("GetObject body", "", e))
    }
}

#[async_trait]
impl RangeSource for S3Store {
    async fn read_range(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Box<dyn Chunks>, BlobError> {
        let i = &self.inner;
        if end <= start {
            return Ok(Box::new(Body(ByteStream::from_static(b""))));
        }
        let out = i
            .client
            .get_object()
            .bucket(&i.bucket)
            .key(self.key(path))
            .range(format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|e| sdk("GetObject", path, e))?;
        if out.content_length() != Some((end - start) as i64) {
            return Err(BlobError::Remote {
                op: "GetObject",
                path: path.to_owned(),
                message: format!(
                    "asked for {} bytes, the answer has {:?}",
                    end - start,
                    out.content_length()
                ),
            });
        }
        Ok(Box::new(Body(out.body)))
    }
}

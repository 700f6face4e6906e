//! `media.storage` and `[media.s3]`: where the media store keeps its blobs.

use super::{ConfigError, Secret, key_err};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The blob backend of the media store.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MediaStorage {
    /// Files under `<media dir>/blobs`.
    Local,
    /// An S3-compatible bucket (`[media.s3]`).
    S3,
}

/// An S3-compatible bucket for the media blobs (docs/media.md, "S3").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaS3Section {
    /// Service URL, e.g. `http://127.0.0.1:3900`; unset: AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// Must equal the service's region (Garage: its `s3_region`).
    pub region: String,
    pub bucket: String,
    /// Prepended to every object key, e.g. `palaver/`.
    pub prefix: String,
    /// `endpoint/bucket/key` URLs instead of `bucket.endpoint/key`.
    pub path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Objects larger than this go up as multipart uploads in parts of
    /// this size (at least 5 MiB, S3's smallest part).
    pub part_size_bytes: u64,
    /// Attempts per S3 request, the first included; retries back off
    /// exponentially from `initial_backoff`, with jitter.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Connect timeout, and the longest wait for data on an S3 connection.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for MediaS3Section {
    fn default() -> Self {
        MediaS3Section {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            part_size_bytes: 16 << 20,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
        }
    }
}

impl MediaS3Section {
    /// Checks the section (only when `media.storage = "s3"`).
    pub(super) fn validate(&self, secret: Option<&Secret>) -> Result<(), ConfigError> {
        let k = |name: &str| format!("media.s3.{name}");
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(key_err(&k("endpoint"), "must be an http(s) URL"));
        }
        if self.region.is_empty() {
            return Err(key_err(&k("region"), "must not be empty"));
        }
        if self.bucket.is_empty() {
            return Err(key_err(
                &k("bucket"),
                "required when media.storage = \"s3\"",
            ));
        }
        if self.access_key_id.as_deref().is_none_or(str::is_empty) {
            return Err(key_err(
                &k("access_key_id"),
                "required when media.storage = \"s3\"",
            ));
        }
        if secret.is_none() {
            return Err(key_err(
                &k("secret_access_key"),
                "required when media.storage = \"s3\" (or secret_access_key_file)",
            ));
        }
        let min = palaver_media_store::s3::MIN_PART_SIZE;
        if !(min..=5 << 30).contains(&self.part_size_bytes) {
            return Err(key_err(&k("part_size_bytes"), "must be 5 MiB to 5 GiB"));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(key_err(&k("max_attempts"), "must be 1 to 10"));
        }
        if self.timeout.is_zero() {
            return Err(key_err(&k("timeout"), "must be longer than zero"));
        }
        Ok(())
    }

    /// The backend's settings.
    pub fn store_config(&self, secret: &Secret) -> palaver_media_store::S3Config {
        palaver_media_store::S3Config {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            path_style: self.path_style,
            access_key_id: self.access_key_id.clone().unwrap_or_default(),
            secret_access_key: secret.expose().to_owned(),
            part_size: self.part_size_bytes,
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            timeout: self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, load};

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (format!("PALAVER__MEDIA__{k}"), v.to_string()))
            .collect()
    }

    const SECRET: &str = "\"s3-secret-0123456789abcdef\"";

    #[test]
    fn s3_storage_needs_bucket_and_credentials_and_hides_the_secret() {
        let e = load(None, &env(&[("STORAGE", "s3")])).unwrap().validate();
        assert!(e.unwrap_err().to_string().contains("media.s3.bucket"));
        let e = load(None, &env(&[("STORAGE", "s3"), ("S3__BUCKET", "b")]))
            .unwrap()
            .validate();
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("media.s3.access_key_id")
        );
        let base = [
            ("STORAGE", "s3"),
            ("S3__BUCKET", "b"),
            ("S3__ACCESS_KEY_ID", "GKabc"),
        ];
        let e = load(None, &env(&base)).unwrap().validate();
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("media.s3.secret_access_key")
        );

        let mut ok = base.to_vec();
        ok.push(("S3__SECRET_ACCESS_KEY", SECRET));
        ok.push(("S3__ENDPOINT", "http://127.0.0.1:3900"));
        let c: Config = load(None, &env(&ok)).unwrap();
        let secrets = c.validate().unwrap();
        let s3 = c
            .media
            .s3
            .store_config(secrets.media_s3_secret_access_key.as_ref().unwrap());
        assert_eq!(s3.secret_access_key, "s3-secret-0123456789abcdef");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        for shown in [format!("{c:?}"), format!("{secrets:?}"), format!("{s3:?}")] {
            assert!(!shown.contains("s3-secret"), "{shown}");
        }

        let mut small = ok.clone();
        small.push(("S3__PART_SIZE_BYTES", "1000"));
        let e = load(None, &env(&small)).unwrap().validate();
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("media.s3.part_size_bytes")
        );
        let mut bad = ok.clone();
        bad.push(("S3__ENDPOINT", "ftp://x"));
        let e = load(None, &env(&bad)).unwrap().validate();
        assert!(e.unwrap_err().to_string().contains("media.s3.endpoint"));
        // Local storage ignores the section.
        load(None, &env(&[("S3__PART_SIZE_BYTES", "1")]))
            .unwrap()
            .validate()
            .unwrap();
    }
}

//! Palaver's media store: attachments uploaded by devices and served over a
//! lean HTTP/1.1 path.
//!
//! - [`range`], [`conditional`], [`capability`], [`id`]: pure rules for
//!   Range requests, conditional requests (RFC 9110), signed capability
//!   URLs and object ids. No I/O; property-tested and fuzzed.
//! - [`crypto`]: encryption at rest for processed objects (per-object data
//!   key, AES-256-GCM segments, master-key wrapping with rotation).
//! - [`blob`]: the [`blob::BlobStore`] trait and the local-folder backend;
//!   [`s3`]: the S3-compatible backend.
//! - [`meta`]: object metadata, references (quota, expiry) and upload
//!   sessions in SQLite.
//! - [`service`]: uploads, look-ups, deletion, expiry and garbage
//!   collection, independent of HTTP.
//! - [`http`]: the HTTP/1.1 server (downloads with sendfile, one-request
//!   and tus 1.0 resumable uploads).
//!
//! See docs/media.md for the protocol and what is not done yet.

pub mod blob;
pub mod capability;
pub mod conditional;
pub mod crypto;
pub mod http;
pub mod id;
pub mod meta;
pub mod range;
pub mod s3;
pub mod service;

pub use blob::{BlobStore, LocalStore};
pub use capability::CapabilityKey;
pub use crypto::MasterKeys;
pub use http::{AuthFailureRate, DeviceAuth, HttpConfig, HttpStats};
pub use s3::{S3Config, S3Store};
pub use service::{Limits, Media};

//! Responses and how they are written: one buffer for the head (and small
//! bodies), `sendfile` for sealed objects, segment-wise decryption for
//! processed ones.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;

use super::conn::Conn;
use crate::blob::Blob;
use crate::crypto::{SEGMENT, TAG, segments};
use crate::range::ByteRange;
use crate::service::Entry;
use std::io::IoSlice;

/// Bodies up to this size are read and sent with the head in one write.
pub(super) const INLINE: u64 = 64 * 1024;
/// Segments read and decrypted per step for processed objects (256 KiB).
pub(super) const SEGS_PER_STEP: u64 = 4;

#[derive(Debug)]
pub(crate) enum Payload {
    /// No body. `length` is the Content-Length to announce (HEAD), if any.
    Empty {
        length: Option<u64>,
    },
    Bytes(Vec<u8>),
    /// Parts of a stored object; with a boundary, as multipart/byteranges.
    Object {
        entry: Arc<Entry>,
        ranges: Vec<ByteRange>,
        boundary: Option<String>,
        content_type: String,
    },
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: String,
    pub payload: Payload,
    pub close: bool,
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        423 => "Locked",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        460 => "Checksum Mismatch",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

thread_local! {
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// The Date header value, formatted once per second per thread.
fn date() -> String {
    let now = crate::conditional::unix_now();
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != now {
            *d = (now, crate::conditional::format_date(now));
        }
        d.1.clone()
    })
}

impl Reply {
    pub(crate) fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: String::new(),
            payload: Payload::Empty { length: None },
            close: false,
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl std::fmt::Display) -> Reply {
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    /// A short plain-text error body.
    pub(crate) fn error(status: u16, message: &str) -> Reply {
        let mut r = Reply::new(status).header("Content-Type", "text/plain; charset=utf-8");
        r.payload = Payload::Bytes(format!("{message}\n").into_bytes());
        r
    }

    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Reply {
        let mut r = Reply::new(status).header("Content-Type", "application/json");
        r.payload = Payload::Bytes(value.to_string().into_bytes());
        r
    }

    pub(crate) fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    fn body_len(&self) -> Option<u64> {
        match &self.payload {
            Payload::Empty { length } => *length,
            Payload::Bytes(b) => Some(b.len() as u64),
            Payload::Object {
                entry,
                ranges,
                boundary,
                content_type,
            } => {
                let data: u64 = ranges.iter().map(ByteRange::len).sum();
                Some(match boundary {
                    None => data,
                    Some(b) => {
                        let size = entry.info.size;
                        let heads: u64 = ranges
                            .iter()
                            .map(|r| part_head(b, content_type, r, size).len() as u64)
                            .sum();
                        data + heads + part_tail(b).len() as u64
                    }
                })
            }
        }
    }

    /// Writes the reply; `head_only` for HEAD (headers, no body).
    pub(crate) async fn send(self, conn: &mut Conn, head_only: bool) -> io::Result<()> {
        let mut out = String::with_capacity(256 + self.headers.len());
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nDate: {}\r\n{}",
            self.status,
            reason(self.status),
            date(),
            self.headers
        );
        let no_length = self.status == 304 || self.status == 204 || self.status < 200;
        if !no_length {
            // An empty reply says so: without a length (201 from tus), a
            // keep-alive client would wait for the connection to close.
            let _ = write!(out, "Content-Length: {}\r\n", self.body_len().unwrap_or(0));
        }
        if self.close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if head_only || no_length {
            return conn.write(&out).await;
        }
        match self.payload {
            Payload::Empty { .. } => conn.write(&out).await,
            Payload::Bytes(b) => {
                out.extend_from_slice(&b);
                conn.write(&out).await
            }
            Payload::Object {
                entry,
                ranges,
                boundary,
                content_type,
            } => {
                let size = entry.info.size;
                for r in &ranges {
                    if let Some(b) = &boundary {
                        out.extend_from_slice(part_head(b, &content_type, r, size).as_bytes());
                    }
                    write_range(conn, &entry, *r, &mut out).await?;
                }
                if let Some(b) = &boundary {
                    out.extend_from_slice(part_tail(b).as_bytes());
                }
                if !out.is_empty() {
                    conn.write(&out).await?;
                }
                Ok(())
            }
        }
    }
}

fn part_head(boundary: &str, content_type: &str, r: &ByteRange, size: u64) -> String {
    format!(
        "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
        r.start,
        r.end - 1
    )
}

fn part_tail(boundary: &str) -> String {
    format!("\r\n--{boundary}--\r\n")
}

/// Sends one range. `pending` holds bytes not yet written (the head); they
/// go out with the first data, and `pending` is left empty or holding
/// small inline data for the caller to flush.
async fn write_range(
    conn: &mut Conn,
    entry: &Entry,
    r: ByteRange,
    pending: &mut Vec<u8>,
) -> io::Result<()> {
    let file = match &entry.blob {
        Blob::File { file, .. } => file,
        Blob::Remote { .. } => {
            return super::remote::write_range(conn, entry, r, pending).await;
        }
    };
    if entry.key.is_none() {
        if r.len() <= INLINE {
            use std::os::unix::fs::FileExt;
            let at = pending.len();
            pending.resize(at + r.len() as usize, 0);
            file.read_exact_at(&mut pending[at..], r.start)?;
            return Ok(());
        }
        conn.write_more(pending).await?;
        pending.clear();
        return conn.send_file(file, r.start, r.len()).await;
    }
    let mut scratch = Vec::new();
    let mut i = r.start / SEGMENT;
    let last = (r.end - 1) / SEGMENT;
    while i <= last {
        let j = (i + SEGS_PER_STEP - 1).min(last);
        let bounds = read_segments(entry, r, i, j, &mut scratch)?;
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(bounds.len() + 1);
        if !pending.is_empty() {
            slices.push(IoSlice::new(pending));
        }
        slices.extend(bounds.iter().map(|&(a, b)| IoSlice::new(&scratch[a..b])));
        conn.write_vectored(&mut slices).await?;
        pending.clear();
        i = j + 1;
    }
    Ok(())
}

/// Where the stored segments `i..=j` of a processed object of `size`
/// plaintext bytes are: (offset, length) in the blob.
pub(super) fn stored_span(size: u64, i: u64, j: u64) -> (u64, u64) {
    let stored = SEGMENT + TAG;
    let plain_len_j = (size - j * SEGMENT).min(SEGMENT);
    (i * stored, (j - i) * stored + plain_len_j + TAG)
}

/// Reads the stored segments `i..=j` of a processed object with one
/// `pread` into `scratch`, decrypts each in place, and returns the byte
/// bounds in `scratch` of the plaintext that falls inside `r`.
fn read_segments(
    entry: &Entry,
    r: ByteRange,
    i: u64,
    j: u64,
    scratch: &mut Vec<u8>,
) -> io::Result<Vec<(usize, usize)>> {
    use std::os::unix::fs::FileExt;
    let Blob::File { file, .. } = &entry.blob else {
        return Err(io::Error::other("not a local blob"));
    };
    let (at, n) = stored_span(entry.info.size, i, j);
    let n = n as usize;
    if scratch.len() < n {
        scratch.resize(n, 0);
    }
    file.read_exact_at(&mut scratch[..n], at)?;
    open_segments(entry, r, i, j, scratch)
}

/// Decrypts in place the stored segments `i..=j` held at the start of
/// `scratch`; returns the bounds in `scratch` of the plaintext inside `r`.
pub(super) fn open_segments(
    entry: &Entry,
    r: ByteRange,
    i: u64,
    j: u64,
    scratch: &mut [u8],
) -> io::Result<Vec<(usize, usize)>> {
    let key = entry
        .key
        .as_ref()
        .ok_or_else(|| io::Error::other("no key"))?;
    let size = entry.info.size;
    let nseg = segments(size);
    let stored = SEGMENT + TAG;
    let plain_len = |k: u64| (size - k * SEGMENT).min(SEGMENT);
    let mut bounds = Vec::with_capacity((j - i + 1) as usize);
    for k in i..=j {
        let off = ((k - i) * stored) as usize;
        let len = plain_len(k);
        key.open_slice(
            &entry.info.id,
            k,
            k + 1 == nseg,
            &mut scratch[off..off + (len + TAG) as usize],
        )
        .map_err(|_| io::Error::other("segment failed authentication"))?;
        let seg_start = k * SEGMENT;
        let from = (r.start.max(seg_start) - seg_start) as usize;
        let to = (r.end.min(seg_start + len) - seg_start) as usize;
        bounds.push((off + from, off + to));
    }
    Ok(bounds)
}

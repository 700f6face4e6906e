//! Sending ranges of blobs kept in a remote store (S3): one ranged read
//! per requested range, streamed to the client as it arrives. Sealed
//! objects pass through unchanged; for processed objects only the stored
//! segments the range touches are fetched and decrypted, a few at a time.

use std::io::{self, IoSlice};

use super::conn::Conn;
use super::reply::{INLINE, SEGS_PER_STEP, open_segments, stored_span};
use crate::blob::{Blob, BlobError, Chunks, RangeSource, SMALL_REMOTE};
use crate::crypto::SEGMENT;
use crate::range::ByteRange;
use crate::service::Entry;

/// Exact reads over a chunk stream that must deliver `left` bytes.
struct Reader {
    chunks: Box<dyn Chunks>,
    held: bytes::Bytes,
    left: u64,
}

fn failed(e: BlobError) -> io::Error {
    tracing::warn!(error = %e, "media download from object storage failed");
    io::Error::other(e)
}

impl Reader {
    async fn open(src: &dyn RangeSource, path: &str, start: u64, end: u64) -> io::Result<Reader> {
        let chunks = src.read_range(path, start, end).await.map_err(failed)?;
        Ok(Reader {
            chunks,
            held: bytes::Bytes::new(),
            left: end - start,
        })
    }

    /// The next bytes (at most `max`, never empty); an error if the stream
    /// ends before all the bytes it owes arrived.
    async fn take(&mut self, max: usize) -> io::Result<bytes::Bytes> {
        while self.held.is_empty() {
            match self.chunks.next_chunk().await.map_err(failed)? {
                Some(c) => self.held = c,
                None => {
                    return Err(failed(BlobError::Remote {
                        op: "GetObject body",
                        path: String::new(),
                        message: format!("ended {} bytes early", self.left),
                    }));
                }
            }
        }
        let max = max.min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.held.len().min(max);
        self.left -= n as u64;
        Ok(self.held.split_to(n))
    }

    /// Fills `out` completely.
    async fn fill(&mut self, mut out: &mut [u8]) -> io::Result<()> {
        while !out.is_empty() {
            let c = self.take(out.len()).await?;
            out[..c.len()].copy_from_slice(&c);
            out = &mut out[c.len()..];
        }
        Ok(())
    }
}

/// Sends one range of a remote blob; `pending` works as in
/// [`super::reply`]: unsent bytes (the head) that go out with the first
/// data, and small inline bodies left there for the caller to flush.
pub(super) async fn write_range(
    conn: &mut Conn,
    entry: &Entry,
    r: ByteRange,
    pending: &mut Vec<u8>,
) -> io::Result<()> {
    let Blob::Remote {
        source,
        path,
        len,
        small,
    } = &entry.blob
    else {
        return Err(io::Error::other("not a remote blob"));
    };
    let src = &**source;
    if *len <= SMALL_REMOTE {
        let whole = match small.get() {
            Some(b) => b.clone(),
            None => {
                let mut v = vec![0; *len as usize];
                Reader::open(src, path, 0, *len).await?.fill(&mut v).await?;
                let b = bytes::Bytes::from(v);
                let _ = small.set(b.clone());
                b
            }
        };
        return from_memory(entry, &whole, r, pending);
    }
    if entry.key.is_some() {
        return write_processed(conn, entry, src, path, r, pending).await;
    }
    let mut rd = Reader::open(src, path, r.start, r.end).await?;
    if r.len() <= INLINE {
        let at = pending.len();
        pending.resize(at + r.len() as usize, 0);
        return rd.fill(&mut pending[at..]).await;
    }
    while rd.left > 0 {
        let c = rd.take(usize::MAX).await?;
        if pending.is_empty() {
            conn.write(&c).await?;
        } else {
            conn.write_vectored(&mut [IoSlice::new(pending), IoSlice::new(&c)])
                .await?;
            pending.clear();
        }
    }
    Ok(())
}

/// Appends range `r` of a small blob held in memory to `pending`
/// (decrypting the segments it touches for processed objects).
fn from_memory(entry: &Entry, whole: &[u8], r: ByteRange, pending: &mut Vec<u8>) -> io::Result<()> {
    let short = || io::Error::other("remote blob shorter than its metadata");
    if entry.key.is_none() {
        let bytes = whole
            .get(r.start as usize..r.end as usize)
            .ok_or_else(short)?;
        pending.extend_from_slice(bytes);
        return Ok(());
    }
    let (first, last) = (r.start / SEGMENT, (r.end - 1) / SEGMENT);
    let (at, n) = stored_span(entry.info.size, first, last);
    let mut scratch = whole
        .get(at as usize..(at + n) as usize)
        .ok_or_else(short)?
        .to_vec();
    for (a, b) in open_segments(entry, r, first, last, &mut scratch)? {
        pending.extend_from_slice(&scratch[a..b]);
    }
    Ok(())
}

async fn write_processed(
    conn: &mut Conn,
    entry: &Entry,
    src: &dyn RangeSource,
    path: &str,
    r: ByteRange,
    pending: &mut Vec<u8>,
) -> io::Result<()> {
    let size = entry.info.size;
    let (first, last) = (r.start / SEGMENT, (r.end - 1) / SEGMENT);
    let (from, _) = stored_span(size, first, first);
    let (at, n) = stored_span(size, last, last);
    let mut rd = Reader::open(src, path, from, at + n).await?;
    let mut scratch = Vec::new();
    let mut i = first;
    while i <= last {
        let j = (i + SEGS_PER_STEP - 1).min(last);
        let n = stored_span(size, i, j).1 as usize;
        scratch.resize(n, 0);
        rd.fill(&mut scratch).await?;
        let bounds = open_segments(entry, r, i, j, &mut scratch)?;
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

//! HTTPS on the media listener: the connection's byte stream (plain TCP or
//! rustls over TCP) and the TLS write path.
//!
//! Plain connections write file bodies with `sendfile(2)` (no copy through
//! user space). TLS records are encrypted in user space, so over TLS a file
//! body is read with `pread` into a buffer, handed to rustls, and the
//! records it produces are written; the response head goes out in the same
//! first write as the first chunk. Kernel TLS (kTLS), which would bring
//! `sendfile` back, is not used: rustls can export the negotiated traffic
//! secrets (`ServerConfig::enable_secret_extraction`,
//! `dangerous_extract_secrets`) for a kTLS setup, but the kernel then has to
//! take over key updates and post-handshake messages as well; docs/media.md
//! has the numbers that tell whether it would pay.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Size of one read from the file on the TLS path: a handful of maximum
/// size TLS records (16 KiB each) per write.
const CHUNK: usize = 128 * 1024;

/// A listener whose connections speak TLS (HTTPS).
#[derive(Debug)]
pub struct TlsListener {
    pub listener: TcpListener,
    /// Certificate (through its resolver, so reloads apply to new
    /// connections), versions and suites; ALPN should offer `http/1.1`.
    pub config: Arc<rustls::ServerConfig>,
    /// Time a client gets to finish the handshake.
    pub handshake_timeout: Duration,
}

/// What a connection reads from and writes to.
#[derive(Debug)]
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Completes the server handshake within `limit`; `None` (logged at debug)
/// if it fails or times out.
pub(crate) async fn accept(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    limit: Duration,
) -> Option<Io> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(Io::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "media tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("media tls handshake timed out");
            None
        }
    }
}

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// Runs one write step; a step that makes no progress for `limit` fails.
async fn bounded<T>(limit: Duration, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Writes all of `bytes` and flushes the records.
pub(crate) async fn write_all(s: &mut Tls, limit: Duration, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = bounded(limit, s.write(bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    bounded(limit, s.flush()).await
}

/// Writes all of `bufs` (as few records as rustls makes of them).
pub(crate) async fn write_vectored(
    s: &mut Tls,
    limit: Duration,
    mut bufs: &mut [io::IoSlice<'_>],
) -> io::Result<()> {
    while !bufs.is_empty() {
        let n = bounded(limit, s.write_vectored(bufs)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut bufs, n);
    }
    bounded(limit, s.flush()).await
}

/// Sends `len` bytes of `file` from `offset`, after `head`: chunks read
/// with `pread` into one buffer (the head in front of the first), each
/// encrypted and written before the next read.
pub(crate) async fn send_file(
    s: &mut Tls,
    limit: Duration,
    head: Vec<u8>,
    file: &std::fs::File,
    mut offset: u64,
    len: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = offset + len;
    let mut buf = head;
    let mut from = buf.len();
    while offset < end {
        let want = ((end - offset) as usize).min(CHUNK);
        buf.resize(from + want, 0);
        file.read_exact_at(&mut buf[from..], offset)?;
        offset += want as u64;
        write_all(s, limit, &buf).await?;
        buf.clear();
        from = 0;
    }
    if !buf.is_empty() {
        write_all(s, limit, &buf).await?;
    }
    Ok(())
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    /// TLS: sends close_notify, then shuts the TCP write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

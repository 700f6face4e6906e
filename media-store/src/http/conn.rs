//! One HTTP/1.1 connection: reading request heads and bodies with
//! timeouts, writing responses (with `sendfile` for file bodies on plain
//! TCP; over TLS, file bodies are read into a buffer and encrypted, see
//! [`super::tls`]).

use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::time::{Instant, timeout, timeout_at};

use super::tls::Io;
use crate::service::BodySource;

/// Largest request head (request line and headers).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Longest request target.
pub(crate) const MAX_TARGET: usize = 2048;
const MAX_HEADERS: usize = 48;
/// Longest time spent discarding a client's unread data before closing.
const LINGER: Duration = Duration::from_secs(5);

/// A parsed request head. Header names are lowercase.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub http10: bool,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The client's address (for the failed-login limit; never logged).
    pub peer: std::net::IpAddr,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .any(|(_, v)| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
    }

    /// Whether the client wants the connection kept open.
    pub(crate) fn keep_alive(&self) -> bool {
        if self.http10 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }

    pub(crate) fn expects_continue(&self) -> bool {
        !self.http10 && self.has_token("expect", "100-continue")
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed or went idle: close silently.
    Closed,
    /// Answer with this status and close.
    Reject(u16),
}

/// Timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub send: Duration,
    pub body: Duration,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub stream: Io,
    buf: Vec<u8>,
    /// Over TLS: a response head waiting to go out with the body.
    held: Vec<u8>,
    start: usize,
    end: usize,
    pub t: Timeouts,
    peer: std::net::IpAddr,
}

impl Conn {
    pub(crate) fn new(stream: Io, t: Timeouts, peer: std::net::IpAddr) -> Conn {
        Conn {
            stream,
            buf: vec![0; 4096],
            held: Vec::new(),
            start: 0,
            end: 0,
            t,
            peer,
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = (self.buf.len() * 2).min(MAX_HEAD + 1024);
                self.buf.resize(n, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Waits up to the idle timeout for a request to start.
    pub(crate) async fn wait_for_request(&mut self) -> bool {
        if self.buffered() > 0 {
            return true;
        }
        // A pipelined or already-arrived request needs no timer.
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let Io::Plain(stream) = &self.stream else {
            return matches!(timeout(self.t.idle, self.fill()).await, Ok(Ok(n)) if n > 0);
        };
        match stream.try_read(&mut self.buf[self.end..]) {
            Ok(0) => return false,
            Ok(n) => {
                self.end += n;
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
        matches!(timeout(self.t.idle, self.fill()).await, Ok(Ok(n)) if n > 0)
    }

    /// Reads a complete request head within the header timeout.
    pub(crate) async fn read_head(&mut self) -> Result<Head, HeadError> {
        let deadline = Instant::now() + self.t.header;
        loop {
            if let Some(head) = self.try_parse()? {
                return Ok(head);
            }
            if self.buffered() >= MAX_HEAD {
                return Err(HeadError::Reject(431));
            }
            match timeout_at(deadline, self.fill()).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Err(HeadError::Closed),
                Err(_) if self.buffered() == 0 => return Err(HeadError::Closed),
                Err(_) => return Err(HeadError::Reject(408)),
            }
        }
    }

    fn try_parse(&mut self) -> Result<Option<Head>, HeadError> {
        // Tolerate empty lines before a request (RFC 9112 2.2).
        while self.buffered() > 0 && matches!(self.buf[self.start], b'\r' | b'\n') {
            self.start += 1;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(&self.buf[self.start..self.end]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::Reject(431)),
            Err(_) => return Err(HeadError::Reject(400)),
        };
        let target = req.path.unwrap_or("");
        if target.len() > MAX_TARGET {
            return Err(HeadError::Reject(414));
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        let head = Head {
            method: req.method.unwrap_or("").to_owned(),
            path,
            query,
            http10: req.version == Some(0),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
            peer: self.peer,
        };
        self.start += n;
        Ok(Some(head))
    }

    /// A reader for a body of `len` bytes.
    pub(crate) fn body(&mut self, len: u64) -> Body<'_> {
        Body {
            conn: self,
            remaining: len,
        }
    }

    /// Writes all of `bytes`; each wait for the socket to become writable
    /// is bounded by the send timeout. Tries the write first, so a response
    /// that fits in the socket buffer costs no timer.
    pub(crate) async fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let stream = match &mut self.stream {
            Io::Plain(s) => s,
            Io::Tls(s) => return super::tls::write_all(s, self.t.send, bytes).await,
        };
        while !bytes.is_empty() {
            match stream.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match timeout(self.t.send, stream.writable()).await {
                        Ok(r) => r?,
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `bufs` with `writev`, like [`Conn::write`].
    pub(crate) async fn write_vectored(
        &mut self,
        mut bufs: &mut [io::IoSlice<'_>],
    ) -> io::Result<()> {
        let stream = match &mut self.stream {
            Io::Plain(s) => s,
            Io::Tls(s) => return super::tls::write_vectored(s, self.t.send, bufs).await,
        };
        while !bufs.is_empty() {
            match stream.try_write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match timeout(self.t.send, stream.writable()).await {
                        Ok(r) => r?,
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Closes after a final response without resetting the connection:
    /// shuts down the write side, then reads and discards what the client
    /// still sends (an unread request body) for a few seconds, so it gets
    /// to read the response instead of a TCP reset.
    pub(crate) async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + LINGER;
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(Ok(n)) = timeout_at(deadline, self.stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
    }

    /// Writes `bytes` with `MSG_MORE`: the kernel holds them back to go out
    /// in the same segments as the data that follows (a response head
    /// before `sendfile`).
    /// Over TLS, the bytes are kept and sent with the file's first chunk.
    pub(crate) async fn write_more(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let stream = match &mut self.stream {
            Io::Plain(s) => &*s,
            Io::Tls(_) => {
                self.held.extend_from_slice(bytes);
                return Ok(());
            }
        };
        while !bytes.is_empty() {
            let r = stream.try_io(Interest::WRITABLE, || {
                rustix::net::send(stream, bytes, rustix::net::SendFlags::MORE)
                    .map_err(io::Error::from)
            });
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match timeout(self.t.send, stream.writable()).await {
                        Ok(r) => r?,
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset` with `sendfile(2)`.
    pub(crate) async fn send_file(
        &mut self,
        file: &std::fs::File,
        mut offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let end = offset + len;
        let stream = match &mut self.stream {
            Io::Plain(s) => &*s,
            Io::Tls(s) => {
                let held = std::mem::take(&mut self.held);
                return super::tls::send_file(s, self.t.send, held, file, offset, len).await;
            }
        };
        while offset < end {
            let want = (end - offset).min(1 << 30) as usize;
            let r = stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(stream, file, Some(&mut offset), want).map_err(io::Error::from)
            });
            match r {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match timeout(self.t.send, stream.writable()).await {
                        Ok(r) => r?,
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A request body of known length; reads time out after the body timeout.
#[derive(Debug)]
pub(crate) struct Body<'a> {
    conn: &'a mut Conn,
    pub remaining: u64,
}

impl Body<'_> {
    async fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        let max = (out.len() as u64).min(self.remaining) as usize;
        let c = &mut *self.conn;
        if c.buffered() > 0 {
            let n = max.min(c.buffered());
            out[..n].copy_from_slice(&c.buf[c.start..c.start + n]);
            c.start += n;
            self.remaining -= n as u64;
            return Ok(n);
        }
        let n = match timeout(c.t.body, c.stream.read(&mut out[..max])).await {
            Ok(r) => r?,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl BodySource for Body<'_> {
    fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = io::Result<usize>> + Send + 'a {
        self.read_some(buf)
    }
}

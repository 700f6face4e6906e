//! The HTTP/1.1 accept loop shared by the main and admin listeners: header
//! timeout (slow clients cannot hold a connection before their request),
//! connection cap, client address on every request, graceful shutdown.

use hyper_util::rt::{TokioIo, TokioTimer};
use palaver_signaling::http::PeerAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Time given to plain HTTP connections to finish at shutdown.
    pub shutdown_timeout: Duration,
}

/// A TCP stream that counts itself among the open connections until it is
/// dropped, including after an upgrade to WebSocket.
struct Counted {
    inner: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown`, then gives open plain HTTP
/// connections `shutdown_timeout` to finish. Upgraded connections are the
/// application's to close.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    opts: HttpOptions,
    shutdown: CancellationToken,
) {
    serve_tls(listener, app, opts, None, shutdown).await
}

/// Like [`serve`], with TLS on every connection when `tls` is given: the
/// handshake runs in the connection's task, bounded by its timeout.
pub async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    opts: HttpOptions,
    tls: Option<crate::tls::Tls>,
    shutdown: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let tasks = tokio_util::task::TaskTracker::new();
    let mut refused_logged = false;
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= opts.max_connections {
            if !refused_logged {
                tracing::warn!(
                    max = opts.max_connections,
                    "connection cap reached; refusing connections"
                );
                refused_logged = true;
            }
            drop(stream);
            continue;
        }
        refused_logged = false;
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        let counted = Counted {
            inner: stream,
            open: open.clone(),
        };
        let conn = Conn {
            app: app.clone(),
            addr,
            header_timeout: opts.header_timeout,
            hsts: tls.as_ref().and_then(|t| t.hsts.clone()),
            stop: shutdown.clone(),
        };
        match &tls {
            None => tasks.spawn(conn.run(counted)),
            Some(t) => tasks.spawn(conn.run_tls(counted, t.clone())),
        };
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(opts.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections did not finish before the shutdown timeout");
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    app: axum::Router,
    addr: std::net::SocketAddr,
    header_timeout: Duration,
    hsts: Option<axum::http::HeaderValue>,
    stop: CancellationToken,
}

impl Conn {
    async fn run_tls(self, stream: Counted, tls: crate::tls::Tls) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.run(stream).await,
            // Scanners and clients that refuse the certificate: routine.
            Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake failed"),
            Err(_) => tracing::debug!("tls handshake timed out"),
        }
    }

    async fn run<I>(self, stream: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            app,
            addr,
            header_timeout,
            hsts,
            stop,
        } = self;
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(addr));
                let response = app.clone().oneshot(req);
                let hsts = hsts.clone();
                async move {
                    let mut response = response.await?;
                    if let Some(value) = hsts {
                        response
                            .headers_mut()
                            .insert(axum::http::header::STRICT_TRANSPORT_SECURITY, value);
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::trace!(error = %e, "http connection ended with an error");
        }
    }
}

//! Accepting connections with limits: at most [`ConnectionLimits::max_connections`] at once (further
//! clients wait in the listen queue), request headers must arrive within the timeout, a connection
//! with no request in flight that moves no bytes for the timeout is closed, and so is one whose client
//! takes none of the response for the timeout (a download nobody reads). WebSocket connections leave
//! this count when they upgrade; `ws.rs` holds them to their own limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How many connections, and how long a silent one lives.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Headers must arrive within this; a connection idle this long (no request in flight), or whose
    /// client has taken no byte of the response for this long, is closed.
    pub timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting and lets open requests
/// finish (at most ten seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.timeout);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: let some close.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let activity = Activity::default();
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = TowerToHyperService::new(Tracked {
            inner: router.clone(),
            activity: activity.clone(),
        });
        let connection = graceful.watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        let timeout = limits.timeout;
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = activity.closable_after(timeout) => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
    Ok(())
}

/// When a connection last moved bytes, how many of its requests are in flight, and since when its
/// client has not taken what it was sent.
#[derive(Clone)]
struct Activity(Arc<ActivityInner>);

struct ActivityInner {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// 1 + the time (ms since `started`) a write first found the socket full; 0 while writes go.
    blocked_since: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(ActivityInner {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            blocked_since: AtomicU64::new(0),
        }))
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.0.started.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.0.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A write found the socket full: the client is not reading.
    fn write_blocked(&self) {
        let _ = self.0.blocked_since.compare_exchange(
            0,
            self.now_ms() + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn wrote(&self) {
        self.0.blocked_since.store(0, Ordering::Relaxed);
        self.touch();
    }

    /// Completes once no request has been in flight and no byte has moved for `timeout`, or once the
    /// client has taken no byte of a response for `timeout`.
    async fn closable_after(&self, timeout: Duration) {
        loop {
            let now = self.now_ms();
            let idle =
                Duration::from_millis(now.saturating_sub(self.0.last_ms.load(Ordering::Relaxed)));
            if idle >= timeout && self.0.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            let blocked = match self.0.blocked_since.load(Ordering::Relaxed) {
                0 => Duration::ZERO,
                since => Duration::from_millis(now.saturating_sub(since - 1)),
            };
            if blocked >= timeout {
                return;
            }
            // A block that starts while this sleeps is noticed within another `timeout`.
            let mut wait = timeout;
            if self.0.in_flight.load(Ordering::Relaxed) == 0 {
                wait = wait.min(timeout.saturating_sub(idle));
            }
            if !blocked.is_zero() {
                wait = wait.min(timeout.saturating_sub(blocked));
            }
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }
}

/// An IO that records its activity.
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => self.activity.wrote(),
            Poll::Pending => self.activity.write_blocked(),
            _ => {}
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router, counting the connection's requests in flight.
#[derive(Clone)]
struct Tracked {
    inner: Router,
    activity: Activity,
}

impl<B> tower::Service<axum::http::Request<B>> for Tracked
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let activity = self.activity.clone();
        activity.0.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut router = self.inner.clone();
        Box::pin(async move {
            let response =
                tower::Service::call(&mut router, request.map(axum::body::Body::new)).await;
            activity.0.in_flight.fetch_sub(1, Ordering::Relaxed);
            activity.touch();
            response
        })
    }
}

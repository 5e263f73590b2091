//! Serving HTTP/1.1 with the limits a hostile or broken peer needs: a cap on open
//! connections, a deadline for each request head, a deadline for each stretch of a request
//! body, an idle timeout for keep-alive connections, and a net that turns a panicking handler
//! into `500 M_UNKNOWN`. The client API serves plain TCP with [`serve`]; federation serves
//! TLS connections and overlay streams one by one with [`serve_connection`]. Each counts what
//! it refuses through its own [`Refusals`].
//!
//! It knows HTTP and tokio only: no Matrix rules, no storage, no overlay.
//!
//! Topology of [`serve`]: one accept loop owns the listener, a semaphore of
//! [`ServeConfig::max_connections`] permits and a `JoinSet` of connection tasks (so ending the
//! loop ends them). A connection that finds no permit is answered `503 M_LIMIT_EXCEEDED` and
//! closed by a short-lived task of its own (at most [`MAX_REFUSERS`] at once; past that it is
//! closed unanswered). Each admitted connection runs hyper's HTTP/1.1 server over [`Timed`],
//! which cuts the connection when, with no request being handled, it stays silent past the
//! idle timeout or sends a request head more slowly than the header timeout allows. While a
//! handler runs (a `/sync` long-poll, say) no connection timer applies; the request body has
//! its own deadline ([`DeadlineBody`]), renewed by every chunk that arrives.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, HttpBody},
    extract::ConnectInfo,
    http::Request,
};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
    time::{Instant, Sleep},
};
use tower::ServiceExt;
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};
use tracing::{debug, error, warn};

/// What a refused or cut request or connection did wrong (or what went wrong with it).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// A handler panicked; the peer got `500 M_UNKNOWN`.
    Panic,
    /// The connection (or stream) came over the cap.
    ConnectionCap,
    /// The request head did not arrive within the header timeout.
    HeaderTimeout,
    /// A keep-alive connection stayed idle past the idle timeout.
    IdleTimeout,
    /// The request body did not arrive within the body timeout.
    BodyTimeout,
}

/// Where a listener counts what it refuses.
pub trait Refusals: Send + Sync + 'static {
    /// Counts one refusal.
    fn refuse(&self, reason: Refusal);
}

/// The layer that turns a panic in a handler into `500 M_UNKNOWN`, logged and counted, so
/// that one bad request costs one answer and never the connection or the process.
pub fn panic_net(refusals: Arc<dyn Refusals>) -> CatchPanicLayer<PanicNet> {
    CatchPanicLayer::custom(PanicNet(refusals))
}

/// Answers a request whose handler panicked (see [`panic_net`]).
#[derive(Clone)]
pub struct PanicNet(Arc<dyn Refusals>);

impl ResponseForPanic for PanicNet {
    type ResponseBody = Body;

    fn response_for_panic(
        &mut self,
        panic: Box<dyn std::any::Any + Send + 'static>,
    ) -> http::Response<Body> {
        self.0.refuse(Refusal::Panic);
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic without a message".to_owned());
        error!(%detail, "handler panicked");
        let mut response = http::Response::new(Body::from(
            r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#,
        ));
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Connections over the cap being answered at once; more are closed unanswered.
pub const MAX_REFUSERS: usize = 256;
/// How long a connection over the cap is kept to read its request before it is closed.
const REFUSER_LINGER: Duration = Duration::from_secs(1);

/// The connection limits of a listener.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long a client may take to send a request head, from its first byte.
    pub header_timeout: Duration,
    /// How long a request body may go without a byte arriving.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// The most connections open at once; more are answered `503` and closed.
    pub max_connections: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// The answer to a connection over the cap.
fn over_cap_response() -> Vec<u8> {
    let body =
        r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many connections","retry_after_ms":1000}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\naccess-control-allow-origin: *\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// the request they are on. Dropping the returned future (aborting its task) closes every
/// connection at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServeConfig,
    metrics: Arc<dyn Refusals>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let refusers = Arc::new(Semaphore::new(MAX_REFUSERS));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most often: wait a little rather than spin.
                warn!(error = %e, "client API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.refuse(Refusal::ConnectionCap);
            if let Ok(refuser) = refusers.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(refuser);
                });
            }
            continue;
        };
        let app = app.clone();
        let config = config.clone();
        let metrics = metrics.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let stop = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            let peer_info = move |request: &mut Request<Body>| {
                request.extensions_mut().insert(ConnectInfo(peer));
            };
            if let Err(e) = serve_connection(stream, app, &config, metrics, peer_info, stop).await {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// Answers a connection over the cap and closes it. The answer waits for the request head
/// (clients take an answer before their request as a broken connection), and what else the
/// client sends is read until the close, so that the close does not reset the connection
/// before the answer is read.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(REFUSER_LINGER, async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        stream.write_all(&over_cap_response()).await?;
        stream.shutdown().await?;
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Serves `app` on one connection (a TCP or TLS connection, an overlay stream) under
/// `config`'s head, body and idle timeouts, `extend` adding what the handlers should know of
/// the peer to every request. When `stop` completes, the request under way is finished and
/// the connection closed. Connection caps are the caller's: it holds its permit for as long as
/// this runs.
pub async fn serve_connection<IO, F>(
    io: IO,
    app: Router,
    config: &ServeConfig,
    metrics: Arc<dyn Refusals>,
    extend: F,
    stop: impl Future<Output = ()>,
) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(&mut Request<Body>) + Clone + Send + Sync + 'static,
{
    let activity = Arc::new(Activity::default());
    let io = Timed::new(io, activity.clone(), config, metrics.clone());
    let body_timeout = config.body_timeout;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = Busy::new(activity.clone());
        let metrics = metrics.clone();
        let mut request =
            request.map(|body| Body::new(DeadlineBody::new(body, body_timeout, metrics.clone())));
        extend(&mut request);
        let app = app.clone();
        async move {
            let response = match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|body| Body::new(BusyBody { body, _busy: busy })))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::pin!(stop);
    tokio::select! {
        result = connection.as_mut() => result,
        () = &mut stop => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// What a connection's reader needs to know of the requests on it.
#[derive(Debug, Default)]
struct Activity {
    /// Requests being handled (or their responses written) now.
    busy: AtomicUsize,
    /// Requests finished so far: a change means the connection has just become idle.
    finished: AtomicU64,
    /// The reader parked while a request was busy: woken when it ends, so the idle timer
    /// starts even when the peer sends nothing more.
    reader: Mutex<Option<Waker>>,
}

impl Activity {
    /// Wakes the parked reader, if any.
    fn wake_reader(&self) {
        let waker = self.reader.lock().map(|mut w| w.take()).unwrap_or_default();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Parks the reader until the busy request ends.
    fn park_reader(&self, waker: &Waker) {
        if let Ok(mut slot) = self.reader.lock() {
            *slot = Some(waker.clone());
        }
    }
}

/// Marks a request as being handled until its response body is dropped (written or
/// abandoned).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        self.0.wake_reader();
    }
}

/// A response body that keeps its request marked busy until it is dropped.
struct BusyBody {
    body: Body,
    _busy: Busy,
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The request body went longer than the body timeout without a byte arriving.
#[derive(Debug, thiserror::Error)]
#[error("request body timed out")]
pub struct BodyTimedOut;

/// A request body that fails with [`BodyTimedOut`] when no chunk arrives for the body timeout.
struct DeadlineBody {
    body: Incoming,
    timeout: Duration,
    /// Armed when a read has to wait; disarmed by every chunk.
    sleep: Option<Pin<Box<Sleep>>>,
    metrics: Arc<dyn Refusals>,
}

impl DeadlineBody {
    fn new(body: Incoming, timeout: Duration, metrics: Arc<dyn Refusals>) -> Self {
        Self {
            body,
            timeout,
            sleep: None,
            metrics,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.sleep = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        this.metrics.refuse(Refusal::BodyTimeout);
        Poll::Ready(Some(Err(BodyTimedOut.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Where a connection is between requests, as its reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Nothing received since the last request finished (or the connection opened).
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// A request is being handled; no connection timer applies.
    Busy,
}

/// A stream whose reads fail with `TimedOut` when, between requests, the peer stays idle
/// past the idle timeout or takes longer than the header timeout over a request head.
struct Timed<IO> {
    stream: IO,
    activity: Arc<Activity>,
    /// `Activity::finished` when last looked at.
    finished_seen: u64,
    waiting: Waiting,
    header_timeout: Duration,
    idle_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    metrics: Arc<dyn Refusals>,
}

impl<IO> Timed<IO> {
    fn new(
        stream: IO,
        activity: Arc<Activity>,
        config: &ServeConfig,
        metrics: Arc<dyn Refusals>,
    ) -> Self {
        Self {
            stream,
            activity,
            finished_seen: 0,
            waiting: Waiting::Idle,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            sleep: Box::pin(tokio::time::sleep(config.idle_timeout)),
            metrics,
        }
    }

    /// Moves to `waiting`, restarting the timer that goes with it.
    fn enter(&mut self, waiting: Waiting) {
        if self.waiting == waiting {
            return;
        }
        self.waiting = waiting;
        let timeout = match waiting {
            Waiting::Idle => self.idle_timeout,
            Waiting::Head => self.header_timeout,
            Waiting::Busy => return,
        };
        self.sleep.as_mut().reset(Instant::now() + timeout);
    }

    /// Catches up with the requests handled since the last read.
    fn observe(&mut self) {
        if self.activity.busy.load(Ordering::Acquire) > 0 {
            self.enter(Waiting::Busy);
            return;
        }
        let finished = self.activity.finished.load(Ordering::Acquire);
        if finished != self.finished_seen {
            self.finished_seen = finished;
            self.waiting = Waiting::Busy;
            self.enter(Waiting::Idle);
        } else if self.waiting == Waiting::Busy {
            // A request whose handler never ran to a response (its body dropped unread, say).
            self.enter(Waiting::Idle);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Timed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.observe();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.waiting == Waiting::Idle {
                    this.enter(Waiting::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.waiting == Waiting::Busy {
                    this.activity.park_reader(cx.waker());
                    // The request may have ended between `observe` and parking.
                    this.observe();
                    if this.waiting == Waiting::Busy {
                        return Poll::Pending;
                    }
                }
                ready!(this.sleep.as_mut().poll(cx));
                let reason = match this.waiting {
                    Waiting::Head => Refusal::HeaderTimeout,
                    Waiting::Idle | Waiting::Busy => Refusal::IdleTimeout,
                };
                this.metrics.refuse(reason);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    match reason {
                        Refusal::HeaderTimeout => "request head timed out",
                        _ => "idle connection timed out",
                    },
                )))
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Timed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

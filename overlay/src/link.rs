//! Peer links: one QUIC connection per neighbour, set up with TLS and a hello.
//!
//! ```text
//!  dial / accept task ──(Established)──► driver ──registers──► three link tasks:
//!    control reader : length-prefixed frames from the control stream ─► driver
//!    datagram reader: QUIC datagrams ─► driver; reports the link closed when the connection ends
//!    control writer : driver ─► bounded control queue ─► control stream (never dropped; a full
//!                     queue means the peer stalled, and the link is closed)
//!  traffic          : the driver hands datagrams straight to quinn, whose datagram send buffer
//!                     ([`TRAFFIC_QUEUE_BYTES`]) is the per-peer traffic queue; when it is full
//!                     the new datagram is dropped and counted (no task hop per packet)
//! ```
//!
//! The dialler opens the one bidirectional stream and writes its hello; the acceptor reads it,
//! negotiates, answers with its own hello or closes the connection with [`close::HELLO_REFUSED`]
//! and the reason as close text, which the dialler logs and counts the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::driver::metrics::Metrics;
use crate::hello::{Hello, HelloError, Negotiated};
use crate::identity::PublicKey;
use crate::tls::{self, Expect, Identity, TlsError};

/// Largest control frame accepted or sent, in bytes.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// Control frames queued per peer before the peer counts as stalled and is dropped.
pub const CONTROL_QUEUE_LIMIT: usize = 256;

/// Bytes of traffic datagrams queued per peer (in each direction) before new ones are dropped.
pub const TRAFFIC_QUEUE_BYTES: usize = 1024 * 1024;

/// Time allowed for TLS and the hello together.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A link with no packets for this long is closed.
pub const LINK_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Keep-alive interval; well under the idle timeout so a quiet link survives one lost probe.
pub const LINK_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// UDP payload size assumed on every link. It leaves room for a 1,200-byte session packet, the
/// routing header and the link's own QUIC overhead in one datagram.
pub const LINK_MTU: u16 = 1400;

/// Application close codes on peer links.
pub mod close {
    /// Orderly shutdown.
    pub const NORMAL: u32 = 0;
    /// The hello was refused; the close text gives the reason label.
    pub const HELLO_REFUSED: u32 = 1;
    /// Another link to the same peer was kept instead.
    pub const DUPLICATE: u32 = 2;
    /// The peer broke the protocol (garbage, oversized frame).
    pub const PROTOCOL: u32 = 3;
    /// The peer did not read its control frames fast enough.
    pub const STALLED: u32 = 4;
    /// The peer is this node.
    pub const SELF_LINK: u32 = 5;
}

/// How a link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// Dialled after a LAN discovery beacon.
    Lan,
    /// Dialled because the configuration names the peer.
    Static,
    /// Accepted from a peer that dialled us.
    Inbound,
}

impl LinkKind {
    /// Short label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Lan => "lan",
            Self::Static => "static",
            Self::Inbound => "inbound",
        }
    }
}

/// Identifies one link (not one node: a node may be re-linked under a new id). The router's
/// own type, so the driver hands it over as is.
pub use crate::router::PeerId;

/// Why setting up a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// quinn refused to start the connection.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// TLS setup or peer identity failed.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// Our side refused the peer's hello.
    #[error("hello refused: {0}")]
    Hello(#[from] HelloError),
    /// The peer refused our hello, giving this reason.
    #[error("refused by peer: {0}")]
    RefusedByPeer(String),
    /// The control stream broke or carried a bad frame.
    #[error("control stream: {0}")]
    Stream(String),
    /// The handshake took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("handshake timed out")]
    Timeout,
}

impl LinkError {
    /// Short label used in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Connection(quinn::ConnectionError::TransportError(_)) => "tls",
            Self::Connection(_) => "connection",
            Self::Tls(_) => "tls",
            Self::Hello(e) => e.label(),
            Self::RefusedByPeer(_) => "refused_by_peer",
            Self::Stream(_) => "stream",
            Self::Timeout => "timeout",
        }
    }
}

/// A link whose TLS handshake and hello succeeded, not yet registered.
#[derive(Debug)]
pub struct Established {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The peer's node key, from its certificate.
    pub key: PublicKey,
    /// How the link came to be.
    pub kind: LinkKind,
    /// Whether this node dialled.
    pub dialled: bool,
    /// The negotiated version and capabilities.
    pub negotiated: Negotiated,
    /// Sending half of the control stream.
    pub send: quinn::SendStream,
    /// Receiving half of the control stream.
    pub recv: quinn::RecvStream,
}

/// Transport settings shared by every peer link.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.initial_mtu(LINK_MTU)
        .min_mtu(LINK_MTU)
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(Some(TRAFFIC_QUEUE_BYTES))
        .datagram_send_buffer_size(TRAFFIC_QUEUE_BYTES)
        .keep_alive_interval(Some(LINK_KEEP_ALIVE));
    if let Ok(idle) = quinn::IdleTimeout::try_from(LINK_IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Builds the peer endpoint bound to `bind`, accepting links from any node key.
pub fn endpoint(identity: &Identity, bind: SocketAddr) -> Result<quinn::Endpoint, LinkSetupError> {
    let mut server = tls::server_config(identity, &[tls::PEER_ALPN.to_vec()])?;
    server.transport_config(Arc::new(transport_config()));
    Ok(quinn::Endpoint::server(server, bind)?)
}

/// Errors while creating the peer endpoint.
#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// Binding the UDP socket failed.
    #[error("bind: {0}")]
    Io(#[from] std::io::Error),
}

/// Dials `addr`, checks its key against `expect`, and exchanges hellos.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    expect: Expect,
    addr: SocketAddr,
    kind: LinkKind,
    hello: Hello,
) -> Result<Established, LinkError> {
    let run = async {
        let mut config = tls::client_config(identity, expect, tls::PEER_ALPN)?;
        config.transport_config(Arc::new(transport_config()));
        let conn = endpoint
            .connect_with(config, addr, tls::server_name())?
            .await?;
        let key = tls::peer_key(&conn)?;
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, &hello.encode())
            .await
            .map_err(|e| stream_err(&conn, e))?;
        let theirs = match read_frame(&mut recv).await {
            Ok(bytes) => Hello::decode(&bytes).map_err(HelloError::from)?,
            Err(e) => return Err(stream_err(&conn, e)),
        };
        let negotiated = hello.negotiate(&theirs).inspect_err(|e| refuse(&conn, e))?;
        Ok(Established {
            conn,
            key,
            kind,
            dialled: true,
            negotiated,
            send,
            recv,
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| LinkError::Timeout)?
}

/// Completes an inbound connection: TLS, the dialler's hello, our answer.
pub async fn accept(incoming: quinn::Incoming, hello: Hello) -> Result<Established, LinkError> {
    let run = async {
        let conn = incoming.await?;
        let key = tls::peer_key(&conn)?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let theirs = match read_frame(&mut recv).await {
            Ok(bytes) => Hello::decode(&bytes)
                .map_err(HelloError::from)
                .inspect_err(|e| refuse(&conn, e))?,
            Err(e) => return Err(stream_err(&conn, e)),
        };
        let negotiated = hello.negotiate(&theirs).inspect_err(|e| refuse(&conn, e))?;
        write_frame(&mut send, &hello.encode())
            .await
            .map_err(|e| stream_err(&conn, e))?;
        Ok(Established {
            conn,
            key,
            kind: LinkKind::Inbound,
            dialled: false,
            negotiated,
            send,
            recv,
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| LinkError::Timeout)?
}

/// Closes `conn` because its hello was refused, naming the reason for the other side.
fn refuse(conn: &quinn::Connection, error: &HelloError) {
    tracing::warn!(remote = %conn.remote_address(), reason = %error, "refusing peer link");
    conn.close(close::HELLO_REFUSED.into(), error.label().as_bytes());
}

/// Turns a control stream failure into the most telling error: the peer's refusal if it closed
/// the connection with one.
fn stream_err(conn: &quinn::Connection, error: FrameError) -> LinkError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == close::HELLO_REFUSED.into() =>
        {
            LinkError::RefusedByPeer(String::from_utf8_lossy(&c.reason).into_owned())
        }
        Some(other) => LinkError::Connection(other),
        None => LinkError::Stream(error.to_string()),
    }
}

/// Errors reading or writing a control frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended.
    #[error("stream: {0}")]
    Stream(String),
    /// The announced length exceeds [`MAX_CONTROL_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    Oversized(usize),
}

/// Writes one length-prefixed control frame.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &[u8]) -> Result<(), FrameError> {
    if frame.len() > MAX_CONTROL_FRAME {
        return Err(FrameError::Oversized(frame.len()));
    }
    let len = u32::try_from(frame.len()).map_err(|_| FrameError::Oversized(frame.len()))?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))?;
    send.write_all(frame)
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))
}

/// Reads one length-prefixed control frame, refusing lengths over [`MAX_CONTROL_FRAME`] before
/// reading the body.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Bytes, FrameError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_CONTROL_FRAME {
        return Err(FrameError::Oversized(len));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))?;
    Ok(Bytes::from(body))
}

/// Which path a frame arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The reliable control stream.
    Control,
    /// A QUIC datagram.
    Datagram,
}

/// What link tasks tell the driver.
#[derive(Debug)]
pub enum LinkInput {
    /// A frame arrived from `peer`.
    Frame {
        /// The link.
        peer: PeerId,
        /// The frame's bytes.
        bytes: Bytes,
        /// Where it arrived.
        channel: Channel,
    },
    /// The link's connection ended.
    Closed {
        /// The link.
        peer: PeerId,
        /// Why, for logs.
        reason: String,
    },
}

/// The driver's handle on a running link's writers.
#[derive(Debug, Clone)]
pub struct LinkTx {
    control: mpsc::Sender<Bytes>,
    conn: quinn::Connection,
    metrics: Arc<Metrics>,
}

/// What happened to a frame handed to [`LinkTx::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Queued for sending.
    Yes,
    /// A traffic frame dropped, for the given reason.
    Dropped(&'static str),
    /// A control frame could not be queued: the peer has stalled and must be dropped.
    Stalled,
}

impl LinkTx {
    /// Queues a frame without waiting.
    pub fn send(&self, bytes: Bytes, reliable: bool) -> Queued {
        if reliable {
            return match self.control.try_send(bytes) {
                Ok(()) => Queued::Yes,
                Err(_) => Queued::Stalled,
            };
        }
        let len = bytes.len();
        // quinn would make room by dropping the oldest datagram; drop the newest instead, counted.
        if self.conn.datagram_send_buffer_space() < len {
            return Queued::Dropped("traffic_queue_full");
        }
        match self.conn.send_datagram(bytes) {
            Ok(()) => {
                self.metrics.frame_out(Channel::Datagram, len);
                Queued::Yes
            }
            Err(quinn::SendDatagramError::TooLarge) => Queued::Dropped("datagram_too_large"),
            Err(_) => Queued::Dropped("link_closed"),
        }
    }
}

/// Starts the three tasks of a registered link and returns its writers.
pub fn spawn(
    peer: PeerId,
    established: Established,
    inputs: mpsc::Sender<LinkInput>,
    metrics: Arc<Metrics>,
) -> LinkTx {
    let Established {
        conn,
        mut send,
        mut recv,
        ..
    } = established;
    let (control_tx, mut control_rx) = mpsc::channel::<Bytes>(CONTROL_QUEUE_LIMIT);

    // Control reader: a bad frame is the peer's fault, so the whole link goes.
    let (c, tx, m) = (conn.clone(), inputs.clone(), metrics.clone());
    tokio::spawn(async move {
        loop {
            match read_frame(&mut recv).await {
                Ok(bytes) => {
                    m.frame_in(Channel::Control, bytes.len());
                    let input = LinkInput::Frame {
                        peer,
                        bytes,
                        channel: Channel::Control,
                    };
                    if tx.send(input).await.is_err() {
                        break;
                    }
                }
                Err(FrameError::Oversized(len)) => {
                    m.drop_reason("oversized_frame");
                    tracing::warn!(
                        ?peer,
                        len,
                        "peer sent an oversized control frame; dropping it"
                    );
                    c.close(close::PROTOCOL.into(), b"oversized frame");
                    break;
                }
                Err(FrameError::Stream(e)) => {
                    tracing::debug!(?peer, error = %e, "control stream ended");
                    c.close(close::PROTOCOL.into(), b"control stream ended");
                    break;
                }
            }
        }
    });

    // Datagram reader; the one task that reports the end of the link.
    let (c, tx, m) = (conn.clone(), inputs, metrics.clone());
    tokio::spawn(async move {
        let reason = loop {
            match c.read_datagram().await {
                Ok(bytes) => {
                    m.frame_in(Channel::Datagram, bytes.len());
                    let input = LinkInput::Frame {
                        peer,
                        bytes,
                        channel: Channel::Datagram,
                    };
                    if tx.send(input).await.is_err() {
                        break "driver stopped".to_owned();
                    }
                }
                Err(e) => break e.to_string(),
            }
        };
        let _ = tx.send(LinkInput::Closed { peer, reason }).await;
    });

    let m = metrics.clone();
    tokio::spawn(async move {
        while let Some(frame) = control_rx.recv().await {
            let len = frame.len();
            if write_frame(&mut send, &frame).await.is_err() {
                break;
            }
            m.frame_out(Channel::Control, len);
        }
    });

    LinkTx {
        control: control_tx,
        conn,
        metrics,
    }
}

#[cfg(test)]
mod tests;

//! Outbound requests, every one signed with `X-Matrix`, the transport chosen by the destination's
//! name: a 64-hex name is reached over an overlay session (HTTP/1.1, one bi-directional stream
//! per request, one cached session per node); any other name over HTTPS (see
//! [`crate::https`]: discovery, rustls, pooled HTTP/1.1 connections).
//!
//! A hex name is a home, served by the replicas its document lists ([`crate::homes`]): a
//! request goes to the replica that answered last, and to the others in order while none
//! answers. A replica that answers (even with an error) ends the search.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use grove_overlay::{driver::OverlayHandle, tls::keys::NodeKey};
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use ruma::{OwnedServerName, ServerName, api::federation::authentication::XMatrix};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::{error::RequestError, homes::Homes, https::Https, keys};

/// The ALPN of federation sessions.
pub const ALPN: &[u8] = b"matrix";

/// The longest one request may take, session set-up included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest one attempt (session set-up, or one exchange) may take.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(12);

/// The largest response body accepted.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Sends signed requests to other servers, over the overlay or HTTPS.
#[derive(Clone)]
pub struct Client {
    overlay: OverlayHandle,
    key: Arc<grove_server::NodeKey>,
    origin: OwnedServerName,
    sessions: Arc<Mutex<HashMap<NodeKey, quinn::Connection>>>,
    https: Arc<Https>,
    /// Where hex-named homes are served; without it a hex name is its only node.
    homes: Option<Arc<Homes>>,
}

impl Client {
    /// A client signing as `origin` with `key`, trusting the webpki roots for HTTPS.
    pub fn new(
        overlay: OverlayHandle,
        key: Arc<grove_server::NodeKey>,
        origin: OwnedServerName,
    ) -> Self {
        let tls = match crate::tls::client_config(&[]) {
            Ok(config) => Some(config),
            Err(e) => {
                warn!(error = %e, "no TLS client configuration: HTTPS federation is off");
                None
            }
        };
        Self {
            overlay,
            key,
            origin,
            sessions: Arc::default(),
            https: Arc::new(Https::new(tls)),
            homes: None,
        }
    }

    /// The overlay the client sends over.
    pub fn overlay(&self) -> &OverlayHandle {
        &self.overlay
    }

    /// The same client, sending requests for a hex-named home to the replicas `homes` knows.
    pub fn with_homes(mut self, homes: Arc<Homes>) -> Self {
        self.homes = Some(homes);
        self
    }

    /// The same client, trusting for HTTPS what `config` trusts (see
    /// [`crate::tls::client_config`]), with a fresh connection pool.
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.https = Arc::new(Https::new(Some(config)));
        self
    }

    /// Sends a request and returns the JSON answer of a 2xx response.
    pub async fn request(
        &self,
        destination: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RequestError> {
        let response = self
            .request_raw(destination, method, path, body, MAX_RESPONSE_BYTES)
            .await?;
        serde_json::from_slice(response.body()).map_err(|e| RequestError::BadAnswer(e.to_string()))
    }

    /// Sends a request and returns a 2xx response whole, its body at most `max_bytes` long
    /// ([`RequestError::TooLarge`] past that).
    pub async fn request_raw(
        &self,
        destination: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        max_bytes: usize,
    ) -> Result<http::Response<Bytes>, RequestError> {
        let request = self.signed(destination, method, path, body)?;
        self.dispatch(destination, request, max_bytes).await
    }

    /// Sends a request for `destination` to one node (a replica of it) and returns the JSON
    /// answer of a 2xx response.
    pub async fn request_at(
        &self,
        node: NodeKey,
        destination: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RequestError> {
        let mut request = self.signed(destination, method, path, body)?;
        request.headers_mut().insert(
            header::HOST,
            http::HeaderValue::from_str(destination.as_str())
                .map_err(|e| RequestError::Http(e.to_string()))?,
        );
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.send(node, request, MAX_RESPONSE_BYTES),
        )
        .await
        .map_err(|_| RequestError::Timeout)??;
        serde_json::from_slice(response.body()).map_err(|e| RequestError::BadAnswer(e.to_string()))
    }

    /// The request, signed with `X-Matrix` for `destination`.
    fn signed(
        &self,
        destination: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Request<Vec<u8>>, RequestError> {
        let body = match body {
            Some(v) => serde_json::to_vec(v).map_err(|e| RequestError::Http(e.to_string()))?,
            None => Vec::new(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(body)
            .map_err(|e| RequestError::Http(e.to_string()))?;
        let auth = XMatrix::sign_http_request(
            &request,
            ruma::api::federation::authentication::XMatrixSigningInput::new(
                self.origin.clone(),
                destination.to_owned(),
                self.key.key_pair(),
            ),
        )
        .map_err(|e| RequestError::Http(format!("signing: {e}")))?;
        let value = http::HeaderValue::from_str(&auth.to_string())
            .map_err(|e| RequestError::Http(e.to_string()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
        if !request.body().is_empty() {
            request.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        Ok(request)
    }

    /// An unsigned `GET` (the key server answers anyone), its JSON answer at most
    /// `max_bytes` long.
    pub async fn get_public(
        &self,
        destination: &ServerName,
        path: &str,
        max_bytes: usize,
    ) -> Result<Value, RequestError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(Vec::new())
            .map_err(|e| RequestError::Http(e.to_string()))?;
        let response = self.dispatch(destination, request, max_bytes).await?;
        serde_json::from_slice(response.body()).map_err(|e| RequestError::BadAnswer(e.to_string()))
    }

    /// An unsigned `GET` to one node (a replica of `host`, whatever replica answered last),
    /// its JSON answer at most `max_bytes` long.
    pub async fn get_public_at(
        &self,
        node: NodeKey,
        host: &ServerName,
        path: &str,
        max_bytes: usize,
    ) -> Result<Value, RequestError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, host.as_str())
            .body(Vec::new())
            .map_err(|e| RequestError::Http(e.to_string()))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.send(node, request, max_bytes))
            .await
            .map_err(|_| RequestError::Timeout)??;
        serde_json::from_slice(response.body()).map_err(|e| RequestError::BadAnswer(e.to_string()))
    }

    /// Sends over the transport `destination`'s name calls for, with the `Host` it calls for,
    /// within [`REQUEST_TIMEOUT`] per node tried.
    async fn dispatch(
        &self,
        destination: &ServerName,
        mut request: Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<http::Response<Bytes>, RequestError> {
        if keys::is_hex_name(destination) {
            request.headers_mut().insert(
                header::HOST,
                http::HeaderValue::from_str(destination.as_str())
                    .map_err(|e| RequestError::Http(e.to_string()))?,
            );
            return self.send_to_home(destination, request, max_bytes).await;
        }
        let endpoint = self.https.resolve(destination).await;
        request.headers_mut().insert(
            header::HOST,
            http::HeaderValue::from_str(&endpoint.authority)
                .map_err(|e| RequestError::Http(e.to_string()))?,
        );
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.https.send(&endpoint, request, max_bytes),
        )
        .await
        .map_err(|_| RequestError::Timeout)?
    }

    /// Sends to the replicas of the hex-named `home` in turn until one answers. When none
    /// does and no document of the home is held, the home is looked up on the ring and its
    /// replicas there are tried too.
    async fn send_to_home(
        &self,
        home: &ServerName,
        request: Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<http::Response<Bytes>, RequestError> {
        let mut nodes = match &self.homes {
            Some(homes) => homes.replicas_of(home).await,
            None => keys::node_key(home).into_iter().collect(),
        };
        let mut tried = Vec::new();
        let mut looked_up = false;
        let mut failure = RequestError::NotOverlay(home.to_string());
        loop {
            for node in std::mem::take(&mut nodes) {
                tried.push(node);
                let outcome = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    self.send(node, request.clone(), max_bytes),
                )
                .await
                .unwrap_or(Err(RequestError::Timeout));
                let answered = match &outcome {
                    Ok(_) | Err(RequestError::Remote { .. } | RequestError::TooLarge) => true,
                    Err(_) => false,
                };
                if answered {
                    if let Some(homes) = &self.homes {
                        homes.answered(home, node);
                    }
                    return outcome;
                }
                if let Err(e) = outcome {
                    debug!(%home, %node, error = %e, "replica did not answer");
                    failure = e;
                }
            }
            let Some(homes) = self.homes.as_ref().filter(|_| !looked_up) else {
                return Err(failure);
            };
            looked_up = true;
            if homes.document(home).await.is_some()
                || homes.look_up(&self.overlay, home).await.is_none()
            {
                return Err(failure);
            }
            nodes = homes.replicas_of(home).await;
            nodes.retain(|n| !tried.contains(n));
        }
    }

    async fn send(
        &self,
        node: NodeKey,
        request: Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<http::Response<Bytes>, RequestError> {
        // One retry on a fresh session: a cached one may have died since it was last used (its
        // node restarted, say) without this side hearing of it yet.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let connection = self.session(node).await?;
            let outcome = tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                exchange(&connection, request.clone(), max_bytes),
            )
            .await
            .unwrap_or(Err(RequestError::Timeout));
            match outcome {
                Ok(answer) => return answer,
                Err(e) => {
                    debug!(peer = %node, error = %e, "federation session failed");
                    self.drop_session(&node, &connection).await;
                    if attempt >= 2 {
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn session(&self, node: NodeKey) -> Result<quinn::Connection, RequestError> {
        if let Some(c) = self.sessions.lock().await.get(&node)
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        // Opened without the lock held: one unreachable node must not hold up the others.
        let connection =
            tokio::time::timeout(ATTEMPT_TIMEOUT, self.overlay.open_session(node, ALPN))
                .await
                .map_err(|_| RequestError::Timeout)?
                .map_err(|e| RequestError::Session(e.to_string()))?;
        self.sessions.lock().await.insert(node, connection.clone());
        Ok(connection)
    }

    async fn drop_session(&self, node: &NodeKey, connection: &quinn::Connection) {
        let mut sessions = self.sessions.lock().await;
        if sessions
            .get(node)
            .is_some_and(|c| c.stable_id() == connection.stable_id())
        {
            sessions.remove(node);
        }
        connection.close(0u32.into(), b"failed");
    }

    /// Forgets the cached session to `node` (after it went away).
    pub async fn forget(&self, node: &NodeKey) {
        self.sessions.lock().await.remove(node);
    }
}

/// One request over a new stream of `connection`. The outer error means the stream failed
/// (worth a retry on a new session); the inner one is the server's answer.
async fn exchange(
    connection: &quinn::Connection,
    request: Request<Vec<u8>>,
    max_bytes: usize,
) -> Result<Result<http::Response<Bytes>, RequestError>, RequestError> {
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| RequestError::Session(e.to_string()))?;
    let io = TokioIo::new(tokio::io::join(recv, send));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| RequestError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(request.map(|b| Full::new(Bytes::from(b))))
        .await
        .map_err(|e| RequestError::Http(e.to_string()));
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = match Limited::new(body, max_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        // The answer is whole but too long: another session would get the same.
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(Err(RequestError::TooLarge));
        }
        Err(e) => return Err(RequestError::Http(e.to_string())),
    };
    // With no request left the connection closes itself and finishes the stream.
    drop(sender);
    drop(driver);
    if !status.is_success() {
        return Ok(Err(RequestError::Remote {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        }));
    }
    Ok(Ok(http::Response::from_parts(parts, bytes)))
}

/// Percent-encodes one path segment (room IDs, event IDs, user IDs).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

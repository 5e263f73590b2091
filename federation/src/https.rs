//! Outbound HTTPS to servers with DNS names: server discovery (literal IP or explicit port,
//! then `/.well-known/matrix/server`, then port 8448; SRV records are not consulted), TLS with
//! rustls (SNI = the host, the certificate checked against the trusted roots), and a pool of
//! idle HTTP/1.1 connections per endpoint.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ruma::{OwnedServerName, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::error::RequestError;

/// The federation port when neither the name nor its delegation gives one.
pub const DEFAULT_PORT: u16 = 8448;

/// How long a discovery result is kept.
const RESOLVED_TTL: Duration = Duration::from_secs(3600);

/// How long a failed `.well-known` lookup is remembered (the name is used as it stands).
const FAILED_WELL_KNOWN_TTL: Duration = Duration::from_secs(300);

/// The longest a `.well-known` lookup may take.
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest `.well-known/matrix/server` document read.
const MAX_WELL_KNOWN_BYTES: usize = 64 * 1024;

/// Discovery results kept before expired ones are swept.
const MAX_RESOLVED: usize = 1024;

/// Idle connections kept per endpoint, at most.
const MAX_IDLE_PER_ENDPOINT: usize = 8;

/// Where requests for one server name go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host to connect to and to name in SNI (an IPv6 literal without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The `Host` header: the server name, or the delegated name.
    pub authority: String,
}

/// The sending half of one HTTP/1.1 connection over TLS.
type Connection = SendRequest<Full<Bytes>>;

/// The HTTPS side of the federation client.
pub(crate) struct Https {
    connector: Option<TlsConnector>,
    idle: Mutex<HashMap<Endpoint, Vec<Connection>>>,
    resolved: Mutex<HashMap<OwnedServerName, (Endpoint, Instant)>>,
}

impl Https {
    /// Connections trusting what `config` trusts; none at all without a configuration.
    pub(crate) fn new(config: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            connector: config.map(TlsConnector::from),
            idle: Mutex::default(),
            resolved: Mutex::default(),
        }
    }

    /// The endpoint for `name`, discovered once and then cached.
    pub(crate) async fn resolve(&self, name: &ServerName) -> Endpoint {
        if let Ok(resolved) = self.resolved.lock()
            && let Some((endpoint, until)) = resolved.get(name)
            && *until > Instant::now()
        {
            return endpoint.clone();
        }
        let (endpoint, ttl) = self.discover(name).await;
        if let Ok(mut resolved) = self.resolved.lock() {
            if resolved.len() >= MAX_RESOLVED {
                let now = Instant::now();
                resolved.retain(|_, (_, until)| *until > now);
                if resolved.len() >= MAX_RESOLVED {
                    resolved.clear();
                }
            }
            resolved.insert(name.to_owned(), (endpoint.clone(), Instant::now() + ttl));
        }
        endpoint
    }

    /// Server discovery per the spec, SRV records aside.
    async fn discover(&self, name: &ServerName) -> (Endpoint, Duration) {
        if let Some(endpoint) = direct(name) {
            return (endpoint, RESOLVED_TTL);
        }
        let host = name.host().to_owned();
        match tokio::time::timeout(WELL_KNOWN_TIMEOUT, self.well_known(&host)).await {
            Ok(Ok(delegated)) => {
                let endpoint = direct(&delegated).unwrap_or_else(|| Endpoint {
                    host: delegated.host().to_owned(),
                    port: DEFAULT_PORT,
                    authority: delegated.to_string(),
                });
                debug!(server = %name, ?endpoint, "delegated by .well-known");
                (endpoint, RESOLVED_TTL)
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                debug!(server = %name, error = %why, "no .well-known delegation");
                (
                    Endpoint {
                        host,
                        port: DEFAULT_PORT,
                        authority: name.to_string(),
                    },
                    FAILED_WELL_KNOWN_TTL,
                )
            }
        }
    }

    /// The server named by `https://<host>/.well-known/matrix/server` (redirects not followed).
    async fn well_known(&self, host: &str) -> Result<OwnedServerName, RequestError> {
        let endpoint = Endpoint {
            host: host.to_owned(),
            port: 443,
            authority: host.to_owned(),
        };
        let request = Request::builder()
            .method(Method::GET)
            .uri("/.well-known/matrix/server")
            .header(header::HOST, host)
            .body(Vec::new())
            .map_err(|e| RequestError::Http(e.to_string()))?;
        let response = self.send(&endpoint, request, MAX_WELL_KNOWN_BYTES).await?;
        let doc: serde_json::Value = serde_json::from_slice(response.body())
            .map_err(|e| RequestError::BadAnswer(format!(".well-known: {e}")))?;
        let server = doc["m.server"]
            .as_str()
            .ok_or_else(|| RequestError::BadAnswer(".well-known: no m.server".into()))?;
        ServerName::parse(server)
            .map_err(|e| RequestError::BadAnswer(format!(".well-known m.server: {e}")))
    }

    /// Sends `request` (its `Host` already set) to `endpoint`, on an idle connection when
    /// there is one, and returns a 2xx response whole, its body at most `max_bytes` long.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        request: Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<http::Response<Bytes>, RequestError> {
        loop {
            let (mut connection, reused) = match self.take_idle(endpoint) {
                Some(c) => (c, true),
                None => (self.dial(endpoint).await?, false),
            };
            let outcome = tokio::time::timeout(
                crate::client::ATTEMPT_TIMEOUT,
                exchange(&mut connection, request.clone(), max_bytes),
            )
            .await
            .unwrap_or(Err(RequestError::Timeout));
            match outcome {
                Ok((answer, whole)) => {
                    if whole {
                        self.put_idle(endpoint, connection);
                    }
                    return answer;
                }
                // An idle connection may have been closed by the server meanwhile: once more
                // on a fresh one.
                Err(e) if reused => {
                    debug!(host = %endpoint.host, error = %e, "pooled connection failed");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn take_idle(&self, endpoint: &Endpoint) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(endpoint)?;
        while let Some(connection) = list.pop() {
            if !connection.is_closed() {
                return Some(connection);
            }
        }
        None
    }

    fn put_idle(&self, endpoint: &Endpoint, connection: Connection) {
        if connection.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(endpoint.clone()).or_default();
            list.retain(|c| !c.is_closed());
            if list.len() < MAX_IDLE_PER_ENDPOINT {
                list.push(connection);
            }
        }
    }

    /// A new TLS connection to `endpoint`, its certificate checked for `endpoint.host`.
    async fn dial(&self, endpoint: &Endpoint) -> Result<Connection, RequestError> {
        let connector = self
            .connector
            .clone()
            .ok_or_else(|| RequestError::Tls("no TLS client configuration".into()))?;
        let server_name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| RequestError::Tls(format!("{}: {e}", endpoint.host)))?;
        let dial = async {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| {
                    RequestError::Session(format!("{}:{}: {e}", endpoint.host, endpoint.port))
                })?;
            let _ = tcp.set_nodelay(true);
            let tls = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| RequestError::Tls(format!("{}: {e}", endpoint.host)))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| RequestError::Http(e.to_string()))?;
            let host = endpoint.host.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(%host, error = %e, "federation connection ended");
                }
            });
            Ok(sender)
        };
        tokio::time::timeout(crate::client::ATTEMPT_TIMEOUT, dial)
            .await
            .map_err(|_| RequestError::Timeout)?
    }
}

/// The endpoint of a name that needs no lookup: a literal IP or an explicit port.
fn direct(name: &ServerName) -> Option<Endpoint> {
    if !name.is_ip_literal() && name.port().is_none() {
        return None;
    }
    let host = name.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(Endpoint {
        host: host.to_owned(),
        port: name.port().unwrap_or(DEFAULT_PORT),
        authority: name.to_string(),
    })
}

/// One request on `connection`. The outer error means the connection failed (worth one more
/// try on a fresh one); with the answer comes whether the connection can carry another.
async fn exchange(
    connection: &mut Connection,
    request: Request<Vec<u8>>,
    max_bytes: usize,
) -> Result<(Result<http::Response<Bytes>, RequestError>, bool), RequestError> {
    connection
        .ready()
        .await
        .map_err(|e| RequestError::Http(e.to_string()))?;
    let response = connection
        .send_request(request.map(|b| Full::new(Bytes::from(b))))
        .await
        .map_err(|e| RequestError::Http(e.to_string()))?;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = match Limited::new(body, max_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        // The answer is whole but too long: another connection would get the same.
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok((Err(RequestError::TooLarge), false));
        }
        Err(e) => return Err(RequestError::Http(e.to_string())),
    };
    if !status.is_success() {
        return Ok((
            Err(RequestError::Remote {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            }),
            true,
        ));
    }
    Ok((Ok(http::Response::from_parts(parts, bytes)), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str) -> Option<Endpoint> {
        direct(&ServerName::parse(name).ok()?)
    }

    #[test]
    fn literal_addresses_and_explicit_ports_need_no_lookup() {
        assert_eq!(
            endpoint("127.0.0.1"),
            Some(Endpoint {
                host: "127.0.0.1".into(),
                port: DEFAULT_PORT,
                authority: "127.0.0.1".into()
            })
        );
        assert_eq!(
            endpoint("[::1]:8449"),
            Some(Endpoint {
                host: "::1".into(),
                port: 8449,
                authority: "[::1]:8449".into()
            })
        );
        assert_eq!(
            endpoint("localhost:1234"),
            Some(Endpoint {
                host: "localhost".into(),
                port: 1234,
                authority: "localhost:1234".into()
            })
        );
        assert_eq!(endpoint("example.org"), None);
    }
}

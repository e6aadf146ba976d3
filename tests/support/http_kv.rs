//! The workloads' operations through the HTTP API (`actors::http_api`), as an HTTP client
//! would send them, with what each answer tells the checker:
//!
//! - 200, 404 and 412 are outcomes (a get's value and `ETag`, a write's `{"version"}`);
//! - 503 and 429 did not take effect (`Error::Unavailable`, `Error::Busy`): left out of the
//!   history, and tried on the next node;
//! - 504, a connection that breaks after the request was sent, or no answer within the
//!   timeout: the outcome is unknown. A write is then retried once with its
//!   `Idempotency-Key` on the same node (the one that remembers it): if that answers, the
//!   answer is the write's outcome (and it took effect once: the checker sees a second
//!   application as a version no history explains); otherwise the operation is unknown.
//!
//! Any other status is a bug of the API or of this client: it panics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use paxkv::error::Error;
use paxkv::paxos::types::{Command, Outcome};
use percent_encoding::NON_ALPHANUMERIC;

/// What runs a command: paxkv's client, or the HTTP API.
pub trait Kv: Send + Sync + 'static {
    fn execute(
        &self,
        key: &[u8],
        command: Command,
    ) -> impl std::future::Future<Output = paxkv::Result<Outcome>> + Send;
}

impl Kv for paxkv::client::Client {
    /// A `LeasedWrite` is a client's leased put or cas (its fence is the node's to read).
    async fn execute(&self, key: &[u8], command: Command) -> paxkv::Result<Outcome> {
        match command {
            Command::LeasedWrite(w) => self.put_leased(key, &w.value, w.expect, w.lease).await,
            command => paxkv::client::Client::execute(self, key, command).await,
        }
    }
}

/// A client of the HTTP API of some nodes, starting at the first.
pub struct HttpKv {
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    /// This client's part of its `Idempotency-Key`s.
    id: u64,
    next: AtomicU64,
}

/// How one attempt ended.
enum Attempt {
    Answered(StatusCode, Option<u64>, Bytes),
    /// Nothing was sent (the connection was refused): it did not take effect.
    NotSent(String),
    /// Sent, and no answer came.
    Lost(String),
}

impl HttpKv {
    /// A client of the HTTP APIs at `addrs`; an attempt without an answer after `timeout`
    /// is unknown.
    pub fn new(addrs: Vec<SocketAddr>, timeout: Duration) -> HttpKv {
        assert!(!addrs.is_empty(), "an HTTP client needs an address");
        HttpKv {
            addrs,
            timeout,
            id: rand::random(),
            next: AtomicU64::new(0),
        }
    }

    async fn attempt(
        &self,
        addr: SocketAddr,
        method: &Method,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Attempt {
        let stream =
            match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Attempt::NotSent(e.to_string()),
                Err(_) => return Attempt::NotSent("connect timed out".into()),
            };
        let exchange = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header("host", addr.to_string());
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let request = request
                .body(Full::new(Bytes::copy_from_slice(body)))
                .expect("a valid request");
            let answer = sender.send_request(request).await?;
            let status = answer.status();
            let etag = answer
                .headers()
                .get("etag")
                .and_then(|t| t.to_str().ok()?.trim_matches('"').parse().ok());
            let body = answer.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, etag, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((status, etag, body))) => Attempt::Answered(status, etag, body),
            Ok(Err(e)) => Attempt::Lost(e.to_string()),
            Err(_) => Attempt::Lost("no answer within the timeout".into()),
        }
    }
}

/// The `{"version": N}` of a write's answer.
fn version_in(body: &[u8]) -> u64 {
    let json: serde_json::Value = serde_json::from_slice(body).expect("a JSON answer");
    json["version"].as_u64().expect("a version")
}

impl Kv for HttpKv {
    async fn execute(&self, key: &[u8], command: Command) -> paxkv::Result<Outcome> {
        let mut path = format!("/v1/kv/{}", encode(key));
        let tag = |version: u64| format!("\"{version}\"");
        let (method, mut headers, body) = match &command {
            Command::Get => (Method::GET, vec![], Vec::new()),
            Command::Put { value } => (Method::PUT, vec![], value.clone()),
            Command::Cas { expect: 0, value } => (
                Method::PUT,
                vec![("if-none-match", "*".to_string())],
                value.clone(),
            ),
            Command::Cas { expect, value } => {
                (Method::PUT, vec![("if-match", tag(*expect))], value.clone())
            }
            Command::Delete => (Method::DELETE, vec![], Vec::new()),
            Command::DeleteIf { expect } => {
                (Method::DELETE, vec![("if-match", tag(*expect))], Vec::new())
            }
            // A client's leased write: the node reads the fence.
            Command::LeasedWrite(w) => {
                path.push_str(&format!("?lease={:016x}", w.lease));
                let condition = match &w.expect {
                    None => vec![],
                    Some(0) => vec![("if-none-match", "*".to_string())],
                    Some(expect) => vec![("if-match", tag(*expect))],
                };
                (Method::PUT, condition, w.value.clone())
            }
            other => panic!("{other:?} is the lease machinery's, not a client's"),
        };
        let write = command.is_write();
        if write {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            headers.push(("idempotency-key", format!("{:x}-{n}", self.id)));
        }
        let mut why = String::new();
        for addr in &self.addrs {
            let answer = match self.attempt(*addr, &method, &path, &headers, &body).await {
                Attempt::NotSent(e) => {
                    why = e;
                    continue;
                }
                Attempt::Answered(StatusCode::SERVICE_UNAVAILABLE, _, body)
                | Attempt::Answered(StatusCode::TOO_MANY_REQUESTS, _, body) => {
                    why = String::from_utf8_lossy(&body).to_string();
                    continue;
                }
                Attempt::Answered(StatusCode::GATEWAY_TIMEOUT, ..) | Attempt::Lost(_) if write => {
                    // The outcome is unknown: ask again the node that remembers the key. Only
                    // an outcome settles it; anything else leaves it unknown (the first
                    // attempt may still have taken effect).
                    match self.attempt(*addr, &method, &path, &headers, &body).await {
                        Attempt::Answered(status, etag, body) if is_outcome(status) => {
                            (status, etag, body)
                        }
                        _ => {
                            return Err(Error::Unknown(format!(
                                "{addr}: no outcome, and none for its Idempotency-Key"
                            )))
                        }
                    }
                }
                Attempt::Lost(e) => return Err(Error::Unknown(format!("{addr}: {e}"))),
                Attempt::Answered(status, etag, body) => (status, etag, body),
            };
            return outcome_of(&command, answer);
        }
        Err(Error::Unavailable(format!(
            "no node's HTTP API took it: {why}"
        )))
    }
}

/// The statuses that answer what a command did.
fn is_outcome(status: StatusCode) -> bool {
    [
        StatusCode::OK,
        StatusCode::NOT_FOUND,
        StatusCode::PRECONDITION_FAILED,
    ]
    .contains(&status)
}

/// What an answer says `command` did: an outcome, or unknown (504).
fn outcome_of(
    command: &Command,
    (status, etag, body): (StatusCode, Option<u64>, Bytes),
) -> paxkv::Result<Outcome> {
    let text = || String::from_utf8_lossy(&body).to_string();
    match (status, command) {
        (StatusCode::GATEWAY_TIMEOUT, _) => Err(Error::Unknown(text())),
        (StatusCode::OK | StatusCode::NOT_FOUND, Command::Get) => Ok(Outcome::Get {
            value: (status == StatusCode::OK).then(|| body.to_vec()),
            version: etag.expect("a get's ETag"),
        }),
        (StatusCode::OK, Command::Put { .. }) => Ok(Outcome::Put {
            version: version_in(&body),
        }),
        (StatusCode::OK, Command::LeasedWrite(w)) if w.expect.is_none() => Ok(Outcome::Put {
            version: version_in(&body),
        }),
        (StatusCode::NOT_FOUND, Command::LeasedWrite(_)) => Err(Error::NotFound(text())),
        (StatusCode::OK | StatusCode::PRECONDITION_FAILED, Command::Cas { .. })
        | (StatusCode::OK | StatusCode::PRECONDITION_FAILED, Command::LeasedWrite(_)) => {
            Ok(Outcome::Cas {
                swapped: status == StatusCode::OK,
                version: version_in(&body),
            })
        }
        (
            StatusCode::OK | StatusCode::NOT_FOUND | StatusCode::PRECONDITION_FAILED,
            Command::Delete | Command::DeleteIf { .. },
        ) => Ok(Outcome::Delete {
            deleted: status == StatusCode::OK,
            version: version_in(&body),
        }),
        (status, command) => panic!(
            "the HTTP API answered {command:?} with {status}: {}",
            text()
        ),
    }
}

/// Every byte but letters and digits percent-encoded (a path segment of any key).
fn encode(key: &[u8]) -> String {
    percent_encoding::percent_encode(key, NON_ALPHANUMERIC).to_string()
}

//! The HTTP/JSON API of a node (issue 21): the key-value routes, the listing, watches,
//! members, status and the console, on the node's `http_addr`, over HTTP/1.1 (hyper, as the
//! metrics endpoint; HTTPS with `[tls]`, `actors::http_server`). Every request becomes the
//! same request the binary protocol carries, so its semantics are the CLI's exactly: every
//! read linearizable, every write durable on a majority before 200. A key's get, put, delete
//! or compare-and-set is sent on as paxkv's client sends it, to the key's home node
//! (`HttpApi::kv` says why); the rest is served by this node's `Router`.
//!
//! - `GET /v1/kv/{key}`: 200, the value's bytes, `ETag: "N"` (the version); 404 with the
//!   current version's `ETag` when the key has no value. `Accept: application/json`: the
//!   CLI's `get --json` object.
//! - `PUT /v1/kv/{key}` (the body is the value): 200 `{"version": N}`. `If-Match: "N"` makes
//!   it a compare-and-set (412 `{"version": current}` when it does not swap), `If-None-Match:
//!   *` swaps only if the key has no value. A body over `limits.max_value_bytes` is refused
//!   with 413 from its `Content-Length`, before any of it is read.
//! - `DELETE /v1/kv/{key}`: 200 `{"version": N}`, 404 `{"version": N}` when there was no value;
//!   with `If-Match: "N"` only if the version is N (`Command::DeleteIf`; 412 otherwise).
//! - `Idempotency-Key` on a write: a retry takes effect once (`actors::idempotency`).
//! - `GET /v1/kv?prefix=P&after=K&limit=N&keys_only=true`: one page of the listing, the JSON of
//!   `paxkv list --json`.
//! - Leases (`actors::lease`): `POST /v1/leases`, `POST /v1/leases/{id}/keepalive`, `GET`
//!   and `DELETE /v1/leases/{id}`; 404 (class `not_found`) for a lease that is gone.
//! - `GET /v1/watch/{key}`: server-sent events; `GET|POST /v1/members`, `DELETE
//!   /v1/members/{id}`, `GET /v1/status`; `GET /`: the console; `GET /v1/openapi.yaml`.
//! - Keys in paths and queries are percent-encoded bytes (any key, `/`, NUL and bytes that are
//!   not UTF-8 included; `+` is a plus). On the key, listing, watch and lease routes, a `%`
//!   not followed by two hex digits, a query parameter the route does not take and a boolean
//!   other than `true` or `false` are 400: never taken another way than the client meant.
//! - Errors: `{"error": "...", "class": "..."}` with 400 (bad input), 403 (a membership change
//!   without the operator's certificate: `tls::Peer::admits`, the node port's rule), 413 (a
//!   value over the limit), 422 (an `Idempotency-Key` reused for another request), 429
//!   (busy), 503 and `Retry-After` (it did not take effect), 504 (its outcome is unknown: it
//!   may have taken effect; never both).
//! - Bounds (`[limits]`): `http_max_connections` (`http_max_connections_per_source` of them
//!   from one address), `http_header_timeout_ms`, `http_max_watches` (each holding at most
//!   about eleven times `http_watch_buffer_bytes`, and about eight values, for a client
//!   behind: `watch`'s module doc), `http_idempotency_keys`; bodies by `max_value_bytes` (a
//!   value) and `MEMBER_BODY_BYTES` (a member).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Bytes;
use hyper::header::{
    HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH,
};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;

use futures_util::StreamExt;

use crate::actors::http_server;
use crate::actors::idempotency::{self, Attempt, Idempotency, Reused};
use crate::actors::membership::installed::addr_of;
use crate::actors::membership::MembershipService;
use crate::actors::router::Router;
use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, ErrorClass, Result};
use crate::json;
use crate::json::{bytes_field, keyed, page_json};
use crate::messages::{ClientRequest, Frame, MemberChangeRequest, Reply, RequestBody};
use crate::paxos::types::{Command, Outcome};
use crate::tls::{Peer, Tls};
use crate::watch::WatchOptions;

/// The OpenAPI document of these routes (`docs/openapi.yaml`), served at
/// `GET /v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

/// Every route this module answers, as the document names them (`tests/http_api.rs` checks
/// that the two agree).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/v1/kv/{key}"),
    ("PUT", "/v1/kv/{key}"),
    ("DELETE", "/v1/kv/{key}"),
    ("GET", "/v1/kv"),
    ("GET", "/v1/watch/{key}"),
    ("GET", "/v1/members"),
    ("POST", "/v1/members"),
    ("DELETE", "/v1/members/{id}"),
    ("GET", "/v1/status"),
    ("GET", "/v1/openapi.yaml"),
    ("POST", "/v1/leases"),
    ("POST", "/v1/leases/{id}/keepalive"),
    ("GET", "/v1/leases/{id}"),
    ("DELETE", "/v1/leases/{id}"),
];

/// The console (`GET /`): one page, its HTML, CSS and JavaScript in the binary; it reads
/// everything it shows from the routes above, as any other client would.
const CONSOLE: &str = include_str!("../console/index.html");

/// The console's page, with the latency buckets its charts read `request_buckets` by.
fn console_page() -> String {
    let bounds = serde_json::json!(crate::metrics::REQUEST_BUCKET_SECONDS).to_string();
    CONSOLE.replacen("/*REQUEST_BUCKET_SECONDS*/[]", &bounds, 1)
}

/// The most bytes a member's JSON may have.
const MEMBER_BODY_BYTES: usize = 4_096;

/// Serves the API. Cheap to clone.
#[derive(Clone)]
pub struct HttpApi {
    router: Router,
    config: Arc<Config>,
    members: MembershipService,
    /// HTTPS (the node's `[tls]`), or plaintext on loopback.
    tls: Option<Arc<Tls>>,
    /// The write ids of `Idempotency-Key`s.
    idempotency: Arc<Idempotency>,
    /// Watch streams open now (at most `limits.http_max_watches`).
    watches: Arc<tokio::sync::Semaphore>,
    /// The client the watches use, for the epoch it was made for: one set of connections
    /// for every watch of this API, not one each.
    client: Arc<std::sync::Mutex<Option<(u64, Client)>>>,
}

type Answer = Response<BoxBody<Bytes, std::convert::Infallible>>;

/// An answer's body of these bytes.
fn full(bytes: impl Into<Bytes>) -> BoxBody<Bytes, std::convert::Infallible> {
    Full::new(bytes.into()).boxed()
}

/// How often a watch's event stream sends a comment line when nothing changes (so that
/// proxies and browsers keep it open, and a dead client is found).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Binds `addr` (an error names it).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::Config(format!("http_addr: cannot listen on {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl HttpApi {
    pub fn new(
        router: Router,
        config: Arc<Config>,
        members: MembershipService,
        tls: Option<Arc<Tls>>,
    ) -> HttpApi {
        let watches = Arc::new(tokio::sync::Semaphore::new(config.limits.http_max_watches));
        let idempotency = Arc::new(Idempotency::new(config.limits.http_idempotency_keys));
        HttpApi {
            idempotency,
            router,
            config,
            members,
            tls,
            watches,
            client: Default::default(),
        }
    }

    /// Serves the API on `listener` until the runtime stops.
    pub async fn serve(self, listener: std::net::TcpListener) {
        let limits = &self.config.limits;
        let endpoint = http_server::Endpoint {
            name: "HTTP API",
            max_connections: limits.http_max_connections,
            max_per_source: limits.http_max_connections_per_source,
            header_timeout: Duration::from_millis(limits.http_header_timeout_ms),
            write_stall: Duration::from_millis(limits.slow_reader_timeout_ms),
            tls: self.tls.clone().map(|tls| {
                let deadline = Duration::from_millis(limits.handshake_timeout_ms);
                (tls, deadline)
            }),
        };
        let answer = move |request, peer| {
            let api = self.clone();
            async move { api.answer(request, peer).await }
        };
        http_server::serve(listener, endpoint, answer).await
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>, peer: Peer) -> Answer {
        let path = request.uri().path().to_string();
        let result = if path == "/" && request.method() == Method::GET {
            let mut answer = Response::new(full(console_page()));
            let headers = answer.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // Everything the page runs is in the page: nothing else may run in it.
            headers.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src 'self' data:",
                ),
            );
            Ok(answer)
        } else if path == "/v1/openapi.yaml" && request.method() == Method::GET {
            let mut answer = Response::new(full(OPENAPI));
            answer
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
            Ok(answer)
        } else if path == "/v1/status" && request.method() == Method::GET {
            self.status().await
        } else if path == "/v1/members" && request.method() == Method::GET {
            self.members().await
        } else if path == "/v1/members" && request.method() == Method::POST {
            self.add_member(request, peer).await
        } else if let (Some(id), &Method::DELETE) =
            (path.strip_prefix("/v1/members/"), request.method())
        {
            match id.parse() {
                Ok(id) => self.change(MemberChangeRequest::Remove { id }, peer).await,
                Err(_) => Err(Status::Plain(
                    StatusCode::BAD_REQUEST,
                    "a member's id is a number",
                )),
            }
        } else if path == "/v1/leases" && request.method() == Method::POST {
            self.grant(request).await
        } else if let Some(rest) = path.strip_prefix("/v1/leases/") {
            match keys_param(request.uri().query().unwrap_or("")) {
                Ok(keys) => self.lease(rest, request.method(), keys).await,
                Err(e) => Err(e),
            }
        } else if path == "/v1/kv" && request.method() == Method::GET {
            self.list(request.uri().query().unwrap_or("")).await
        } else if let (Some(key), &Method::GET) =
            (path.strip_prefix("/v1/watch/"), request.method())
        {
            decoded(key).and_then(|key| self.watch(key, request.uri().query().unwrap_or("")))
        } else if let Some(key) = path.strip_prefix("/v1/kv/") {
            let query = request.uri().query().unwrap_or("");
            let key = decoded(key);
            let method = request.method().clone();
            match (key, method) {
                (Err(e), _) => Err(e),
                (Ok(_), Method::GET | Method::DELETE) if !query.is_empty() => Err(Status::Plain(
                    StatusCode::BAD_REQUEST,
                    "a key's GET and DELETE take no query (a PUT takes ?lease=ID)",
                )),
                (Ok(key), Method::GET) => self.get(key, &request).await,
                (Ok(key), Method::PUT) => self.put(key, request).await,
                (Ok(key), Method::DELETE) => self.delete(key, &request).await,
                _ => Err(Status::Plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET, PUT or DELETE",
                )),
            }
        } else {
            Err(Status::Plain(StatusCode::NOT_FOUND, "no such route"))
        };
        result.unwrap_or_else(Status::into_answer)
    }

    /// A request's body, read as it arrives: at most `limits.http_request_timeout_ms` in all,
    /// with no pause longer than `limits.http_header_timeout_ms` (its headers' clock) between
    /// its parts, and at most `limit` bytes (`too_large` beyond). A client that stops sending
    /// it, or trickles it, is answered 408, and hyper closes a connection whose request body
    /// was not read to its end, so the slot comes back.
    async fn read_body(
        &self,
        body: hyper::body::Incoming,
        limit: usize,
        too_large: Status,
    ) -> std::result::Result<Bytes, Status> {
        let limits = &self.config.limits;
        let pause = Duration::from_millis(limits.http_header_timeout_ms);
        let by =
            tokio::time::Instant::now() + Duration::from_millis(limits.http_request_timeout_ms);
        let mut body = Limited::new(body, limit);
        let mut bytes = Vec::new();
        loop {
            let until = by.min(tokio::time::Instant::now() + pause);
            match tokio::time::timeout_at(until, body.frame()).await {
                Err(_) => {
                    return Err(Status::Plain(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request's body stopped arriving (a pause over \
                         limits.http_header_timeout_ms, or longer than \
                         limits.http_request_timeout_ms in all)",
                    ))
                }
                Ok(None) => return Ok(bytes.into()),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Ok(Some(Err(e))) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(too_large)
                }
                Ok(Some(Err(_))) => {
                    return Err(Status::Plain(
                        StatusCode::BAD_REQUEST,
                        "the request's body could not be read",
                    ))
                }
            }
        }
    }

    /// A request's body of a small JSON object (a grant, a member): at most
    /// `MEMBER_BODY_BYTES` (413 with `too_large` beyond), 400 with `shape` if it is not that
    /// object.
    async fn small_json<T: serde::de::DeserializeOwned>(
        &self,
        request: Request<hyper::body::Incoming>,
        too_large: &'static str,
        shape: &'static str,
    ) -> std::result::Result<T, Status> {
        let too_large = Status::Plain(StatusCode::PAYLOAD_TOO_LARGE, too_large);
        let body = self
            .read_body(request.into_body(), MEMBER_BODY_BYTES, too_large)
            .await?;
        serde_json::from_slice(&body).map_err(|_| Status::Plain(StatusCode::BAD_REQUEST, shape))
    }

    /// Runs `body` through the node's router.
    async fn serve_request(&self, body: RequestBody) -> std::result::Result<Reply, Status> {
        let request = ClientRequest { id: 0, body };
        self.router
            .serve(request)
            .await
            .result
            .map_err(Status::Failed)
    }

    /// Runs `command` on `key` as paxkv's client does: on the key's home node (the one a
    /// hash of the key picks among the members; the next when it is down), retried across
    /// nodes within the client's deadline, each write under one write id. A key's writes
    /// then come from one proposer, which holds its promise between them (one round trip
    /// each); spread over the nodes that took the HTTP requests, each would start with a
    /// Prepare (BENCHMARKS.md, "HTTP API": a fifth more CPU per put). A write with an
    /// `Idempotency-Key` (`attempt`) carries that key's write id, marked as maybe applied
    /// on a retry.
    async fn kv(
        &self,
        key: Vec<u8>,
        command: Command,
        attempt: Option<Attempt>,
    ) -> std::result::Result<Outcome, Status> {
        let client = self.members_client().map_err(Status::Failed)?;
        let outcome = match attempt {
            Some(Attempt { write_id, retry }) => {
                client
                    .execute_as(&key, command, Some(write_id), retry)
                    .await
            }
            None => client.execute(&key, command).await,
        };
        outcome.map_err(Status::Failed)
    }

    async fn get(
        &self,
        key: Vec<u8>,
        request: &Request<hyper::body::Incoming>,
    ) -> std::result::Result<Answer, Status> {
        let Outcome::Get { value, version } = self.kv(key.clone(), Command::Get, None).await?
        else {
            return Err(Status::Failed(Error::Unknown(
                "a get answered a write".into(),
            )));
        };
        let json = request
            .headers()
            .get(ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        let mut answer = match (&value, json) {
            (Some(value), false) => {
                let mut answer = Response::new(full(value.clone()));
                answer.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                answer
            }
            (Some(value), true) => {
                let mut object = keyed(&key, serde_json::json!({}));
                bytes_field(&mut object, "value", value);
                object["version"] = serde_json::json!(version);
                json_answer(StatusCode::OK, object)
            }
            (None, _) => {
                let mut object = keyed(&key, serde_json::json!({}));
                object["version"] = serde_json::json!(version);
                json_answer(StatusCode::NOT_FOUND, object)
            }
        };
        answer.headers_mut().insert(ETAG, etag(version));
        Ok(answer)
    }

    async fn put(
        &self,
        key: Vec<u8>,
        request: Request<hyper::body::Incoming>,
    ) -> std::result::Result<Answer, Status> {
        let limit = self.config.limits.max_value_bytes;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|l| l > limit as u64) {
            return Err(Status::too_large(limit));
        }
        let expect = condition(&request)?;
        let lease = lease_param(request.uri().query().unwrap_or(""))?;
        let (parts, body) = request.into_parts();
        let value = self
            .read_body(body, limit, Status::too_large(limit))
            .await?
            .to_vec();
        let attempt = self.attempt(&parts.method, &parts.uri, &parts.headers, &value)?;
        let outcome = match lease {
            Some(lease) => {
                let client = self.members_client().map_err(Status::Failed)?;
                let (write_id, retry) =
                    attempt.map_or((None, false), |a| (Some(a.write_id), a.retry));
                client
                    .put_leased_as(&key, &value, expect, lease, write_id, retry)
                    .await
                    .map_err(Status::Failed)?
            }
            None => {
                let command = match expect {
                    Some(expect) => Command::Cas { expect, value },
                    None => Command::Put { value },
                };
                self.kv(key, command, attempt).await?
            }
        };
        match outcome {
            Outcome::Put { version }
            | Outcome::Cas {
                swapped: true,
                version,
            } => Ok(versioned(StatusCode::OK, version)),
            Outcome::Cas { version, .. } => Ok(versioned(StatusCode::PRECONDITION_FAILED, version)),
            other => Err(Status::Failed(Error::Unknown(format!(
                "a put answered {other:?}"
            )))),
        }
    }

    async fn delete(
        &self,
        key: Vec<u8>,
        request: &Request<hyper::body::Incoming>,
    ) -> std::result::Result<Answer, Status> {
        if request.headers().contains_key(IF_NONE_MATCH) {
            return Err(Status::Plain(
                StatusCode::BAD_REQUEST,
                "a DELETE takes If-Match, not If-None-Match",
            ));
        }
        let expect = condition(request)?;
        let command = match expect {
            Some(expect) => Command::DeleteIf { expect },
            None => Command::Delete,
        };
        let attempt = self.attempt(request.method(), request.uri(), request.headers(), b"")?;
        match self.kv(key, command, attempt).await? {
            Outcome::Delete {
                deleted: true,
                version,
            } => Ok(versioned(StatusCode::OK, version)),
            // Not the version asked for: 412, as a put's compare-and-set.
            Outcome::Delete { version, .. } if expect.is_some_and(|e| e != version) => {
                Ok(versioned(StatusCode::PRECONDITION_FAILED, version))
            }
            Outcome::Delete { version, .. } => Ok(versioned(StatusCode::NOT_FOUND, version)),
            other => Err(Status::Failed(Error::Unknown(format!(
                "a delete answered {other:?}"
            )))),
        }
    }

    /// The write id of a write with an `Idempotency-Key` (`actors::idempotency`): the one its
    /// first request had if this is a retry of it (the same method, path, conditions and
    /// body), 422 if the key was used for another request; `None` without the header.
    fn attempt(
        &self,
        method: &Method,
        uri: &hyper::Uri,
        headers: &hyper::HeaderMap,
        body: &[u8],
    ) -> std::result::Result<Option<Attempt>, Status> {
        let Some(key) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let key = key
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= idempotency::MAX_KEY_BYTES)
            .ok_or(Status::Plain(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key: 1 to 255 visible ASCII characters",
            ))?;
        let header = |name| headers.get(name).map_or(&b""[..], HeaderValue::as_bytes);
        let request = [
            method.as_str().as_bytes(),
            uri.path().as_bytes(),
            uri.query().unwrap_or("").as_bytes(),
            header(IF_MATCH),
            header(IF_NONE_MATCH),
            body,
        ];
        self.idempotency
            .attempt(key, &request)
            .map(Some)
            .map_err(|Reused| {
                Status::Plain(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was used for another request",
                )
            })
    }

    /// `POST /v1/leases` with `{"ttl_s": N}`: 200 `{"id": "<16 hex digits>", "ttl_s": N}`,
    /// as `paxkv lease grant --json`.
    async fn grant(
        &self,
        request: Request<hyper::body::Incoming>,
    ) -> std::result::Result<Answer, Status> {
        #[derive(serde::Deserialize)]
        struct Grant {
            ttl_s: u64,
        }
        let Grant { ttl_s } = self
            .small_json(
                request,
                "a grant is a small JSON object",
                "the body is {\"ttl_s\": N}",
            )
            .await?;
        let client = self.members_client().map_err(Status::Failed)?;
        let ttl = Duration::from_secs(ttl_s);
        let lease = client.lease_grant(ttl).await.map_err(Status::Failed)?;
        let id = crate::paxos::lease::format_id(lease.id);
        Ok(json_answer(
            StatusCode::OK,
            serde_json::json!({"id": id, "ttl_s": ttl_s}),
        ))
    }

    /// `GET /v1/leases/{id}`, `DELETE /v1/leases/{id}` (revoke), `POST
    /// /v1/leases/{id}/keepalive`: 200 with the lease (`{"id", "ttl_s", "version",
    /// "remaining_ms"}`), 404 when there is none (expired, revoked, never granted).
    async fn lease(
        &self,
        rest: &str,
        method: &Method,
        keys: bool,
    ) -> std::result::Result<Answer, Status> {
        let (id, keepalive) = match rest.strip_suffix("/keepalive") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        let id = crate::paxos::lease::parse_id(id).ok_or(Status::Plain(
            StatusCode::BAD_REQUEST,
            "a lease's id is up to 16 hex digits",
        ))?;
        let client = self.members_client().map_err(Status::Failed)?;
        let lease = match (method, keepalive) {
            (&Method::POST, true) => client.lease_keepalive(id).await,
            (&Method::GET, false) => client.lease_show(id).await,
            (&Method::DELETE, false) => client.lease_revoke(id).await,
            _ => {
                return Err(Status::Plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET or DELETE a lease, POST its keepalive",
                ))
            }
        }
        .map_err(Status::Failed)?;
        let gone = || Status::NotFound("no such lease (expired, revoked, or never granted)");
        let mut object = json::lease_json(&lease.ok_or_else(gone)?);
        // `GET ...?keys=true`: the keys attached to it now, as `paxkv lease show --keys`.
        if keys && *method == Method::GET {
            let attached = client.lease_keys(id).await.map_err(Status::Failed)?;
            object["keys"] = json::lease_keys_json(&attached.ok_or_else(gone)?);
        }
        Ok(json_answer(StatusCode::OK, object))
    }

    /// `GET /v1/status`: every member's status, as `paxkv status --json` prints them (one
    /// object per member, in the membership's order, with its `addr`; `{"addr", "error"}`
    /// for a member that did not answer). 200 while this node answers at all: a member that
    /// is down is what a status is for.
    async fn status(&self) -> std::result::Result<Answer, Status> {
        let client = self.members_client().map_err(Status::Failed)?;
        let asked = client.addrs().iter().enumerate().map(|(i, addr)| {
            let client = client.clone();
            let addr = *addr;
            async move {
                match client.status(i).await {
                    Ok(status) => {
                        let mut object =
                            serde_json::to_value(&status).expect("a status serializes");
                        object["addr"] = serde_json::json!(addr.to_string());
                        object
                    }
                    Err(e) => serde_json::json!({"addr": addr.to_string(), "error": e.to_string()}),
                }
            }
        });
        let statuses = futures_util::future::join_all(asked).await;
        Ok(json_answer(
            StatusCode::OK,
            serde_json::Value::Array(statuses),
        ))
    }

    /// `GET /v1/members`: the membership this node has installed, as `paxkv member list
    /// --json` prints it.
    async fn members(&self) -> std::result::Result<Answer, Status> {
        match self.serve_request(RequestBody::Members).await? {
            Reply::Members(answer) => match answer.membership {
                Some(m) => Ok(json_answer(StatusCode::OK, json::membership_json(&m))),
                None => Err(Status::Failed(Error::Unavailable(
                    "no membership installed yet".into(),
                ))),
            },
            other => Err(Status::Failed(Error::Unknown(format!(
                "members answered {other:?}"
            )))),
        }
    }

    /// `POST /v1/members` with `{"id", "addr"}`: `paxkv member add`, answered once the node
    /// votes, with the membership.
    async fn add_member(
        &self,
        request: Request<hyper::body::Incoming>,
        peer: Peer,
    ) -> std::result::Result<Answer, Status> {
        #[derive(serde::Deserialize)]
        struct Add {
            id: crate::paxos::types::NodeId,
            addr: String,
        }
        let Add { id, addr } = self
            .small_json(
                request,
                "a member is a small JSON object",
                "the body is {\"id\": N, \"addr\": \"ip:port\"}",
            )
            .await?;
        self.change(MemberChangeRequest::Add { id, addr }, peer)
            .await
    }

    /// Drives a membership change to its end (`paxkv member add|remove`), answered with the
    /// membership, as `paxkv member list --json` prints it.
    /// With `[tls]`, only the operator's certificate may (the node port's rule,
    /// `tls::Peer::admits`): 403 for any other.
    async fn change(
        &self,
        change: MemberChangeRequest,
        peer: Peer,
    ) -> std::result::Result<Answer, Status> {
        let request = ClientRequest {
            id: 0,
            body: RequestBody::MemberChange(change),
        };
        peer.admits(&Frame::Request(request.clone()), |_| true)
            .map_err(Status::Forbidden)?;
        // A task of its own, as the node port runs every request: hyper drops this answer's
        // future when its client goes away, and a change dropped between two of its steps
        // would leave the membership mid-change until someone reran it (review, 2026-12-08).
        let router = self.router.clone();
        let change = actix_rt::spawn(async move { router.serve(request).await.result });
        let done = change
            .await
            .map_err(|e| Status::Failed(Error::Unknown(format!("the change's task ended: {e}"))))?;
        match done.map_err(Status::Failed)? {
            Reply::MemberChanged(m) => Ok(json_answer(StatusCode::OK, json::membership_json(&m))),
            other => Err(Status::Failed(Error::Unknown(format!(
                "a change answered {other:?}"
            )))),
        }
    }

    async fn list(&self, query: &str) -> std::result::Result<Answer, Status> {
        let (mut prefix, mut after, mut limit, mut keys_only) = (Vec::new(), None, 0, false);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decoded(value)?;
            match name {
                "prefix" => prefix = value,
                "after" => after = Some(value),
                "limit" => {
                    // A larger limit is capped, as the CLI's `--limit` (by the router).
                    limit = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|v| v.min(u32::MAX.into()) as u32)
                        .ok_or(Status::Plain(StatusCode::BAD_REQUEST, "limit: a number"))?
                }
                "keys_only" => keys_only = flag(&value, "keys_only: true or false")?,
                _ => {
                    return Err(Status::Plain(
                        StatusCode::BAD_REQUEST,
                        "the query takes prefix, after, limit and keys_only",
                    ))
                }
            }
        }
        let body = RequestBody::List {
            prefix,
            after,
            limit,
            keys_only,
        };
        match self.serve_request(body).await? {
            Reply::Listed(page) => Ok(json_answer(StatusCode::OK, page_json(&page))),
            other => Err(Status::Failed(Error::Unknown(format!(
                "a list answered {other:?}"
            )))),
        }
    }
}

impl HttpApi {
    /// `GET /v1/watch/{key}?prefix=true&from_version=V`: the watch of `paxkv watch --json` as
    /// server-sent events, one `data:` line of that JSON per item, an `event: error` with the
    /// error's JSON when no node can serve it (then the stream ends), and a comment line every
    /// [`HEARTBEAT`]. The watch runs as the CLI's does (`Client::watch`, from this node, over
    /// the members' addresses): it resumes on another node and says every gap.
    fn watch(&self, key: Vec<u8>, query: &str) -> std::result::Result<Answer, Status> {
        let mut options = WatchOptions {
            max_keys: self.config.limits.http_watch_max_keys,
            buffer_bytes: self.config.limits.http_watch_buffer_bytes,
            ..WatchOptions::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "prefix" => options.prefix = flag(value.as_bytes(), "prefix: true or false")?,
                "from_version" => {
                    options.from_version = Some(value.parse().map_err(|_| {
                        Status::Plain(StatusCode::BAD_REQUEST, "from_version: a number")
                    })?)
                }
                _ => {
                    return Err(Status::Plain(
                        StatusCode::BAD_REQUEST,
                        "the query takes prefix and from_version",
                    ))
                }
            }
        }
        // Refused before the stream's 200 goes out: a bad key is a 400, not an error event
        // that an EventSource would answer by reconnecting with the same request.
        crate::actors::watch::check_watched(&key, options.prefix, &self.config)
            .map_err(Status::Failed)?;
        let Ok(permit) = self.watches.clone().try_acquire_owned() else {
            return Err(Status::Failed(Error::Busy(format!(
                "this node serves at most {} HTTP watch streams (limits.http_max_watches)",
                self.config.limits.http_max_watches
            ))));
        };
        let client = self.members_client().map_err(Status::Failed)?;
        let items = client.watch(&key, options).map(|item| {
            let event = match item {
                Ok(item) => format!("data: {}\n\n", json::watch_item_json(&item)),
                Err(e) => {
                    let (_, message, class) = Status::Failed(e).parts();
                    let error = serde_json::json!({"error": message, "class": class});
                    format!("event: error\ndata: {error}\n\n")
                }
            };
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(event)))
        });
        let heartbeats = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(HEARTBEAT).await;
            let beat = hyper::body::Frame::data(Bytes::from_static(b": heartbeat\n\n"));
            Some((Ok(beat), ()))
        });
        // The stream ends when the watch does (after an error): its end, a `None`, stops the
        // heartbeats too.
        let items = items
            .map(Some)
            .chain(futures_util::stream::once(async { None }));
        let events = futures_util::stream::select(items, heartbeats.map(Some))
            .take_while(|event| std::future::ready(event.is_some()))
            .map(move |event| {
                // The stream holds its slot until it is dropped (the client went away).
                let _slot = &permit;
                event.expect("taken while some")
            });
        let mut answer = Response::new(BodyExt::boxed(StreamBody::new(events)));
        let headers = answer.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert("cache-control", HeaderValue::from_static("no-cache"));
        Ok(answer)
    }

    /// A client of the installed membership's members, as the CLI's (made again when the
    /// epoch moves).
    fn members_client(&self) -> Result<Client> {
        let m = self
            .members
            .view
            .get()
            .ok_or_else(|| Error::Unavailable("no membership installed".into()))?;
        let mut cached = self.client.lock().expect("the API's client");
        if let Some((epoch, client)) = &*cached {
            if *epoch == m.epoch {
                return Ok(client.clone());
            }
        }
        let addrs = m
            .nodes()
            .into_iter()
            .map(|n| Ok((n, addr_of(&m, n)?)))
            .collect::<Result<Vec<_>>>()?;
        let within = Duration::from_millis(self.config.limits.http_request_timeout_ms);
        let client = self.members.client_of_members(&addrs, within);
        *cached = Some((m.epoch, client.clone()));
        Ok(client)
    }
}

/// The compare-and-set a write's headers ask for: `If-Match: "N"` (version N), `If-None-Match:
/// *` (no value: version 0), or none.
fn condition(request: &Request<hyper::body::Incoming>) -> std::result::Result<Option<u64>, Status> {
    let headers = request.headers();
    if let Some(tag) = headers.get(IF_MATCH) {
        let tag = tag.to_str().unwrap_or("");
        let version = tag
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse::<u64>()
            .map_err(|_| Status::Plain(StatusCode::BAD_REQUEST, "If-Match: a version, \"N\""))?;
        return Ok(Some(version));
    }
    match headers.get(IF_NONE_MATCH) {
        Some(tag) if tag.as_bytes() == b"*" => Ok(Some(0)),
        Some(_) => Err(Status::Plain(
            StatusCode::BAD_REQUEST,
            "If-None-Match takes * only",
        )),
        None => Ok(None),
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a valid header")
}

fn json_answer(status: StatusCode, body: serde_json::Value) -> Answer {
    let mut answer = Response::new(full(body.to_string()));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// The `lease=ID` of a `PUT`'s query (`None`: none; 400 when it is not a lease id).
fn lease_param(query: &str) -> std::result::Result<Option<u64>, Status> {
    let mut lease = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        // Anything else is refused, not ignored: a misspelt `lease` would write the value
        // without its lease, and so detach the key from the lease it has.
        let Some(id) = pair.strip_prefix("lease=") else {
            return Err(Status::Plain(
                StatusCode::BAD_REQUEST,
                "a key's PUT takes ?lease=ID and nothing else",
            ));
        };
        lease = Some(crate::paxos::lease::parse_id(id).ok_or(Status::Plain(
            StatusCode::BAD_REQUEST,
            "lease: up to 16 hex digits, as POST /v1/leases answers",
        ))?);
    }
    Ok(lease)
}

/// A lease route's query: `keys=true|false` or nothing (anything else is a 400: `?keys=1`
/// answered without the keys).
fn keys_param(query: &str) -> std::result::Result<bool, Status> {
    let mut keys = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("keys", value)) => keys = flag(value.as_bytes(), "keys: true or false")?,
            _ => {
                return Err(Status::Plain(
                    StatusCode::BAD_REQUEST,
                    "a lease's routes take ?keys=true and nothing else",
                ))
            }
        }
    }
    Ok(keys)
}

/// A percent-encoded path segment or query value, decoded; 400 for a `%` not followed by two
/// hex digits (taken literally before, it named another key than the client meant).
fn decoded(text: &str) -> std::result::Result<Vec<u8>, Status> {
    let bytes = text.as_bytes();
    let malformed = bytes.iter().enumerate().any(|(i, b)| {
        *b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(Status::Plain(
            StatusCode::BAD_REQUEST,
            "a malformed percent-encoding: % must be followed by two hex digits (%25 is a %)",
        ));
    }
    Ok(percent_decode_str(text).collect())
}

/// A boolean query parameter: `true` or `false`, nothing else (`prefix=1` was quietly false,
/// which made a prefix watch a watch of one key).
fn flag(value: &[u8], why: &'static str) -> std::result::Result<bool, Status> {
    match value {
        b"true" => Ok(true),
        b"false" => Ok(false),
        _ => Err(Status::Plain(StatusCode::BAD_REQUEST, why)),
    }
}

fn versioned(status: StatusCode, version: u64) -> Answer {
    let mut answer = json_answer(status, serde_json::json!({ "version": version }));
    answer.headers_mut().insert(ETAG, etag(version));
    answer
}

/// Why a request got no ordinary answer.
enum Status {
    /// The router's error, classified.
    Failed(Error),
    /// A status of the HTTP layer itself, with its reason.
    Plain(StatusCode, &'static str),
    /// A body over the value limit.
    TooLarge(usize),
    /// A request the connection's certificate may not make, and why.
    Forbidden(String),
    /// What the request names is not there (a lease).
    NotFound(&'static str),
}

impl Status {
    fn too_large(limit: usize) -> Status {
        Status::TooLarge(limit)
    }

    fn into_answer(self) -> Answer {
        let (status, message, class) = self.parts();
        let mut answer = json_answer(
            status,
            serde_json::json!({"error": message, "class": class}),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            answer
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        answer
    }

    /// The status, the message and the class of the error.
    fn parts(self) -> (StatusCode, String, &'static str) {
        match self {
            Status::Failed(e) => {
                let (status, class) = match (&e, e.class()) {
                    (Error::Busy(_), _) => (StatusCode::TOO_MANY_REQUESTS, "busy"),
                    (Error::NotFound(_), _) => (StatusCode::NOT_FOUND, "not_found"),
                    (_, ErrorClass::Retry) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                    (_, ErrorClass::MayHaveApplied) | (_, ErrorClass::Storage) => {
                        (StatusCode::GATEWAY_TIMEOUT, "unknown")
                    }
                    (_, ErrorClass::BadInput) => (StatusCode::BAD_REQUEST, "bad_request"),
                };
                (status, e.to_string(), class)
            }
            Status::Plain(status, why) => (status, why.to_string(), "bad_request"),
            Status::Forbidden(why) => (StatusCode::FORBIDDEN, why, "forbidden"),
            Status::NotFound(why) => (StatusCode::NOT_FOUND, why.to_string(), "not_found"),
            Status::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a value is at most {limit} bytes (limits.max_value_bytes)"),
                "bad_request",
            ),
        }
    }
}

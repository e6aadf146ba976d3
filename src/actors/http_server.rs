//! The one HTTP/1.1 accept loop (hyper) of a node's HTTP endpoints: the metrics endpoint and
//! the HTTP API. At most `max_connections` connections are served at once (more wait in the
//! kernel's backlog), at most `max_per_source` of them from one source address (one more is
//! closed at once, before its TLS handshake: `actors::sources`), and a request's headers must
//! arrive within `header_timeout` (hyper starts that clock again when a kept-alive connection
//! falls idle, so an idle connection gives its slot back too). A client that stops reading its
//! answers is closed once one write has waited `write_stall` (`limits.slow_reader_timeout_ms`,
//! the node port's rule), and one that stops sending a request's body is answered 408 by the
//! API (`http_api::read_body`): either kept its slot for good before (review, 2026-12-08: 64
//! such connections locked every other client of their address out). With TLS
//! (the HTTP API of a node with `[tls]`), each connection is HTTPS: its handshake, within the
//! handshake deadline and holding its connection slot, must verify a client certificate of
//! the cluster's CA (`tls::Peer::accept`, the node port's own rule), and every request is
//! answered knowing whose certificate it came with.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::actors::sources::PerSource;
use crate::tls::{Peer, Tls};

/// An endpoint's name (in logs) and bounds.
pub struct Endpoint {
    pub name: &'static str,
    pub max_connections: usize,
    pub max_per_source: usize,
    pub header_timeout: Duration,
    /// A connection whose one write waited this long (its client stopped reading) is closed.
    pub write_stall: Duration,
    /// HTTPS, and how long a connection's handshake may take; `None`: plaintext (whose
    /// requests are answered as `Peer::Unauthenticated`, as on the node port).
    pub tls: Option<(Arc<Tls>, Duration)>,
}

/// Serves `answer` on `listener` until the runtime stops.
pub async fn serve<A, F, B>(listener: std::net::TcpListener, endpoint: Endpoint, answer: A)
where
    A: Fn(Request<Incoming>, Peer) -> F + Clone + 'static,
    F: Future<Output = Response<B>> + 'static,
    B: Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Endpoint {
        name,
        max_connections,
        max_per_source,
        header_timeout,
        write_stall,
        tls,
    } = endpoint;
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("{name}: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(max_connections));
    let sources = PerSource::new(max_per_source);
    let mut refused: u64 = 0;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("{name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Closed at once (its slot with it) when its address holds its share already.
        let Some(source) = sources.take(from.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                log::warn!(
                    "{name}: refused a connection from {from} ({refused} refused so far): \
                     {} holds {max_per_source} connections already",
                    from.ip()
                );
            }
            continue;
        };
        let answer = answer.clone();
        let tls = tls.clone();
        actix_rt::spawn(async move {
            let accepted = match &tls {
                None => Peer::accept(None, stream).await,
                Some((tls, deadline)) => {
                    match tokio::time::timeout(*deadline, Peer::accept(Some(tls.as_ref()), stream))
                        .await
                    {
                        Ok(accepted) => accepted,
                        Err(_) => Err("TLS handshake timed out".to_string()),
                    }
                }
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(why) => {
                    log::debug!("{name}: connection refused: {why}");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(request, peer);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            // Writes only: a read may wait as long as the client likes (a watch's stream reads
            // nothing for hours), and the header deadline bounds the waits that matter.
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(write_stall));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(Box::pin(stream)), service)
                .await;
            if let Err(e) = served {
                log::debug!("{name}: connection closed: {e}");
            }
            drop((source, slot));
        });
    }
}

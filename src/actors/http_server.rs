//! The one HTTP/1.1 accept loop (hyper) of a node's HTTP endpoints: the metrics endpoint and
//! the HTTP API. At most `max_connections` connections are served at once (more wait in the
//! kernel's backlog), and a request's headers must arrive within `header_timeout`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

/// Serves `answer` on `listener` until the runtime stops; `name` names the endpoint in logs.
pub async fn serve<A, F, B>(
    listener: std::net::TcpListener,
    name: &'static str,
    max_connections: usize,
    header_timeout: Duration,
    answer: A,
) where
    A: Fn(Request<Incoming>) -> F + Clone + 'static,
    F: Future<Output = Response<B>> + 'static,
    B: Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("{name}: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("{name}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let answer = answer.clone();
        actix_rt::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(request);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                log::debug!("{name}: connection closed: {e}");
            }
            drop(slot);
        });
    }
}

//! Talking to a node below the client: raw (TLS) connections, and its `/metrics` page.

use std::net::SocketAddr;
use std::sync::Arc;

/// `GET path` over HTTP/1.1 (one request, `Connection: close`): the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of series `name` (labels included, as the text format prints them) in a
/// Prometheus text page.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The TLS identity of `stem` (`node-3`, `client`, `operator`) in `dir`, trusting `ca`.
pub fn tls_identity(
    dir: &std::path::Path,
    ca: &std::path::Path,
    stem: &str,
    role: paxkv::tls::Role,
) -> Arc<paxkv::tls::Tls> {
    paxkv::tls::Tls::load(
        paxkv::tls::TlsFiles {
            ca: ca.to_path_buf(),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        },
        role,
    )
    .unwrap()
}

/// A connection to `addr`, TLS with `identity` if given (checking the address's IP).
pub async fn tls_dial(
    addr: SocketAddr,
    identity: Option<&paxkv::tls::Tls>,
) -> std::io::Result<paxkv::tls::BoxStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    paxkv::tls::dial(identity, tcp, paxkv::tls::Dial::Address(addr.ip())).await
}

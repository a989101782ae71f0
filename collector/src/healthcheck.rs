//! `tally-collector healthcheck`: asks a running `serve` for `/healthz`, for a container's or
//! Kubernetes' probe, which has no curl in the image. Healthy is an answer of 200 (the store can
//! write); anything else is a reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// How long the probe waits for the whole answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The URL probed when none is given: `/healthz` on `http_listen`, through loopback when it
/// listens on every address.
pub fn default_url(http_listen: SocketAddr) -> String {
    let ip = match http_listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, http_listen.port()))
}

/// The collector's own word on its health when it is healthy; otherwise why not.
pub async fn probe(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs are probed"));
    }
    let authority = uri.authority().ok_or_else(|| format!("{url}: no host"))?.clone();
    let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("{address}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|e| format!("{address}: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("{address}: {e}"))?.to_bytes();
        let body = String::from_utf8_lossy(&body).trim().to_owned();
        match status {
            hyper::StatusCode::OK => Ok(body),
            _ => Err(format!("{url} answered {status}: {body}")),
        }
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| format!("{url}: no answer in {} s", TIMEOUT.as_secs()))?
}

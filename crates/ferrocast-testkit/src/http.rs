use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` over HTTP/1.0; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], "").await
}

/// `GET path` over HTTP/1.0 on a connected `stream` (TLS, for example), with
/// `host` as the Host header; returns the status code and the body.
pub async fn http_get_on<S>(stream: S, host: &str, path: &str) -> std::io::Result<(u16, String)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let response = http_request_on(stream, host, "GET", path, &[], "").await?;
    Ok((response.status, response.body))
}

/// `method path` over HTTP/1.0 with `headers` and `body` (a
/// `content-length` is added); returns the status code and the body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let response = http_exchange(addr, method, path, headers, body).await?;
    Ok((response.status, response.body))
}

/// A response read whole: what a test checks of status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// In order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of the header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// [`http_request`], with the response's headers.
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse> {
    let stream = TcpStream::connect(addr).await?;
    http_request_on(stream, &addr.to_string(), method, path, headers, body).await
}

/// [`http_exchange`] on a connected `stream`, with `host` as the Host header.
async fn http_request_on<S>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // A TLS peer may end without close_notify once the body is complete.
    if let Err(error) = stream.read_to_end(&mut response).await {
        if error.kind() != std::io::ErrorKind::UnexpectedEof || response.is_empty() {
            return Err(error);
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Waits until `GET /readyz` on the admin listener `admin` answers `want`
/// (200 ready, 503 not ready); returns how long that took. Panics after 15 s.
pub async fn wait_readyz(admin: SocketAddr, want: u16) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        let status = http_get(admin, "/readyz").await.map_or(0, |(s, _)| s);
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{admin}/readyz never answered {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The sum of the samples of `name` in a Prometheus text exposition whose
/// labels include every `key="value"` in `labels` (0 when there is none).
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let all_match = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            all_match.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series() {
        let text = "# HELP x y\nferrocast_a{reason=\"slow\",p=\"1\"} 2\nferrocast_a{reason=\"fast\"} 5\nferrocast_a_total 9\nferrocast_b 1\n";
        assert_eq!(metric(text, "ferrocast_a", &[]), 7.0);
        assert_eq!(metric(text, "ferrocast_a", &[("reason", "slow")]), 2.0);
        assert_eq!(metric(text, "ferrocast_b", &[]), 1.0);
        assert_eq!(metric(text, "ferrocast_c", &[]), 0.0);
    }
}

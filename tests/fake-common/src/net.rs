//! Ports on loopback: an HTTP server's accept loop, and the front doors (a load balancer,
//! Cloud Run's URLs) that read a request's head, route it by its `Host` and relay bytes.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::http::request::Parts;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Listens on `port` of 127.0.0.1 (0: any free port), and on the same port of ::1 when
/// the machine has IPv6: `*.localhost` resolves to both.
pub async fn bind_loopback(port: u16) -> std::io::Result<Vec<TcpListener>> {
    let v4 = TcpListener::bind(("127.0.0.1", port)).await?;
    let port = v4.local_addr()?.port();
    let mut listeners = vec![v4];
    if let Ok(v6) = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
        listeners.push(v6);
    }
    Ok(listeners)
}

/// Answers HTTP/1.1 on every connection `listener` accepts: each request, its body read
/// whole, with `handle`.
pub async fn serve_http<F, R, B>(listener: TcpListener, handle: F)
where
    F: Fn(Parts, Bytes) -> R + Clone + Send + 'static,
    R: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_connection(stream, handle.clone()));
    }
}

/// Answers HTTP/1.1 on one connection (a TCP stream, or a TLS stream over one): each
/// request, its body read whole, with `handle`.
pub async fn serve_connection<I, F, R, B>(io: I, handle: F)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Parts, Bytes) -> R + Clone + Send + 'static,
    R: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handle = handle.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, Infallible>(handle(parts, body).await)
        }
    });
    // With upgrades: a handler may take the connection over (a websocket).
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

/// A request's head as a front door reads it: the bytes up to its blank line (and any that
/// came with them).
pub struct Head {
    bytes: Vec<u8>,
    text: String,
}

impl Head {
    /// The path of the request line (`/` when it has none).
    pub fn path(&self) -> &str {
        self.text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/")
    }

    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.text.lines().skip(1).find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        })
    }

    /// The host name of the `Host` header, without its port, in lowercase.
    pub fn host(&self) -> String {
        let host = self.header("host").unwrap_or_default();
        host.rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok())
            .map_or(host.as_str(), |(h, _)| h)
            .to_ascii_lowercase()
    }
}

/// Where a front door sends a connection.
pub enum Route {
    /// To the backend on this loopback port; `unreachable` is the raw HTTP answer when
    /// nothing accepts the connection there.
    Backend { port: u16, unreachable: String },
    /// A raw HTTP answer, then the connection closes.
    Answer(String),
}

/// A front door: reads each request's head, asks `route` where it goes, then relays bytes
/// both ways (or answers).
pub async fn serve_front<F>(listener: TcpListener, route: F)
where
    F: Fn(&Head) -> Route + Clone + Send + Sync + 'static,
{
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let route = route.clone();
        tokio::spawn(async move {
            let _ = relay(client, &route).await;
        });
    }
}

async fn relay(mut client: TcpStream, route: &impl Fn(&Head) -> Route) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = Head {
        text: String::from_utf8_lossy(&head).into_owned(),
        bytes: head,
    };
    let answer = match route(&head) {
        Route::Backend { port, unreachable } => match TcpStream::connect(("127.0.0.1", port)).await
        {
            Ok(mut upstream) => {
                upstream.write_all(&head.bytes).await?;
                return tokio::io::copy_bidirectional(&mut client, &mut upstream)
                    .await
                    .map(|_| ());
            }
            Err(_) => unreachable,
        },
        Route::Answer(answer) => answer,
    };
    client.write_all(answer.as_bytes()).await
}

/// A GET of a local URL (`http://127.0.0.1:PORT/...`), its body as JSON.
pub async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let (host, port) = (
        uri.host().ok_or("no host")?.to_string(),
        uri.port_u16().unwrap_or(80),
    );
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", format!("{host}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = send.send_request(req).await.map_err(|e| e.to_string())?;
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn heads() {
        let text = "GET /a?b HTTP/1.1\r\nHOST: Svc.Example.localhost:8080\r\nAuthorization:  Bearer x \r\n\r\n".to_string();
        let head = super::Head {
            bytes: text.clone().into_bytes(),
            text,
        };
        assert_eq!(head.path(), "/a?b");
        assert_eq!(head.host(), "svc.example.localhost");
        assert_eq!(head.header("authorization").as_deref(), Some("Bearer x"));
        assert_eq!(head.header("cookie"), None);
    }
}

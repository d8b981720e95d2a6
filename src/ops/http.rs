//! Plain HTTP/1.1 GETs for health checks and version checks.
//!
//! This uses hyper, which bollard already brings in, rather than reqwest: a health probe
//! to a local port needs no TLS, no pool and no redirects, and reqwest would add about a
//! third to the cold compile of every service's xtask.

use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// The status and body of one GET, or an error when nothing answered in `timeout`.
pub async fn get(host: &str, port: u16, path: &str, timeout: Duration) -> Result<(u16, String)> {
    get_as(host, port, None, path, timeout).await
}

/// `get`, for the host name `vhost` (its `Host` header) where given: what a proxy that
/// routes by host name answers for it. Such a check is marked (`CHECK_HEADER`) so that
/// the edge answers it over plain HTTP even where the site redirects to HTTPS.
pub async fn get_as(
    host: &str,
    port: u16,
    vhost: Option<&str>,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let shown = vhost.unwrap_or(host);
    tokio::time::timeout(timeout, get_inner(host, port, vhost, path))
        .await
        .with_context(|| format!("no answer from {shown}:{port}{path} within {timeout:?}"))?
}

/// `text` percent-encoded as a query parameter's value (RFC 3986's unreserved
/// characters kept as they are).
pub fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The header that marks pymdeploy's own checks.
pub const CHECK_HEADER: &str = "x-pymdeploy-check";

/// Whether something accepts TCP connections on `host:port` (a port already taken).
pub async fn listening(host: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((host, port))
        )
        .await,
        Ok(Ok(_))
    )
}

async fn get_inner(
    host: &str,
    port: u16,
    vhost: Option<&str>,
    path: &str,
) -> Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .context("HTTP handshake failed")?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::get(path);
    if vhost.is_some() {
        req = req.header(CHECK_HEADER, "1");
    }
    let req = req
        .header(
            hyper::header::HOST,
            format!("{}:{port}", vhost.unwrap_or(host)),
        )
        .header(
            hyper::header::USER_AGENT,
            concat!("pymdeploy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .context("cannot build the request")?;
    let res = sender
        .send_request(req)
        .await
        .with_context(|| format!("GET {path} failed"))?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .context("cannot read the response body")?
        .to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A client connector for HTTPS, trusting the Web PKI's roots (webpki-roots) and the
/// certificates of `extra_ca_pem`; plain HTTP too where `allow_http` (a local server).
pub fn https_connector(
    extra_ca_pem: Option<&str>,
    allow_http: bool,
) -> Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(c.context("the CA is not PEM")?)
                .context("the CA's certificate is not usable")?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    Ok(match allow_http {
        true => builder.https_or_http().enable_http1().build(),
        false => builder.https_only().enable_http1().build(),
    })
}

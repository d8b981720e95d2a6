//! What the acceptance tests need: the server under test, named by the environment
//! (`PYM_SERVER_HOST`, `PYM_SERVER_PORT`, `PYM_ENV`, `PYM_SERVER_URL` with its scheme, and
//! `PYM_SERVER_TOKEN`, a bearer token for a private service), and a GET: plain HTTP here,
//! HTTPS (Cloud Run's URLs) through `curl`.
//!
//! The pipeline sets these variables when it runs the tests against a local container,
//! staging or live. Run by hand against any server:
//! `PYM_SERVER_HOST=127.0.0.1 PYM_SERVER_PORT=8080 PYM_ENV=local cargo test -p {{name}}-testaccept`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Server {
    pub host: String,
    pub port: u16,
    /// Whether it is reached over HTTPS (`PYM_SERVER_URL` starts with `https://`).
    pub tls: bool,
    /// The bearer token a private service wants (`PYM_SERVER_TOKEN`), if any.
    pub token: Option<String>,
    /// Where the server runs: local, staging or live.
    pub env: String,
}

pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.body))
    }
}

impl Server {
    /// The server the pipeline names. Panics, failing the test, if it names none.
    pub fn from_env() -> Server {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: acceptance tests run against a server the pipeline starts (`cargo xtask accept-local`)"))
        };
        let port = var("PYM_SERVER_PORT");
        Server {
            host: var("PYM_SERVER_HOST"),
            port: port.parse().unwrap_or_else(|_| panic!("PYM_SERVER_PORT is not a port: {port}")),
            tls: std::env::var("PYM_SERVER_URL").is_ok_and(|u| u.starts_with("https://")),
            token: std::env::var("PYM_SERVER_TOKEN").ok().filter(|t| !t.is_empty()),
            env: var("PYM_ENV"),
        }
    }

    /// GET `path`; panics if the server cannot be reached.
    pub fn get(&self, path: &str) -> Response {
        if self.tls {
            return self.get_tls(path);
        }
        let addr = format!("{}:{}", self.host, self.port);
        let mut stream = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("cannot reach the server at {addr}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a valid timeout");
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").expect("the request is sent");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("cannot read the answer from {addr}: {e}"));
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP answer: {raw}"));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in: {head}"));
        Response { status, body: body.to_string() }
    }

    /// GET over HTTPS with `curl` (no TLS library compiled into the tests).
    fn get_tls(&self, path: &str) -> Response {
        let url = format!("https://{}:{}{path}", self.host, self.port);
        let mut curl = std::process::Command::new("curl");
        // The token from a file, so that it is not in curl's command line.
        let header = std::env::temp_dir().join(format!("pym-accept-{}-{:?}.header", std::process::id(), std::thread::current().id()));
        if let Some(t) = &self.token {
            std::fs::write(&header, format!("Authorization: Bearer {t}")).expect("a header file");
            curl.arg("-H").arg(format!("@{}", header.display()));
        }
        let out = curl.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", &url]).output();
        let _ = std::fs::remove_file(&header);
        let out = out.unwrap_or_else(|e| panic!("cannot run curl for {url} (HTTPS needs it): {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "cannot reach the server at {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
        let (body, status) = text.rsplit_once('\n').unwrap_or_else(|| panic!("no status from curl for {url}"));
        Response { status: status.trim().parse().unwrap_or_else(|_| panic!("no status from curl for {url}: {status}")), body: body.to_string() }
    }
}

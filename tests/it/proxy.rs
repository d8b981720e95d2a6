//! The live proxy as an HTTP/1.1 client and server sees it, byte for byte: the real
//! `__proxy` process in front of an upstream this test writes (it answers each path its
//! own way: chunked with trailers, to the connection's end, early hints, a HEAD, a
//! connection closed under a pooled request, a body cut short, an upgrade). Both of the
//! proxy's paths are driven: its own, and hyper's for what it hands over (HTTP/1.0, a
//! chunked request body, an upgrade), on one client connection. No engine is needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{free_port, pymdeploy_bin, temp_dir, wait_listening};

/// A request as the upstream read it.
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// Reads one request from `r`: `None` at the connection's end.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if let Some(n) = header("content-length") {
        body.resize(n.parse().unwrap(), 0);
        r.read_exact(&mut body).ok()?;
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Seen { head, body })
}

/// The upstream: each connection numbered (from 1), each request answered by its path.
struct Upstream {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let id = counted.fetch_add(1, Ordering::SeqCst) + 1;
                std::thread::spawn(move || Upstream::serve(stream, id));
            }
        });
        Upstream { port, connections }
    }

    fn serve(stream: TcpStream, id: usize) {
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        while let Some(req) = read_request(&mut r) {
            let target = req.head.split(' ').nth(1).unwrap_or("");
            let path = target.split('?').next().unwrap_or("").to_string();
            let ok = |w: &mut TcpStream, body: &[u8]| {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Connection: {id}\r\n\r\n",
                    body.len()
                );
                w.write_all(&[head.as_bytes(), body].concat())
            };
            let sent = match path.as_str() {
                // What the upstream was sent, head and body.
                "/echo" => ok(&mut w, &[req.head.as_bytes(), &req.body].concat()),
                "/chunked" => w.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5;x=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n",
                ),
                "/to-the-end" => {
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the connection ends");
                    return;
                }
                "/hints" => w.write_all(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                ),
                "/head" => w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
                "/no-content" => w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n"),
                // An answer, then bytes nobody asked for on the idle connection: a proxy
                // that pools it would give them as the next request's answer.
                "/stray" => {
                    let sent = w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG");
                    sent
                }
                // `Connection` naming the length must not unframe the answer.
                "/named-length" => w.write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
                ),
                "/big" => ok(&mut w, &vec![b'x'; 1 << 20]),
                // Answered, then the connection closed with no word of it (a server's
                // keep-alive timeout): the proxy's next request on it finds it closed.
                "/then-close" => {
                    let _ = ok(&mut w, b"bye");
                    return;
                }
                "/cut-short" => {
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
                    return;
                }
                "/upgrade" => {
                    let _ = w.write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n",
                    );
                    // Echo, as a WebSocket server would answer frames.
                    let mut rest = r.into_inner();
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = rest.read(&mut buf) {
                        if n == 0 || w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    return;
                }
                _ => ok(&mut w, format!("conn {id}").as_bytes()),
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// A process the test started, killed when dropped (a failed assertion included).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `__proxy` process, killed when dropped, its directory removed.
struct Proxy {
    _child: Running,
    port: u16,
    admin: u16,
    state: PathBuf,
    log: PathBuf,
}

impl Proxy {
    fn start(upstream_port: u16) -> Proxy {
        let dir = temp_dir("proxy-h1");
        let state = dir.join("upstream");
        std::fs::write(
            &state,
            format!("127.0.0.1:{upstream_port} 127.0.0.1:{upstream_port}\n"),
        )
        .unwrap();
        let (port, admin) = (free_port(), free_port());
        let log = dir.join("proxy.log");
        let child = std::process::Command::new(pymdeploy_bin())
            .args(["__proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .arg("--state")
            .arg(&state)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("proxy.err")).unwrap())
            .spawn()
            .unwrap();
        wait_listening(port, "the proxy", &dir.join("proxy.err"));
        Proxy {
            _child: Running(child),
            port,
            admin,
            state,
            log,
        }
    }

    fn connect(&self) -> Client {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.log.with_file_name("proxy.err")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(dir) = self.state.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A client connection that reads responses as HTTP/1.1 frames them.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

/// A response: its status, head (lowercase names) and body (chunks as sent, trailers
/// after a blank line).
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    fn send(&mut self, raw: &str) -> &mut Client {
        self.w.write_all(raw.as_bytes()).unwrap();
        self
    }

    fn get(&mut self, path: &str) -> Answer {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n"));
        self.answer(false)
    }

    /// Reads one response (`head_only`: to a HEAD, with no body).
    fn answer(&mut self, head_only: bool) -> Answer {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.r.read_line(&mut line).unwrap() > 0,
                "the connection ended in a response's head: {head:?}"
            );
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let status: u16 = head[9..12].parse().unwrap();
        let mut a = Answer {
            status,
            head,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            return a;
        }
        if let Some(n) = a.header("content-length") {
            a.body.resize(n.parse().unwrap(), 0);
            self.r.read_exact(&mut a.body).unwrap();
        } else if a.header("transfer-encoding").is_some() {
            loop {
                let mut size = String::new();
                self.r.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                if n == 0 {
                    // The trailers, up to the blank line.
                    loop {
                        let mut line = String::new();
                        self.r.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        a.body.extend_from_slice(b"\n");
                        a.body.extend_from_slice(line.trim_end().as_bytes());
                    }
                    break;
                }
                self.r.read_exact(&mut chunk).unwrap();
                a.body.extend_from_slice(&chunk[..n]);
            }
        } else {
            self.r.read_to_end(&mut a.body).unwrap();
        }
        a
    }

    /// Whether the proxy has closed this connection.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn the_proxy_passes_http1_as_it_is_framed_on_its_own_path_and_hyper_s() {
    let up = Upstream::start();
    let proxy = Proxy::start(up.port);
    let mut c = proxy.connect();

    // Forwarded headers: the client's X-Forwarded-For extended, the hop-by-hop ones and
    // those `Connection` names taken out, the body sent whole.
    c.send(concat!(
        "POST /echo?q=1 HTTP/1.1\r\nHost: App.Test:8080\r\nX-Forwarded-For: 10.0.0.9\r\n",
        "Connection: keep-alive, x-private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n",
        "Proxy-Authorization: Basic eA==\r\nX-Kept: yes\r\nContent-Length: 5\r\n\r\nhello",
    ));
    let a = c.answer(false);
    let seen = a.text();
    assert_eq!(a.status, 200, "{seen}");
    assert!(seen.starts_with("POST /echo?q=1 HTTP/1.1\r\n"), "{seen}");
    let lower = seen.to_ascii_lowercase();
    assert!(
        lower.contains("x-forwarded-for: 10.0.0.9, 127.0.0.1\r\n"),
        "{seen}"
    );
    assert!(lower.contains("x-forwarded-proto: http\r\n"), "{seen}");
    assert!(
        lower.contains("x-forwarded-host: app.test:8080\r\n"),
        "{seen}"
    );
    assert!(lower.contains("x-kept: yes\r\n"), "{seen}");
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "connection:",
    ] {
        assert!(!lower.contains(gone), "{gone} was forwarded: {seen}");
    }
    assert!(seen.ends_with("\r\n\r\nhello"), "{seen}");
    assert!(
        a.header("date").is_some(),
        "an answer without a date is given one"
    );

    // A chunked response passes chunk by chunk with its trailer; one to the connection's
    // end closes the client's connection after it.
    let a = c.get("/chunked");
    assert_eq!(a.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(a.text(), "hello, world\nx-sum: 12");
    let a = c.get("/hints");
    assert_eq!(
        (a.status, a.header("link")),
        (103, Some("</a.css>; rel=preload".into()))
    );
    let a = c.answer(false);
    assert_eq!((a.status, a.text().as_str()), (200, "ok"));
    c.send("HEAD /head HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let a = c.answer(true);
    assert_eq!(
        (a.status, a.header("content-length")),
        (200, Some("5".into()))
    );
    assert_eq!(c.get("/no-content").status, 204);
    let a = c.get("/big");
    assert_eq!(a.body.len(), 1 << 20);
    // Two requests in one write (pipelined) are answered in order.
    c.send("GET /a HTTP/1.1\r\nHost: app.test\r\n\r\nGET /echo HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert!(c.answer(false).text().starts_with("conn "));
    assert!(c.answer(false).text().starts_with("GET /echo HTTP/1.1\r\n"));

    // A request whose `Connection` names its length is still framed by it: the body
    // (which looks like a request) reaches the upstream as the body, not as a second
    // request, and the answers stay in step.
    let smuggled = "GET /no-content HTTP/1.1\r\nHost: app.test\r\n\r\n";
    c.send(&format!(
        "POST /echo HTTP/1.1\r\nHost: app.test\r\nConnection: content-length, host\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    ));
    let a = c.answer(false);
    let seen = a.text().to_ascii_lowercase();
    assert!(seen.ends_with(&smuggled.to_ascii_lowercase()), "{seen}");
    assert!(
        seen.contains(&format!("content-length: {}\r\n", smuggled.len())),
        "{seen}"
    );
    assert!(seen.contains("host: app.test\r\n"), "{seen}");
    let a = c.get("/named-length");
    assert_eq!((a.status, a.text().as_str()), (200, "ok"));
    assert!(
        c.get("/a").text().starts_with("conn "),
        "answers out of step"
    );
    // Bytes the upstream sent on an idle pooled connection are never an answer.
    assert_eq!(c.get("/stray").status, 204);
    std::thread::sleep(Duration::from_millis(300));
    let a = c.get("/a");
    assert!(a.text().starts_with("conn "), "{}", a.text());

    // Handed to hyper for the rest of the connection: a chunked request body, then an
    // upgrade, spliced both ways.
    c.send("POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    let a = c.answer(false);
    assert_eq!(a.status, 200);
    assert!(a.text().ends_with("\r\n\r\nabcde"), "{}", a.text());
    // (hyper sends trailers only to a client that asked for them with `TE: trailers`)
    assert!(c.get("/chunked").text().starts_with("hello, world"));
    c.send(
        "GET /upgrade HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    );
    assert_eq!(c.answer(false).status, 101);
    c.send("ping");
    let mut echoed = [0u8; 4];
    c.r.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping");

    // HTTP/1.0 goes to hyper from the first request.
    let mut c = proxy.connect();
    c.send("GET /a HTTP/1.0\r\nHost: app.test\r\n\r\n");
    assert_eq!(c.answer(false).status, 200);

    // A body to the connection's end reaches the client in chunks, its connection kept;
    // or as it is, when the client closes anyway.
    let mut c = proxy.connect();
    let a = c.get("/to-the-end");
    assert_eq!(a.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(a.text(), "until the connection ends");
    assert!(c.get("/a").text().starts_with("conn "));
    c.send("GET /to-the-end HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    let a = c.answer(false);
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    assert_eq!(a.text(), "until the connection ends");

    // `Connection: close` from the client is answered, then the connection closed.
    let mut c = proxy.connect();
    c.send("GET /a HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    let a = c.answer(false);
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    assert!(c.closed());

    // A pooled connection the upstream closed under the next request: sent once more, on
    // a new connection; the client sees nothing of it.
    let mut c = proxy.connect();
    assert_eq!(c.get("/then-close").text(), "bye");
    let before = up.connections.load(Ordering::SeqCst);
    let a = c.get("/a");
    assert_eq!(a.status, 200, "{}", proxy.errors());
    assert!(up.connections.load(Ordering::SeqCst) > before);

    // A body cut short: the client's connection is closed, not left waiting.
    let mut c = proxy.connect();
    c.send("GET /cut-short HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let mut got = Vec::new();
    let _ = c.r.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("abc"),
        "{got}"
    );

    // No upstream answers: 502, said in the body, and the connection kept.
    std::fs::write(&proxy.state, format!("gone:1 127.0.0.1:{}\n", free_port())).unwrap();
    let admin = proxy.admin;
    let reload = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{admin}/reload")])
        .status()
        .unwrap();
    assert!(reload.success());
    let mut c = proxy.connect();
    let a = c.get("/a");
    assert_eq!(a.status, 502);
    assert!(a.text().contains("did not answer"), "{}", a.text());
    assert_eq!(
        c.get("/a").status,
        502,
        "the connection is kept after a 502"
    );
    // To HEAD, no body: the next answer on the connection is read from its start.
    c.send("HEAD /a HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let a = c.answer(true);
    assert_eq!(a.status, 502);
    let a = c.get("/a");
    assert!(
        a.status == 502 && a.text().contains("did not answer"),
        "{}",
        a.text()
    );

    // Every answer of the upstream was counted, and the ones it never gave.
    let metrics = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{admin}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let counted = |upstream: &str, answer: &str| -> u64 {
        let series =
            format!("pym_proxy_requests_total{{upstream=\"{upstream}\",answer=\"{answer}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    let first = format!("127.0.0.1:{}", up.port);
    assert_eq!(counted(&first, "ok"), 24, "{metrics}");
    assert_eq!(counted("gone:1", "none"), 4, "{metrics}");
}

/// curl through the edge to `host` on loopback `port`: status, then the body, with
/// `extra` arguments; certificates are not checked (the test made its own).
fn curl(port: u16, host: &str, scheme: &str, path: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--http1.1", "-w", "\n%{http_code}"])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("{scheme}://{host}:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_edge_s_own_path_routes_by_host_over_tls_and_logs_each_request() {
    let up = Upstream::start();
    let dir = temp_dir("edge-h1");
    let sites = dir.join("state/sites");
    std::fs::create_dir_all(&sites).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=secure.test"])
        .args(["-addext", "subjectAltName=DNS:secure.test", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let pem = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let confs = [
        (
            "secure",
            serde_json::json!({"hosts": ["secure.test"], "service": "s", "env": "live",
                "tls": {"mode": "files", "cert_pem": pem("cert.pem"), "key_pem": pem("key.pem")}}),
        ),
        (
            "plain",
            serde_json::json!({"hosts": ["plain.test"], "service": "p", "env": "live"}),
        ),
    ];
    for (key, conf) in confs {
        std::fs::write(sites.join(format!("{key}.json")), conf.to_string()).unwrap();
        std::fs::write(
            sites.join(format!("{key}.upstream")),
            format!("127.0.0.1:{0} 127.0.0.1:{0}\n", up.port),
        )
        .unwrap();
    }
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let log = dir.join("access.log");
    let edge = std::process::Command::new(pymdeploy_bin())
        .args(["__proxy", "--listen", &format!("127.0.0.1:{http}")])
        .args(["--listen-tls", &format!("127.0.0.1:{https}")])
        .args(["--https-port", &https.to_string()])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--sites")
        .arg(&sites)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("edge.err")).unwrap())
        .spawn()
        .unwrap();
    let edge = Running(edge);
    wait_listening(https, "the edge", &dir.join("edge.err"));

    // HTTPS over HTTP/1.1: TLS ends at the edge, and what a client says of it is not
    // believed.
    let got = curl(
        https,
        "secure.test",
        "https",
        "/echo",
        &["-H", "X-Forwarded-Proto: http"],
    );
    assert!(got.ends_with("\n200"), "{got}");
    let lower = got.to_ascii_lowercase();
    assert!(lower.contains("x-forwarded-proto: https\r\n"), "{got}");
    assert!(!lower.contains("x-forwarded-proto: http\r\n"), "{got}");
    // A TLS site asked over plain HTTP is sent to HTTPS; a host nobody holds is 404; the
    // plain site answers plain HTTP.
    let got = curl(http, "secure.test", "http", "/a?b=1", &["-D", "-"]);
    assert!(got.ends_with("\n308"), "{got}");
    assert!(
        got.to_ascii_lowercase()
            .contains(&format!("location: https://secure.test:{https}/a?b=1")),
        "{got}"
    );
    assert!(curl(http, "nobody.test", "http", "/", &[]).ends_with("\n404"));
    let got = curl(http, "PLAIN.test.", "http", "/echo", &[]);
    assert!(got.ends_with("\n200"), "{got}");
    assert!(
        got.to_ascii_lowercase()
            .contains("x-forwarded-proto: http\r\n"),
        "{got}"
    );

    // One access-log line per request, with its site, host, TLS and upstream.
    let wanted = |line: &serde_json::Value, site: &str, tls: bool, status: u64| {
        line["site"] == site && line["tls"] == tls && line["status"] == status
    };
    let mut lines = Vec::new();
    crate::support::wait_until("four access-log lines", Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        lines.len() >= 4
    });
    let upstream = format!("127.0.0.1:{}", up.port);
    assert!(
        lines.iter().any(|l| wanted(l, "secure", true, 200)
            && l["host"] == "secure.test"
            && l["path"] == "/echo"
            && l["upstream"] == upstream.as_str()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| wanted(l, "secure", false, 308)),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| wanted(l, "", false, 404)), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| wanted(l, "plain", false, 200) && l["host"] == "plain.test"),
        "{lines:?}"
    );
    drop(edge);
    let _ = std::fs::remove_dir_all(&dir);
}

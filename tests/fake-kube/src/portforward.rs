//! `…/pods/{name}/portforward`, in the three ways an apiserver (1.31 and later) streams it:
//!
//! - SPDY/3.1 tunnelled over a websocket (subprotocol `SPDY/3.1+portforward.k8s.io`), what
//!   kubectl 1.32 asks for first: binary messages carry the SPDY byte stream, with no
//!   framing of their own;
//! - plain SPDY/3.1 (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version:
//!   portforward.k8s.io`), kubectl's fallback when the websocket is refused;
//! - the `v4.channel.k8s.io` websocket with `?ports=N`, as the kube crate and client-go's
//!   websocket port-forward speak it: each binary message prefixed by its channel (port
//!   i: data `2i`, errors `2i+1`), and first, on each channel, the port as two
//!   little-endian bytes (the first port of a connection is served).
//!
//! Over SPDY, as the kubelet serves it: each forwarded connection is a pair of streams
//! (`streamtype` error and data, one `requestid`, the container `port`), each answered
//! with an empty SYN_REPLY; the data stream is relayed to the container's port (through
//! the loopback port the engine published), then both are finished with an empty DATA
//! and FIN (when one direction ends, the other gets a second, as containerd gives it); a
//! port nothing answers on gets the kubelet's error on the error stream and both streams
//! reset. PINGs are echoed; nothing is sent before the client's first frame.

use futures_util::{SinkExt, StreamExt};
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::{Call, KErr, Query};
use crate::{Reply, Shared, engine, spdy};

const PROTOCOL: &str = "v4.channel.k8s.io";

pub fn serve(
    shared: &Shared,
    call: &Call,
    parts: &Parts,
    upgrade: Option<OnUpgrade>,
    q: &Query,
) -> Reply {
    let (Some(ns), Some(name)) = (call.ns.as_deref(), call.name.as_deref()) else {
        return KErr::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .reply();
    };
    let pod = {
        let st = shared.lock();
        let Some(pod) = st.get("pods", ns, name) else {
            return KErr::not_found(call.res, name).reply();
        };
        if pod["status"]["phase"] != "Running" {
            return KErr::bad_request(format!(
                "pod {name} is not running (phase {})",
                pod["status"]["phase"].as_str().unwrap_or("Pending")
            ))
            .reply();
        }
        pod.clone()
    };
    let header = |h: &str| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let upgrading = header("connection")
        .to_ascii_lowercase()
        .contains("upgrade");
    let websocket = upgrading
        && header("upgrade").eq_ignore_ascii_case("websocket")
        && !header("sec-websocket-key").is_empty();
    // As the apiserver reads them: the first header line, split at commas.
    let offered: Vec<String> = header("sec-websocket-protocol")
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let tunnelled: Vec<&str> = offered
        .iter()
        .filter(|p| p.ends_with(".k8s.io"))
        .filter_map(|p| p.strip_prefix(TUNNEL_PREFIX))
        .collect();
    let target = Target {
        shared: shared.me.upgrade(),
        uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        ip: pod["status"]["podIP"].as_str().unwrap_or("").to_string(),
        ns: ns.to_string(),
        name: name.to_string(),
    };
    match upgrade {
        Some(upgrade) if websocket && !tunnelled.is_empty() => {
            if !tunnelled.contains(&SPDY_PROTOCOL) {
                return unnegotiated(&tunnelled);
            }
            tokio::spawn(async move {
                if let Ok(io) = upgrade.await {
                    tunnel(hyper_util::rt::TokioIo::new(io), target).await;
                }
            });
            websocket_switch(
                &header("sec-websocket-key"),
                &format!("{TUNNEL_PREFIX}{SPDY_PROTOCOL}"),
            )
        }
        Some(upgrade) if websocket => v4(upgrade, &header, &offered, target, q),
        Some(upgrade)
            if upgrading && header("upgrade").to_ascii_lowercase().contains("spdy/3.1") =>
        {
            let asked: Vec<String> = parts
                .headers
                .get_all("x-stream-protocol-version")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            if asked.is_empty() {
                return KErr::bad_request(
                    "unable to upgrade: X-Stream-Protocol-Version is required",
                )
                .reply();
            }
            if !asked.iter().any(|p| p == SPDY_PROTOCOL) {
                let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
                return unnegotiated(&asked);
            }
            tokio::spawn(async move {
                if let Ok(io) = upgrade.await {
                    let (rd, wr) = tokio::io::split(hyper_util::rt::TokioIo::new(io));
                    spdy_over(rd, wr, target).await;
                }
            });
            switching(&[
                (hyper::header::CONNECTION, "Upgrade".into()),
                (hyper::header::UPGRADE, "SPDY/3.1".into()),
                (
                    hyper::header::HeaderName::from_static("x-stream-protocol-version"),
                    SPDY_PROTOCOL.into(),
                ),
            ])
        }
        _ => KErr::bad_request("Upgrade request required").reply(),
    }
}

/// The port-forward protocol over SPDY, and the prefix of its websocket tunnel.
const SPDY_PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL_PREFIX: &str = "SPDY/3.1+";

/// The kubelet's 403 to a protocol it does not speak (kubectl then falls back to SPDY).
fn unnegotiated(asked: &[&str]) -> Reply {
    hyper::Response::builder()
        .status(403)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-accepted-stream-protocol-versions", SPDY_PROTOCOL)
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::from(format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{SPDY_PROTOCOL}]\n",
                asked.join(" ")
            )),
        )))
        .expect("a valid response")
}

/// The 101 that takes a websocket with `protocol`.
fn websocket_switch(key: &str, protocol: &str) -> Reply {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    switching(&[
        (hyper::header::UPGRADE, "websocket".into()),
        (hyper::header::CONNECTION, "Upgrade".into()),
        (hyper::header::SEC_WEBSOCKET_ACCEPT, accept),
        (hyper::header::SEC_WEBSOCKET_PROTOCOL, protocol.into()),
    ])
}

fn switching(headers: &[(hyper::header::HeaderName, String)]) -> Reply {
    let mut r = hyper::Response::builder().status(101);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    r.body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
        bytes::Bytes::new(),
    )))
    .expect("a valid response")
}

/// The pod a port-forward reaches, read again when each connection starts.
struct Target {
    shared: Option<std::sync::Arc<Shared>>,
    ns: String,
    name: String,
    uid: String,
    ip: String,
}

impl Target {
    /// Where the pod's `port` answers from here, while the pod runs.
    fn reach(&self, port: u16) -> Option<(String, u16)> {
        let shared = self.shared.as_ref()?;
        let st = shared.lock();
        let pod = st
            .get("pods", &self.ns, &self.name)
            .filter(|p| p["metadata"]["uid"] == self.uid.as_str())?;
        engine::reach(&st, pod, port)
    }

    /// The kubelet's words for a port nothing answers on.
    fn refused(&self, port: u16) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid : failed to connect to {}:{port}: connection refused",
            self.uid, self.ip
        )
    }
}

fn v4(
    upgrade: OnUpgrade,
    header: &dyn Fn(&str) -> String,
    offered: &[String],
    target: Target,
    q: &Query,
) -> Reply {
    let Some(port) = q
        .get("ports")
        .and_then(|p| p.split(',').next()?.trim().parse::<u16>().ok())
    else {
        return KErr::bad_request(
            "query parameter \"ports\" is required: the pod's port to forward, e.g. ?ports=8080",
        )
        .reply();
    };
    if !offered.iter().any(|p| p == PROTOCOL) {
        return KErr::bad_request(format!("the local apiserver streams port-forwards over websockets with the {PROTOCOL} subprotocol (or SPDY; this request offered {offered:?})")).reply();
    }
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            relay(hyper_util::rt::TokioIo::new(io), port, target).await;
        }
    });
    websocket_switch(&header("sec-websocket-key"), PROTOCOL)
}

async fn relay<S>(io: S, port: u16, target: Target)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let [lo, hi] = port.to_le_bytes();
    for ch in [0u8, 1] {
        if ws.send(Message::binary(vec![ch, lo, hi])).await.is_err() {
            return;
        }
    }
    let Some(conn) = connect(&target, port).await else {
        let msg = target.refused(port);
        let _ = ws
            .send(Message::binary([&[1u8][..], msg.as_bytes()].concat()))
            .await;
        let _ = ws.close(None).await;
        return;
    };
    let (mut from_pod, mut to_pod) = conn.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = from_pod.read(&mut buf) => match n {
                Ok(n) if n > 0 => {
                    if ws.send(Message::binary([&[0u8][..], &buf[..n]].concat())).await.is_err() {
                        return;
                    }
                }
                _ => break,
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if b.first() == Some(&0) && to_pod.write_all(&b[1..]).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = ws.close(None).await;
}

async fn connect(target: &Target, port: u16) -> Option<TcpStream> {
    let (host, port) = target.reach(port)?;
    TcpStream::connect((host.as_str(), port)).await.ok()
}

// ---------------------------------------------------------------------------------------
// SPDY

/// The SPDY session over a websocket: binary messages in and out, each a slice of the
/// SPDY byte stream.
async fn tunnel<S>(io: S, target: Target)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(b) => {
                    if in_tx.send(b).is_err() {
                        break;
                    }
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Text(_) | Message::Close(_) => break,
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink.send(Message::binary(frame)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    session(target, in_rx, out_tx).await;
    reader.abort();
    let _ = writer.await;
}

/// The SPDY session over the upgraded connection itself.
async fn spdy_over<R, W>(mut rd: R, mut wr: W, target: Target)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    if in_tx
                        .send(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .is_err()
                    {
                        break;
                    }
                }
                _ => break,
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    session(target, in_rx, out_tx).await;
    reader.abort();
    let _ = writer.await;
}

/// A forwarded connection's two streams, by their `requestid`.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
}

/// Reads the client's frames until it goes (GOAWAY, or the connection ends): accepts its
/// streams, pairs them, and relays each pair's data stream to the pod.
async fn session(
    target: Target,
    mut inbound: mpsc::UnboundedReceiver<bytes::Bytes>,
    out: mpsc::UnboundedSender<Vec<u8>>,
) {
    let target = std::sync::Arc::new(target);
    let mut codec = spdy::Codec::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Data stream id → what the client sends on it, for its relay.
    let mut routes: HashMap<u32, mpsc::UnboundedSender<Option<bytes::Bytes>>> = HashMap::new();
    let mut relays: Vec<tokio::task::AbortHandle> = Vec::new();
    'session: while let Some(chunk) = inbound.recv().await {
        codec.feed(&chunk);
        loop {
            let frame = match codec.next() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => break 'session,
            };
            match frame {
                spdy::Frame::SynStream { id, headers, .. } => {
                    let get = |k: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.as_str())
                    };
                    let port = get("port")
                        .and_then(|p| p.parse::<u16>().ok())
                        .filter(|p| *p > 0);
                    let kind = get("streamtype").filter(|t| *t == "error" || *t == "data");
                    let (Some(port), Some(kind)) = (port, kind) else {
                        let _ = out.send(spdy::rst_stream(id, spdy::CANCEL));
                        continue;
                    };
                    match codec.syn_reply(id) {
                        Ok(reply) => {
                            let _ = out.send(reply);
                        }
                        Err(_) => break 'session,
                    }
                    // Without a requestid (older clients), the error stream's id names the pair.
                    let request = get("requestid").map(str::to_string).unwrap_or_else(|| {
                        match kind {
                            "error" => id,
                            _ => id.saturating_sub(2),
                        }
                        .to_string()
                    });
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = port;
                    match kind {
                        "error" => pair.error = Some(id),
                        _ => pair.data = Some(id),
                    }
                    if let (Some(error), Some(data)) = (pair.error, pair.data) {
                        let port = pair.port;
                        pairs.remove(&request);
                        let (tx, rx) = mpsc::unbounded_channel();
                        routes.insert(data, tx);
                        let task = tokio::spawn(forward(
                            target.clone(),
                            port,
                            data,
                            error,
                            rx,
                            out.clone(),
                        ));
                        relays.push(task.abort_handle());
                    }
                }
                spdy::Frame::Data { id, fin, data } => {
                    if let Some(route) = routes.get(&id) {
                        if !data.is_empty() {
                            let _ = route.send(Some(data));
                        }
                        if fin {
                            let _ = route.send(None);
                            routes.remove(&id);
                        }
                    }
                }
                // The client gives a stream up (or acknowledges the end): its relay ends.
                spdy::Frame::RstStream { id } => {
                    routes.remove(&id);
                }
                spdy::Frame::Ping(frame) => {
                    let _ = out.send(frame.to_vec());
                }
                spdy::Frame::GoAway => break 'session,
                spdy::Frame::Ignored => {}
            }
        }
    }
    for r in relays {
        r.abort();
    }
}

/// Relays one forwarded connection: the data stream to the pod's `port` and back, then
/// both streams finished; or the kubelet's error and both reset.
async fn forward(
    target: std::sync::Arc<Target>,
    port: u16,
    data: u32,
    error: u32,
    mut from_client: mpsc::UnboundedReceiver<Option<bytes::Bytes>>,
    out: mpsc::UnboundedSender<Vec<u8>>,
) {
    let Some(conn) = connect(&target, port).await else {
        let _ = out.send(spdy::data(error, false, target.refused(port).as_bytes()));
        let _ = out.send(spdy::rst_stream(data, spdy::CANCEL));
        let _ = out.send(spdy::rst_stream(error, spdy::CANCEL));
        return;
    };
    let (mut from_pod, mut to_pod) = conn.into_split();
    let upstream = async {
        while let Some(Some(bytes)) = from_client.recv().await {
            if to_pod.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; spdy::MAX_DATA];
        while let Ok(n) = from_pod.read(&mut buf).await {
            if n == 0 || out.send(spdy::data(data, false, &buf[..n])).is_err() {
                break;
            }
        }
    };
    tokio::pin!(upstream, downstream);
    // As containerd relays: once one direction ends, the other gets a second.
    let grace = Duration::from_secs(1);
    tokio::select! {
        _ = &mut downstream => { let _ = tokio::time::timeout(grace, &mut upstream).await; }
        _ = &mut upstream => { let _ = tokio::time::timeout(grace, &mut downstream).await; }
    }
    let _ = out.send(spdy::data(data, true, b""));
    let _ = out.send(spdy::data(error, true, b""));
}

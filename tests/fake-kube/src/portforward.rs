//! `…/pods/{name}/portforward?ports=N` over a websocket, as the apiserver streams it for
//! the kube crate (and client-go's websocket port-forward): subprotocol
//! `v4.channel.k8s.io`, each binary message prefixed by its channel (port i: data `2i`,
//! errors `2i+1`), and first, on each channel, the port as two little-endian bytes. The
//! data channel is relayed to the container's port (through the loopback port the engine
//! published); a port nothing answers on gets the kubelet's error on the error channel.
//! Not modelled: SPDY (`kubectl port-forward` falls back to it when websockets fail: it
//! gets 400 here), more than one port per connection (the first is served).

use futures_util::{SinkExt, StreamExt};
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::api::{Call, KErr, Query};
use crate::{Reply, Shared, engine};

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
    let target = {
        let st = shared.lock();
        let Some(pod) = st.get("pods", ns, name) else {
            return KErr::not_found(call.res, name).reply();
        };
        let Some(port) = q
            .get("ports")
            .and_then(|p| p.split(',').next()?.trim().parse::<u16>().ok())
        else {
            return KErr::bad_request("query parameter \"ports\" is required: the pod's port to forward, e.g. ?ports=8080").reply();
        };
        if pod["status"]["phase"] != "Running" {
            return KErr::bad_request(format!(
                "pod {name} is not running (phase {})",
                pod["status"]["phase"].as_str().unwrap_or("Pending")
            ))
            .reply();
        }
        (
            port,
            engine::reach(&st, pod, port),
            pod["status"]["podIP"].as_str().unwrap_or("").to_string(),
            pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        )
    };
    let header = |h: &str| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let websocket = header("upgrade").eq_ignore_ascii_case("websocket")
        && !header("sec-websocket-key").is_empty();
    let offered = header("sec-websocket-protocol");
    let (Some(upgrade), true, true) = (
        upgrade,
        websocket,
        offered.split(',').any(|p| p.trim() == PROTOCOL),
    ) else {
        return KErr::bad_request(format!("the local apiserver streams port-forwards over websockets with the {PROTOCOL} subprotocol only (this request offered {offered:?})")).reply();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
        header("sec-websocket-key").as_bytes(),
    );
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            relay(hyper_util::rt::TokioIo::new(io), target).await;
        }
    });
    hyper::Response::builder()
        .status(101)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(hyper::header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::new(),
        )))
        .expect("a valid response")
}

async fn relay<S>(io: S, (port, addr, pod_ip, uid): (u16, Option<(String, u16)>, String, String))
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
    let conn = match addr {
        Some(a) => TcpStream::connect((a.0.as_str(), a.1)).await.ok(),
        None => None,
    };
    let Some(conn) = conn else {
        let msg = format!(
            "error forwarding port {port} to pod {uid}, uid : failed to connect to {pod_ip}:{port}: connection refused"
        );
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

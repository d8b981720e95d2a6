//! The proxy's own HTTP/1.1 path, for the requests nearly every client sends: a request
//! in origin form with a `Host`, no body or a small one of known length, no upgrade and
//! no `Expect`, going to an upstream. It reads the head in place (httparse), writes the
//! upstream's head out of the same bytes, and passes the response through as it comes
//! (its chunks as they are, checked only for where they end; a body that runs to the
//! upstream connection's end in chunks of its own, so the client's connection is kept),
//! on a pooled upstream connection of the worker's own, all within the client
//! connection's task.
//!
//! Everything else goes to hyper (`super::hyper_connection`), with the connection from
//! the request it could not take on: the bytes already read are read again from the
//! start of that request. So HTTP/2 (its preface), HTTP/1.0, upgrades, chunked or large
//! request bodies, `Expect`, and whatever the proxy answers itself (no site, a redirect
//! to HTTPS, maintenance, no route yet, an ACME challenge) keep exactly what hyper does.
//!
//! What a forwarded request gets is what `super::forward_to` gives it: the hop-by-hop
//! headers out, `X-Forwarded-For`, `-Proto` and `-Host`, the canary's cookie, the request
//! counted in flight until its response has been sent, its answer counted, the edge's
//! access-log line, one more try for a request that found its pooled connection closed,
//! and 502 or 504 where the upstream gives no answer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hyper::body::Bytes;
use hyper::http::uri::Authority;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{CANARY_COOKIE, Pick, Shared, Site, UPSTREAM_TIMEOUT, Upstream};
use crate::ops::edge;

/// The largest request head taken here (hyper takes larger ones, up to its own limit).
const MAX_HEAD: usize = 16 * 1024;
/// The largest request body taken here: read whole before the request goes out.
const MAX_BODY: usize = 64 * 1024;
/// The largest response head read (hyper's client reads larger ones: such a response is
/// answered 502 here).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Header lines parsed in place, as many as hyper takes (a request with more goes to
/// hyper, which refuses it; a response with more is answered 502).
const MAX_HEADERS: usize = 100;
/// An idle upstream connection is closed before a typical server's keep-alive timeout
/// (gunicorn: 2 s) would close it under a request.
const POOL_IDLE: Duration = Duration::from_millis(1500);
/// Idle connections kept per upstream address, per worker.
const POOL_MAX: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one HTTP/1 client connection, handing it to hyper at the first request this
/// path does not take.
pub(super) async fn serve<I>(shared: Arc<Shared>, peer: SocketAddr, tls: bool, mut io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let ip = peer.ip().to_string();
    loop {
        // A whole head, or what is not ours to take.
        let taken = loop {
            if !buf.is_empty() {
                match take(&shared, tls, &ip, &buf) {
                    Take::Partial if buf.len() <= MAX_HEAD => {}
                    Take::Partial | Take::Hyper => {
                        return hand_over(shared, peer, tls, buf, io).await;
                    }
                    Take::Forward(t) => break t,
                }
            }
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let mut t = *taken;
        // The body, whole (its length is known and small).
        let len = t.head_len + t.body_len;
        while buf.len() < len {
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        // Counted in flight from here (a client slow to send its body holds no drain),
        // to the upstream live now; if there is none now, hyper's path answers.
        let (upstream, guard, bucket, drawn) = match t.site.checkout(&shared, t.cookie) {
            Pick::Upstream(u, g, b, d) => (u, g, b, d),
            Pick::Maintenance(_) | Pick::Nothing => {
                return hand_over(shared, peer, tls, buf, io).await;
            }
        };
        t.request.bytes.extend_from_slice(&buf[t.head_len..len]);
        buf.advance(len);
        let call = Call {
            shared: &shared,
            site: &t.site,
            upstream,
            bucket,
            arrived: t.arrived,
            request: t.request,
        };
        let kept = call
            .exchange(&mut io, peer, tls, &t.host, drawn, t.close)
            .await
            .unwrap_or(false);
        // Out of flight once its answer has been sent.
        drop(guard);
        if !kept {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// Hands the connection to hyper from the request at the start of `read`.
async fn hand_over<I>(shared: Arc<Shared>, peer: SocketAddr, tls: bool, read: BytesMut, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Rewind {
        read: read.freeze(),
        io,
    };
    super::hyper_connection(shared, peer, tls, io).await
}

/// What a request head means for this path.
enum Take {
    /// Not all of it has come yet.
    Partial,
    /// Hyper takes the connection from this request on.
    Hyper,
    Forward(Box<Taken>),
}

/// A request this path forwards.
struct Taken {
    arrived: Instant,
    head_len: usize,
    body_len: usize,
    site: Arc<Site>,
    /// The bucket the client's canary cookie holds.
    cookie: Option<u32>,
    /// The client asked for the connection to close after this request.
    close: bool,
    /// The host it is for (as the access log names it).
    host: String,
    /// Its head as it goes upstream (its body is added once read).
    request: UpstreamRequest,
}

/// Reads the request head at the start of `buf` and decides who serves it; one this path
/// takes is routed, counted in flight and its upstream head written.
fn take(shared: &Arc<Shared>, tls: bool, ip: &str, buf: &[u8]) -> Take {
    let arrived = Instant::now();
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Take::Partial,
        Err(_) => return Take::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Take::Hyper;
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Take::Hyper;
    }
    let Ok(method) = hyper::Method::from_bytes(method.as_bytes()) else {
        return Take::Hyper;
    };
    let mut host = None;
    let mut body_len = 0usize;
    let mut lengths = 0;
    let mut close = false;
    let mut checking = false;
    let mut bucket = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Take::Hyper;
            }
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
            {
                Some(n) if n <= MAX_BODY && lengths == 1 => body_len = n,
                _ => return Take::Hyper,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Take::Hyper;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case(crate::ops::http::CHECK_HEADER) {
            checking = true;
        } else if name.eq_ignore_ascii_case("cookie") && bucket.is_none() {
            bucket = canary_bucket(h.value);
        }
    }
    let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
        return Take::Hyper;
    };
    let host = host_name(host);
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if let Some(e) = &shared.edge
        && let Some(token) = path.strip_prefix(edge::CHALLENGE_PATH)
        && e.acme.answer(token).is_some()
    {
        return Take::Hyper;
    }
    let Some(site) = shared.site_for(&host, path) else {
        return Take::Hyper;
    };
    if !tls && !checking && site.conf.tls.is_on() && shared.edge.is_some() {
        return Take::Hyper;
    }
    let request = upstream_request(shared, tls, ip, method, target, req.headers, body_len);
    Take::Forward(Box::new(Taken {
        arrived,
        head_len,
        body_len,
        site,
        cookie: bucket,
        close,
        host,
        request,
    }))
}

/// Whether a header is one of `super::HOP_BY_HOP`.
fn hop_by_hop(name: &str) -> bool {
    super::HOP_BY_HOP
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_str()))
}

/// The comma-separated tokens of a header's value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(|t| t.trim_ascii())
}

/// `Host` lowercase, without its port or a trailing dot (as `super::request_host`).
fn host_name(host: &str) -> String {
    let host = match host.rsplit_once(':') {
        // `[::1]:8080` and `a.test:8080`; a bare IPv6 literal has no port.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The bucket a `Cookie` header's `pym-canary` holds, if any (as `super::cookie_bucket`).
fn canary_bucket(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value)
        .ok()?
        .split(';')
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == CANARY_COOKIE).then(|| v.trim().parse().ok())?
        })
        .filter(|b| *b < super::BUCKETS)
}

/// A request as it goes upstream.
struct UpstreamRequest {
    /// Head and body, ready to write.
    bytes: Vec<u8>,
    method: hyper::Method,
    /// The request target, as the access log shows it.
    target: String,
    bodiless: bool,
}

/// The head to send upstream, from the client's: the hop-by-hop headers (and those
/// `Connection` names) taken out, `X-Forwarded-For` with the client's address added,
/// `X-Forwarded-Proto` set (at the edge, always: TLS ends there) and `X-Forwarded-Host`
/// where the client sent none.
fn upstream_request(
    shared: &Shared,
    tls: bool,
    ip: &str,
    method: hyper::Method,
    target: &str,
    headers: &[httparse::Header<'_>],
    body_len: usize,
) -> UpstreamRequest {
    let named = connection_named(headers);
    let mut out = Vec::with_capacity(512 + body_len);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let (mut has_proto, mut host, mut has_forwarded_host) = (false, None, false);
    let mut has_length = false;
    for h in headers {
        let name = h.name;
        // The body's length is written below, from the body read: what frames the
        // request upstream is what framed it here.
        if name.eq_ignore_ascii_case("content-length") {
            has_length = true;
            continue;
        }
        if hop_by_hop(name)
            || named
                .iter()
                .any(|n| name.as_bytes().eq_ignore_ascii_case(n))
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(h.value);
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-proto") {
            has_proto = true;
            if shared.edge.is_some() {
                continue;
            }
        } else if name.eq_ignore_ascii_case("host") {
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-host") {
            has_forwarded_host = true;
        }
        push_header(&mut out, name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for prior in forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    if shared.edge.is_some() || !has_proto {
        out.extend_from_slice(if tls {
            b"x-forwarded-proto: https\r\n"
        } else {
            b"x-forwarded-proto: http\r\n"
        });
    }
    if let (Some(host), false) = (host, has_forwarded_host) {
        push_header(&mut out, b"x-forwarded-host", host);
    }
    if has_length || body_len > 0 {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body_len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    UpstreamRequest {
        bytes: out,
        method,
        target: target.to_string(),
        bodiless: body_len == 0,
    }
}

/// The headers a message's `Connection` names, to be taken out with it; never those that
/// frame the message or name its host (a client or upstream naming them would otherwise
/// change what the next hop reads as the message).
fn connection_named<'h>(headers: &[httparse::Header<'h>]) -> Vec<&'h [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"content-length")
                && !t.eq_ignore_ascii_case(b"transfer-encoding")
                && !t.eq_ignore_ascii_case(b"host")
        })
        .collect()
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// One request on its way to an upstream and back.
struct Call<'a> {
    shared: &'a Arc<Shared>,
    site: &'a Site,
    upstream: Upstream,
    bucket: Option<u32>,
    arrived: Instant,
    request: UpstreamRequest,
}

/// How a response's body ends (RFC 9112, 6.3).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// At the end of the upstream connection, and so the client's.
    Close,
    /// At the end of the upstream connection, sent to the client in chunks (as hyper
    /// does), so that its connection is kept.
    Rechunked,
}

/// A response head from upstream, and how its body ends.
struct ResponseHead {
    status: u16,
    head_len: usize,
    framing: Framing,
    /// The upstream connection can carry another request after this one.
    reusable: bool,
    /// The head as it goes to the client.
    out: Vec<u8>,
}

impl Call<'_> {
    /// Sends the request and passes its response to the client. `Ok(true)` when the client
    /// connection can carry another request.
    async fn exchange<I>(
        &self,
        client: &mut I,
        peer: SocketAddr,
        tls: bool,
        host: &str,
        drawn: Option<u32>,
        close: bool,
    ) -> io::Result<bool>
    where
        I: AsyncWrite + Unpin,
    {
        let addr = self.shared.addr_of(&self.upstream);
        let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, self.send(&addr, drawn, close)).await;
        let (status, result) = match answer {
            Ok(Ok(answer)) => (answer.2.status, Ok(answer)),
            Ok(Err(e)) => (502, Err(e)),
            Err(_) => (504, Err(io::Error::from(io::ErrorKind::TimedOut))),
        };
        self.shared.count(
            &self.upstream.name,
            status,
            result.is_err(),
            self.arrived.elapsed(),
        );
        if let Some(e) = &self.shared.edge {
            e.log.line(super::access_line(
                &self.site.key,
                &self.request.method,
                &self.request.target,
                hyper::Version::HTTP_11,
                host,
                peer,
                tls,
                hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY),
                Some(&self.upstream.name),
                self.arrived,
            ));
        }
        // (`used`: where the answer came from, after one more try maybe elsewhere)
        let (used, mut conn, head, mut rest) = match result {
            Ok(a) => a,
            Err(e) => {
                let text = if status == 504 {
                    eprintln!(
                        "upstream {} ({addr}) sent no response to {peer} within {} s",
                        self.upstream.name,
                        UPSTREAM_TIMEOUT.as_secs()
                    );
                    format!(
                        "the live version at {} did not answer within {} s\n",
                        self.upstream.name,
                        UPSTREAM_TIMEOUT.as_secs()
                    )
                } else {
                    eprintln!(
                        "upstream {} ({addr}) failed for {peer}: {e}",
                        self.upstream.name
                    );
                    format!(
                        "the live version at {} did not answer\n",
                        self.upstream.name
                    )
                };
                let head_only = self.request.method == hyper::Method::HEAD;
                let answer = own_answer(status, &text, close, head_only, drawn);
                client.write_all(&answer).await?;
                client.flush().await?;
                return Ok(!close);
            }
        };
        // The head, with what of the body has come with it.
        let mut out = head.out;
        let mut left = head.framing;
        let mut chunks = Chunks::default();
        let ended = pass(&mut left, &mut chunks, &rest[..])?;
        let first = ended.unwrap_or(rest.len());
        frame(&mut out, head.framing, &rest[..first]);
        client.write_all(&out).await?;
        // (a no-op on TCP; TLS sends what it holds)
        client.flush().await?;
        let mut reusable = head.reusable;
        if ended.is_none() {
            rest.clear();
            loop {
                rest.reserve(16 * 1024);
                let n = conn.read_buf(&mut rest).await?;
                if n == 0 {
                    return match left {
                        Framing::Close => Ok(false),
                        Framing::Rechunked => {
                            client.write_all(b"0\r\n\r\n").await?;
                            client.flush().await?;
                            Ok(true)
                        }
                        _ => Err(io::ErrorKind::UnexpectedEof.into()),
                    };
                }
                let ended = pass(&mut left, &mut chunks, &rest[..])?;
                let upto = ended.unwrap_or(rest.len());
                if head.framing == Framing::Rechunked {
                    out.clear();
                    frame(&mut out, head.framing, &rest[..upto]);
                    client.write_all(&out).await?;
                } else {
                    client.write_all(&rest[..upto]).await?;
                }
                client.flush().await?;
                if let Some(end) = ended {
                    reusable &= end == rest.len();
                    break;
                }
                rest.clear();
            }
        } else {
            // Anything after the response is not ours to read: the connection goes.
            reusable &= first == rest.len();
        }
        if reusable {
            pool_put(&used, conn);
        }
        Ok(!close && head.framing != Framing::Close)
    }

    /// Writes the request on a pooled connection (or a new one) and reads the response's
    /// head, once more on a new connection to the upstream live now when a pooled one
    /// turns out closed. Says which address answered.
    async fn send(
        &self,
        addr: &Authority,
        drawn: Option<u32>,
        close: bool,
    ) -> io::Result<(Authority, TcpStream, ResponseHead, BytesMut)> {
        let pooled = pool_take(addr);
        let reused = pooled.is_some();
        let first = match pooled {
            Some(conn) => Ok(conn),
            None => connect(addr).await,
        };
        let error = match first {
            Ok(conn) => match self.round_trip(conn, drawn, close).await {
                Ok((conn, head, rest)) => return Ok((addr.clone(), conn, head, rest)),
                Err((e, answered)) => {
                    let again = reused
                        && !answered
                        && (self.request.method.is_idempotent() || self.request.bodiless);
                    if !again {
                        return Err(e);
                    }
                    e
                }
            },
            // As hyper's client: a connection that could not be made is tried once more.
            Err(e) => e,
        };
        let now = self
            .site
            .now_for(self.bucket)
            .unwrap_or_else(|| self.upstream.clone());
        let addr = self.shared.addr_of(&now);
        let conn = connect(&addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("{error}; again on a new connection: {e}"))
        })?;
        let (conn, head, rest) = self
            .round_trip(conn, drawn, close)
            .await
            .map_err(|(e, _)| e)?;
        Ok((addr, conn, head, rest))
    }

    /// The request on `conn`, and the response's head. An error says whether any of the
    /// response had come.
    async fn round_trip(
        &self,
        mut conn: TcpStream,
        drawn: Option<u32>,
        close: bool,
    ) -> Result<(TcpStream, ResponseHead, BytesMut), (io::Error, bool)> {
        conn.write_all(&self.request.bytes)
            .await
            .map_err(|e| (e, false))?;
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut early = Vec::new();
        loop {
            if conn.read_buf(&mut buf).await.map_err(|e| (e, false))? == 0 {
                let answered = !buf.is_empty() || !early.is_empty();
                return Err((
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed before a response",
                    ),
                    answered,
                ));
            }
            loop {
                match response_head(
                    &buf,
                    self.request.method == hyper::Method::HEAD,
                    drawn,
                    close,
                ) {
                    Ok(None) if buf.len() > MAX_RESPONSE_HEAD => {
                        return Err((io::Error::other("the response's head is too large"), true));
                    }
                    Ok(None) => break,
                    Ok(Some(head)) if (100..200).contains(&head.status) => {
                        // An interim answer (103 Early Hints) goes to the client before
                        // the final one.
                        if head.status == 101 {
                            return Err((
                                io::Error::other("a switch of protocols nobody asked for"),
                                true,
                            ));
                        }
                        early.extend_from_slice(&buf[..head.head_len]);
                        if early.len() > MAX_RESPONSE_HEAD {
                            return Err((io::Error::other("too many interim answers"), true));
                        }
                        buf.advance(head.head_len);
                    }
                    Ok(Some(mut head)) => {
                        buf.advance(head.head_len);
                        if !early.is_empty() {
                            early.append(&mut head.out);
                            head.out = early;
                        }
                        return Ok((conn, head, buf));
                    }
                    Err(e) => return Err((e, true)),
                }
                if buf.is_empty() {
                    break;
                }
            }
        }
    }
}

/// Parses a response head at the start of `buf`: `None` until all of it has come.
fn response_head(
    buf: &[u8],
    head_only: bool,
    drawn: Option<u32>,
    close: bool,
) -> io::Result<Option<ResponseHead>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("a malformed response: {e}"))),
    };
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Err(io::Error::other("a malformed response"));
    };
    let reason = res.reason.unwrap_or("");
    if (100..200).contains(&status) {
        return Ok(Some(ResponseHead {
            status,
            head_len,
            framing: Framing::Empty,
            reusable: true,
            out: Vec::new(),
        }));
    }
    let named = connection_named(res.headers);
    let mut upstream_close = version == 0;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut dated = false;
    let mut out = Vec::with_capacity(head_len + 96);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    upstream_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    upstream_close = false;
                }
            }
            continue;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // The chunks pass as they are: the client is told so as the upstream said.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            push_header(&mut out, name.as_bytes(), h.value);
            continue;
        }
        if hop_by_hop(name)
            || named
                .iter()
                .any(|n| name.as_bytes().eq_ignore_ascii_case(n))
        {
            continue;
        }
        dated |= name.eq_ignore_ascii_case("date");
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| io::Error::other("a malformed Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(io::Error::other("two different Content-Lengths"));
            }
            if length.is_some() {
                continue;
            }
            length = Some(n);
        }
        push_header(&mut out, name.as_bytes(), h.value);
    }
    let framing = if head_only || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) if close => Framing::Close,
            (None, None) => Framing::Rechunked,
        }
    };
    if chunked.is_some() && length.is_some() {
        // RFC 9112, 6.3: Transfer-Encoding wins; the length is not passed on.
        return Err(io::Error::other(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    // A proxy adds the date of an answer that has none (RFC 9110, 6.6.1).
    if !dated {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    push_canary_cookie(&mut out, drawn);
    if close || framing == Framing::Close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if framing == Framing::Rechunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        status,
        head_len,
        framing,
        reusable: !upstream_close && !matches!(framing, Framing::Close | Framing::Rechunked),
        out,
    }))
}

/// Adds a piece of a body to what goes to the client, as a chunk where it is `Rechunked`.
fn frame(out: &mut Vec<u8>, framing: Framing, piece: &[u8]) {
    if framing == Framing::Rechunked && !piece.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(piece);
    }
}

/// A status code's three digits.
fn itoa3(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

/// An answer of the proxy's own (502, 504): `text`, but to HEAD only its length.
fn own_answer(
    status: u16,
    text: &str,
    close: bool,
    head_only: bool,
    drawn: Option<u32>,
) -> Vec<u8> {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = Vec::with_capacity(160 + text.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&itoa3(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(text.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
    push_canary_cookie(&mut out, drawn);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// The canary's cookie for a client drawn a bucket now, so it stays on one version.
fn push_canary_cookie(out: &mut Vec<u8>, drawn: Option<u32>) {
    if let Some(b) = drawn {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(CANARY_COOKIE.as_bytes());
        out.push(b'=');
        out.extend_from_slice(b.to_string().as_bytes());
        out.extend_from_slice(b"; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax\r\n");
    }
}

/// Takes what of `bytes` belongs to the body still `left`: `Some(n)` when the body ends
/// after the first `n` bytes.
fn pass(left: &mut Framing, chunks: &mut Chunks, bytes: &[u8]) -> io::Result<Option<usize>> {
    match left {
        Framing::Empty => Ok(Some(0)),
        Framing::Close | Framing::Rechunked => Ok(None),
        Framing::Length(n) => {
            let have = bytes.len() as u64;
            if have >= *n {
                let end = *n as usize;
                *left = Framing::Empty;
                Ok(Some(end))
            } else {
                *n -= have;
                Ok(None)
            }
        }
        Framing::Chunked => chunks.feed(bytes),
    }
}

/// Where a chunked body ends (RFC 9112, 7.1): its bytes pass as they are; only the sizes,
/// the line ends and the trailer section are read, as strictly as hyper reads them (every
/// line ends in CRLF, no control byte in an extension or a trailer, and at most
/// `MAX_CHUNK_META` bytes of extensions and of trailers), so that no client behind the
/// proxy reads a body's end elsewhere.
#[derive(Debug, Default)]
struct Chunks {
    state: ChunkState,
    size: u64,
    /// Bytes of extensions and trailers read so far.
    meta: usize,
}

/// The most bytes of chunk extensions and trailers, together, in one body.
const MAX_CHUNK_META: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum ChunkState {
    /// At a chunk's size, no digit read yet.
    #[default]
    Size,
    SizeDigits,
    /// Whitespace after the size.
    SizeSpace,
    /// In a chunk extension, up to the line's end.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the empty line that ends the body).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

impl Chunks {
    fn feed(&mut self, bytes: &[u8]) -> io::Result<Option<usize>> {
        let bad = |what: &str| {
            Err(io::Error::other(format!(
                "a malformed chunked body: {what}"
            )))
        };
        // A byte no extension or trailer holds (RFC 9110, 5.5: no control but HTAB).
        let control = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                ChunkState::Size | ChunkState::SizeDigits => match (b as char).to_digit(16) {
                    Some(d) => {
                        self.size = match self.size.checked_mul(16) {
                            Some(s) => s + d as u64,
                            None => return bad("a chunk size too large"),
                        };
                        self.state = ChunkState::SizeDigits;
                    }
                    None if self.state == ChunkState::Size => return bad("no chunk size"),
                    None if b == b' ' || b == b'\t' => self.state = ChunkState::SizeSpace,
                    None if b == b';' => self.state = ChunkState::Extension,
                    None if b == b'\r' => self.state = ChunkState::SizeLf,
                    None => return bad("a chunk size"),
                },
                ChunkState::SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return bad("a chunk size"),
                },
                ChunkState::Extension => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if control(b) {
                        return bad("a chunk extension");
                    }
                    self.meta += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return bad("a chunk size's line end");
                    }
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return bad("a chunk's end");
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return bad("a chunk's end");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart | ChunkState::TrailerLine => {
                    if b == b'\r' {
                        self.state = match self.state {
                            ChunkState::TrailerStart => ChunkState::EndLf,
                            _ => ChunkState::TrailerLf,
                        };
                    } else if control(b) {
                        return bad("a trailer");
                    } else {
                        self.state = ChunkState::TrailerLine;
                    }
                    self.meta += 1;
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return bad("a trailer's line end");
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return bad("the last line end");
                    }
                    *self = Chunks::default();
                    return Ok(Some(i + 1));
                }
            }
            if self.meta > MAX_CHUNK_META {
                return bad("too many bytes of extensions and trailers");
            }
            i += 1;
        }
        Ok(None)
    }
}

/// Idle upstream connections of a worker, per address.
#[derive(Default)]
struct Pool {
    idle: HashMap<Authority, Vec<(TcpStream, Instant)>>,
    /// When every address's connections were last looked over.
    swept: Option<Instant>,
}

thread_local! {
    /// This worker's pool (see `super::run`: a request, its upstream connection and their
    /// wakeups stay on one thread).
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Whether an idle connection can carry a request: not idle too long, not closed by the
/// upstream, and nothing sent on it since its last answer (what the runtime has seen of
/// it: a close it has not seen yet is met by the request's one more try).
fn usable(conn: &TcpStream, since: Instant) -> bool {
    let mut probe = [0u8; 1];
    since.elapsed() < POOL_IDLE
        && matches!(conn.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// An idle connection to `addr`, the most recent first; those no longer usable are closed.
fn pool_take(addr: &Authority) -> Option<TcpStream> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.idle.get_mut(addr)?;
        while let Some((conn, since)) = idle.pop() {
            if usable(&conn, since) {
                return Some(conn);
            }
        }
        None
    })
}

fn pool_put(addr: &Authority, conn: TcpStream) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        // Once a second, the connections of every address are looked over: those of an
        // upstream no longer routed to are closed too.
        if p.swept
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            p.swept = Some(Instant::now());
            p.idle.retain(|_, idle| {
                idle.retain(|(conn, since)| usable(conn, *since));
                !idle.is_empty()
            });
        }
        let idle = match p.idle.get_mut(addr) {
            Some(idle) => idle,
            None => p.idle.entry(addr.clone()).or_default(),
        };
        if idle.len() < POOL_MAX {
            idle.push((conn, Instant::now()));
        }
    })
}

async fn connect(addr: &Authority) -> io::Result<TcpStream> {
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str()))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no connection to {addr} within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            )
        })??;
    conn.set_nodelay(true)?;
    Ok(conn)
}

/// A connection whose first bytes, already read, are read again.
pub(super) struct Rewind<I> {
    read: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a body fed in `parts` ends, counted from its first byte.
    fn end_of(parts: &[&[u8]]) -> Option<usize> {
        let mut c = Chunks::default();
        let mut offset = 0;
        for p in parts {
            if let Some(n) = c.feed(p).unwrap() {
                return Some(offset + n);
            }
            offset += p.len();
        }
        None
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers_in_any_split() {
        let body: &[u8] =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        assert_eq!(end_of(&[body]), Some(end));
        for at in 1..body.len() {
            let (a, b) = body.split_at(at);
            assert_eq!(end_of(&[a, b]), Some(end), "split at {at}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(end_of(&bytes), Some(end), "a byte at a time");
        assert_eq!(
            end_of(&[&body[..end - 1]]),
            None,
            "the last line end missing"
        );
        assert_eq!(end_of(&[b"0\r\n\r\n"]), Some(5));
        let mut c = Chunks::default();
        assert!(c.feed(b"zz\r\n").is_err(), "not a size");
        let mut c = Chunks::default();
        assert!(c.feed(b"2\r\nabX").is_err(), "no line end after the data");
        // As strict as hyper: no bare LF, no junk after the size, no control byte in an
        // extension, bounded extensions.
        for malformed in [
            &b"5;x\nhello\r\n"[..],
            b"5 junk\r\nhello\r\n",
            b"5;a=\x01\r\nhello\r\n",
            b"0\r\n\n",
            b"0\r\nx-t: 1\n\r\n",
        ] {
            let mut c = Chunks::default();
            assert!(
                c.feed(malformed).is_err(),
                "{:?}",
                String::from_utf8_lossy(malformed)
            );
        }
        let long = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_CHUNK_META + 1));
        assert!(Chunks::default().feed(long.as_bytes()).is_err());
        let spaced: &[u8] = b"3 \t;a=b\r\nabc\r\n0\r\n\r\n";
        assert_eq!(end_of(&[spaced]), Some(spaced.len()));
    }

    #[test]
    fn a_response_head_says_how_its_body_ends_and_loses_its_hop_by_hop_headers() {
        let head = |raw: &[u8], head_only: bool| {
            response_head(raw, head_only, None, false)
                .unwrap()
                .expect("a whole head")
        };
        let h = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-App: a\r\nDate: Sat, 05 Dec 2026 04:00:00 GMT\r\n\r\nhello",
            false,
        );
        assert_eq!(
            (h.status, h.framing, h.reusable),
            (200, Framing::Length(5), true)
        );
        let out = String::from_utf8(h.out).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: a\r\nDate: Sat, 05 Dec 2026 04:00:00 GMT\r\n\r\n"
        );
        // One with no date is given one.
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        let out = String::from_utf8(h.out).unwrap();
        assert!(
            out.contains("\r\ndate: ") && out.ends_with(" GMT\r\n\r\n"),
            "{out}"
        );
        let h = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(
            String::from_utf8(h.out)
                .unwrap()
                .contains("Transfer-Encoding: chunked")
        );
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty, "the answer to HEAD");
        let h = head(b"HTTP/1.1 304 Not Modified\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Empty);
        // A body to the connection's end goes in chunks, unless the client closes anyway.
        let h = head(b"HTTP/1.0 200 OK\r\n\r\nrest", false);
        assert_eq!((h.framing, h.reusable), (Framing::Rechunked, false));
        let out = String::from_utf8(h.out).unwrap();
        assert!(
            out.ends_with("\r\ntransfer-encoding: chunked\r\n\r\n"),
            "{out}"
        );
        let h = response_head(b"HTTP/1.1 200 OK\r\n\r\n", false, None, true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Close);
        let out = String::from_utf8(h.out).unwrap();
        assert!(out.ends_with("\r\nconnection: close\r\n\r\n"), "{out}");
        let h = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Length(2), false));
        assert!(
            response_head(b"HTTP/1.1 200 OK\r\nContent-Len", false, None, false)
                .unwrap()
                .is_none()
        );
        assert!(
            response_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                false,
                None,
                false
            )
            .is_err()
        );
        let h = response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
            Some(42),
            true,
        )
        .unwrap()
        .unwrap();
        let out = String::from_utf8(h.out).unwrap();
        assert!(out.contains("set-cookie: pym-canary=42; Path=/"), "{out}");
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
    }
}

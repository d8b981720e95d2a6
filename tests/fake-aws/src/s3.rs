//! The S3 operations pymdeploy and the environments use, path-style: CreateBucket,
//! HeadBucket, PutObject, GetObject, HeadObject. Errors are S3's `<Error>` documents.

use bytes::Bytes;
use hyper::Method;
use hyper::http::request::Parts;

use crate::xml::Xml;
use crate::{ApiError, Reply, Shared, reply};

pub fn handle(shared: &Shared, parts: &Parts, body: &Bytes) -> Reply {
    let path = percent_decode(parts.uri.path().trim_start_matches('/'));
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b.to_string(), k.to_string()),
        None => (path.clone(), String::new()),
    };
    let action = match (&parts.method, key.is_empty()) {
        (&Method::PUT, true) => "CreateBucket",
        (&Method::HEAD, true) => "HeadBucket",
        (&Method::PUT, false) => "PutObject",
        (&Method::GET, false) => "GetObject",
        (&Method::HEAD, false) => "HeadObject",
        _ => return error(shared, &ApiError::new(501, "NotImplemented", format!("{} /{path} is not an operation this local S3 implements", parts.method)), &path),
    };
    let mut st = shared.lock();
    if let Some(e) = st.call(action) {
        drop(st);
        return error(shared, &e, &path);
    }
    if bucket.is_empty() {
        drop(st);
        return error(shared, &ApiError::new(400, "InvalidBucketName", "no bucket in the path (this S3 is path-style)"), &path);
    }
    match action {
        "CreateBucket" => {
            st.buckets.entry(bucket.clone()).or_default();
            hyper::Response::builder().status(200).header("Location", format!("/{bucket}")).body(Default::default()).expect("a valid response")
        }
        "HeadBucket" => {
            // A HEAD answer has no body: S3 says 404 with no error document.
            let status = if st.buckets.contains_key(&bucket) { 200 } else { 404 };
            hyper::Response::builder().status(status).header("x-amz-bucket-region", shared.opts.region.as_str()).body(Default::default()).expect("a valid response")
        }
        "PutObject" => {
            let Some(objects) = st.buckets.get_mut(&bucket) else {
                drop(st);
                return error(shared, &ApiError::new(404, "NoSuchBucket", "The specified bucket does not exist"), &path);
            };
            let chunked = parts.headers.get("content-encoding").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("aws-chunked"))
                || parts.headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("STREAMING-"));
            let data = if chunked { decode_aws_chunked(body) } else { Some(body.clone()) };
            let Some(data) = data else {
                drop(st);
                return error(shared, &ApiError::new(400, "IncompleteBody", "the aws-chunked body is malformed"), &path);
            };
            let etag = format!("\"{:016x}{:016x}\"", fnv(&data), data.len());
            objects.insert(key, data);
            hyper::Response::builder().status(200).header("ETag", etag).body(Default::default()).expect("a valid response")
        }
        _ => {
            let Some(objects) = st.buckets.get(&bucket) else {
                drop(st);
                return error(shared, &ApiError::new(404, "NoSuchBucket", "The specified bucket does not exist"), &path);
            };
            let Some(data) = objects.get(&key).cloned() else {
                drop(st);
                return error(shared, &ApiError::new(404, "NoSuchKey", "The specified key does not exist."), &path);
            };
            let etag = format!("\"{:016x}{:016x}\"", fnv(&data), data.len());
            let b = hyper::Response::builder()
                .status(200)
                .header("ETag", etag)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", data.len());
            let body = if action == "HeadObject" { Bytes::new() } else { data };
            b.body(http_body_util::Full::new(body)).expect("a valid response")
        }
    }
}

fn error(shared: &Shared, e: &ApiError, resource: &str) -> Reply {
    let mut x = Xml::default();
    x.0.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    x.open("Error").el("Code", &e.code).el("Message", &e.message).el("Resource", &format!("/{resource}")).el("RequestId", &shared.request_id()).close("Error");
    reply(e.status, "application/xml", x.0)
}

/// The payload of an `aws-chunked` body: `<hex size>[;ext]\r\n<data>\r\n`… `0\r\n<trailers>\r\n`.
fn decode_aws_chunked(body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let head = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(head.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out.into());
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    #[test]
    fn aws_chunked_bodies_decode() {
        let body = b"5;chunk-signature=abc\r\nhello\r\n3\r\n!!!\r\n0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n";
        assert_eq!(super::decode_aws_chunked(body).unwrap().as_ref(), b"hello!!!");
        assert!(super::decode_aws_chunked(b"5\r\nhel").is_none());
        assert_eq!(super::percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(super::percent_decode("100%"), "100%");
    }
}

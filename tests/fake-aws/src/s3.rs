//! S3, path-style, as the SDKs and the environments use it: CreateBucket, HeadBucket,
//! ListBuckets, ListObjectsV2, PutObject, GetObject (with `Range`), HeadObject,
//! DeleteObject, and multipart uploads (Create, UploadPart, ListParts, Complete, Abort).
//! Objects keep their `Content-Type` and `Last-Modified`; a single upload's ETag is the
//! MD5 of its body, a multipart one's the MD5 of its parts' MD5s with `-<parts>`, as S3
//! computes them. Every answer has an `x-amz-request-id`. Errors are S3's `<Error>`
//! documents (none for HEAD, whose answers have no body); anything else answers 501
//! `NotImplemented`, as S3 does for an operation it does not support.

use bytes::Bytes;
use hyper::Method;
use hyper::http::request::Parts;
use md5::Digest;

use crate::xml::Xml;
use crate::{ApiError, Reply, Shared};

/// One stored object.
#[derive(Clone)]
pub(crate) struct Object {
    pub data: Bytes,
    pub content_type: String,
    pub modified_ms: i64,
    pub etag: String,
}

impl Object {
    pub fn new(data: Bytes, content_type: &str) -> Object {
        let etag = format!("\"{}\"", hex(&md5::Md5::digest(&data)));
        Object {
            data,
            content_type: content_type.to_string(),
            modified_ms: crate::now_ms(),
            etag,
        }
    }
}

/// A multipart upload in progress.
pub(crate) struct Upload {
    bucket: String,
    key: String,
    content_type: String,
    started_ms: i64,
    parts: std::collections::BTreeMap<u32, Object>,
}

/// How many keys one ListObjectsV2 page holds at most (S3's limit).
const MAX_KEYS: usize = 1000;
/// The smallest part but the last, as S3 requires.
const MIN_PART: usize = 5 * 1024 * 1024;

pub fn handle(shared: &Shared, parts: &Parts, body: &Bytes) -> Reply {
    let request_id = shared.request_id();
    let mut reply = route(shared, parts, body, &request_id);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&request_id) {
        reply.headers_mut().insert("x-amz-request-id", v);
    }
    reply
}

fn route(shared: &Shared, parts: &Parts, body: &Bytes, request_id: &str) -> Reply {
    let path = percent_decode(parts.uri.path().trim_start_matches('/'));
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b.to_string(), k.to_string()),
        None => (path.clone(), String::new()),
    };
    let head = parts.method == Method::HEAD;
    let fail = |e: ApiError| error(e, &path, request_id, head);
    let action = match (&parts.method, bucket.is_empty(), key.is_empty()) {
        (&Method::GET, true, _) => "ListBuckets",
        (&Method::PUT, false, true) => "CreateBucket",
        (&Method::HEAD, false, true) => "HeadBucket",
        (&Method::GET, false, true) if q("list-type") == Some("2") => "ListObjectsV2",
        (&Method::POST, false, false) if q("uploads").is_some() => "CreateMultipartUpload",
        (&Method::PUT, false, false) if q("uploadId").is_some() && q("partNumber").is_some() => {
            "UploadPart"
        }
        (&Method::GET, false, false) if q("uploadId").is_some() => "ListParts",
        (&Method::POST, false, false) if q("uploadId").is_some() => "CompleteMultipartUpload",
        (&Method::DELETE, false, false) if q("uploadId").is_some() => "AbortMultipartUpload",
        (&Method::PUT, false, false) => "PutObject",
        (&Method::GET, false, false) => "GetObject",
        (&Method::HEAD, false, false) => "HeadObject",
        (&Method::DELETE, false, false) => "DeleteObject",
        _ => {
            return fail(ApiError::new(
                501,
                "NotImplemented",
                format!(
                    "{} /{path}{} is not an operation this local S3 implements",
                    parts.method,
                    parts
                        .uri
                        .query()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default()
                ),
            ));
        }
    };
    let mut st = shared.lock();
    if let Some(e) = st.call(action) {
        drop(st);
        return fail(e);
    }
    if action == "ListBuckets" {
        let mut x = document();
        x.open("ListAllMyBucketsResult")
            .open("Owner")
            .el("ID", &shared.opts.account)
            .close("Owner")
            .open("Buckets");
        for name in st.buckets.keys() {
            let created = st.bucket_created.get(name).copied().unwrap_or(0);
            x.open("Bucket")
                .el("Name", name)
                .el("CreationDate", &crate::iso(created))
                .close("Bucket");
        }
        x.close("Buckets").close("ListAllMyBucketsResult");
        return xml(200, x);
    }
    if action == "CreateBucket" {
        st.bucket(&bucket);
        return empty(200)
            .header("Location", format!("/{bucket}"))
            .body(Default::default())
            .expect("a valid response");
    }
    let Some(objects) = st.buckets.get_mut(&bucket) else {
        drop(st);
        return fail(ApiError::new(
            404,
            "NoSuchBucket",
            "The specified bucket does not exist",
        ));
    };
    match action {
        "HeadBucket" => empty(200)
            .header("x-amz-bucket-region", shared.opts.region.as_str())
            .body(Default::default())
            .expect("a valid response"),
        "ListObjectsV2" => {
            let prefix = q("prefix").unwrap_or("");
            let max = match q("max-keys").map(str::parse::<usize>) {
                None => MAX_KEYS,
                Some(Ok(n)) => n.min(MAX_KEYS),
                Some(Err(_)) => {
                    return fail(ApiError::new(
                        400,
                        "InvalidArgument",
                        "max-keys must be a number",
                    ));
                }
            };
            // The continuation token is the last key of the page before (opaque to clients).
            let after = q("continuation-token").or(q("start-after")).unwrap_or("");
            let keys: Vec<(&String, &Object)> = objects
                .range::<String, _>((
                    std::ops::Bound::Excluded(after.to_string()),
                    std::ops::Bound::Unbounded,
                ))
                .filter(|(k, _)| k.starts_with(prefix))
                .collect();
            let page = &keys[..keys.len().min(max)];
            let truncated = keys.len() > page.len();
            let mut x = document();
            x.open("ListBucketResult")
                .el("Name", &bucket)
                .el("Prefix", prefix)
                .el("KeyCount", &page.len().to_string())
                .el("MaxKeys", &max.to_string());
            x.el("IsTruncated", if truncated { "true" } else { "false" });
            x.opt("ContinuationToken", q("continuation-token"));
            if truncated {
                x.el(
                    "NextContinuationToken",
                    page.last().map(|(k, _)| k.as_str()).unwrap_or_default(),
                );
            }
            for (k, o) in page {
                x.open("Contents")
                    .el("Key", k)
                    .el("LastModified", &crate::iso(o.modified_ms))
                    .el("ETag", &o.etag)
                    .el("Size", &o.data.len().to_string())
                    .el("StorageClass", "STANDARD")
                    .close("Contents");
            }
            x.close("ListBucketResult");
            xml(200, x)
        }
        "PutObject" | "UploadPart" => {
            let chunked = parts
                .headers
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("aws-chunked"))
                || parts
                    .headers
                    .get("x-amz-content-sha256")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("STREAMING-"));
            let data = if chunked {
                decode_aws_chunked(body)
            } else {
                Some(body.clone())
            };
            let Some(data) = data else {
                drop(st);
                return fail(ApiError::new(
                    400,
                    "IncompleteBody",
                    "the aws-chunked body is malformed",
                ));
            };
            let content_type = parts
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("binary/octet-stream");
            let object = Object::new(data, content_type);
            let etag = object.etag.clone();
            if action == "PutObject" {
                objects.insert(key, object);
            } else {
                let id = q("uploadId").unwrap_or_default().to_string();
                let Ok(n) = q("partNumber").unwrap_or_default().parse::<u32>() else {
                    return fail(ApiError::new(
                        400,
                        "InvalidArgument",
                        "Part number must be an integer between 1 and 10000, inclusive",
                    ));
                };
                if !(1..=10_000).contains(&n) {
                    return fail(ApiError::new(
                        400,
                        "InvalidArgument",
                        "Part number must be an integer between 1 and 10000, inclusive",
                    ));
                }
                match st
                    .uploads
                    .get_mut(&id)
                    .filter(|u| u.bucket == bucket && u.key == key)
                {
                    Some(u) => {
                        u.parts.insert(n, object);
                    }
                    None => return fail(no_upload()),
                }
            }
            empty(200)
                .header("ETag", etag)
                .body(Default::default())
                .expect("a valid response")
        }
        "CreateMultipartUpload" => {
            let content_type = parts
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("binary/octet-stream")
                .to_string();
            let id = format!("pym-{:016x}", shared.ids.next() ^ (crate::now_ms() as u64));
            st.uploads.insert(
                id.clone(),
                Upload {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    content_type,
                    started_ms: crate::now_ms(),
                    parts: Default::default(),
                },
            );
            let mut x = document();
            x.open("InitiateMultipartUploadResult")
                .el("Bucket", &bucket)
                .el("Key", &key)
                .el("UploadId", &id)
                .close("InitiateMultipartUploadResult");
            xml(200, x)
        }
        "ListParts" => {
            let id = q("uploadId").unwrap_or_default();
            let Some(u) = st
                .uploads
                .get(id)
                .filter(|u| u.bucket == bucket && u.key == key)
            else {
                return fail(no_upload());
            };
            let mut x = document();
            x.open("ListPartsResult")
                .el("Bucket", &bucket)
                .el("Key", &key)
                .el("UploadId", id)
                .el("IsTruncated", "false");
            for (n, p) in &u.parts {
                x.open("Part")
                    .el("PartNumber", &n.to_string())
                    .el("LastModified", &crate::iso(p.modified_ms))
                    .el("ETag", &p.etag)
                    .el("Size", &p.data.len().to_string())
                    .close("Part");
            }
            x.close("ListPartsResult");
            let _ = u.started_ms;
            xml(200, x)
        }
        "AbortMultipartUpload" => {
            let id = q("uploadId").unwrap_or_default().to_string();
            match st.uploads.remove(&id) {
                Some(_) => empty(204)
                    .body(Default::default())
                    .expect("a valid response"),
                None => fail(no_upload()),
            }
        }
        "CompleteMultipartUpload" => {
            let id = q("uploadId").unwrap_or_default().to_string();
            let Some(u) = st
                .uploads
                .get(&id)
                .filter(|u| u.bucket == bucket && u.key == key)
            else {
                return fail(no_upload());
            };
            // The parts the client names, in order, each with the ETag it was given.
            let text = String::from_utf8_lossy(body);
            let mut chosen = Vec::new();
            for part in text.split("<Part>").skip(1) {
                let field = |name: &str| {
                    part.split(&format!("<{name}>"))
                        .nth(1)
                        .and_then(|r| r.split(&format!("</{name}>")).next())
                        .map(|v| v.replace("&quot;", "\"").trim().to_string())
                };
                let (Some(n), Some(etag)) = (
                    field("PartNumber").and_then(|n| n.parse::<u32>().ok()),
                    field("ETag"),
                ) else {
                    return fail(ApiError::new(
                        400,
                        "MalformedXML",
                        "The XML you provided was not well-formed or did not validate against our published schema.",
                    ));
                };
                let etag = if etag.starts_with('"') {
                    etag
                } else {
                    format!("\"{etag}\"")
                };
                match u.parts.get(&n) {
                    Some(p) if p.etag == etag => chosen.push((n, p)),
                    _ => {
                        return fail(ApiError::new(
                            400,
                            "InvalidPart",
                            format!(
                                "One or more of the specified parts could not be found (part {n})."
                            ),
                        ));
                    }
                }
            }
            if chosen.is_empty() || chosen.windows(2).any(|w| w[0].0 >= w[1].0) {
                return fail(ApiError::new(
                    400,
                    "InvalidPartOrder",
                    "The list of parts was not in ascending order. The parts list must be specified in order of the part number.",
                ));
            }
            if chosen[..chosen.len() - 1]
                .iter()
                .any(|(_, p)| p.data.len() < MIN_PART)
            {
                return fail(ApiError::new(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed object size.",
                ));
            }
            let mut data = Vec::new();
            let mut digests = Vec::new();
            for (_, p) in &chosen {
                data.extend_from_slice(&p.data);
                digests.extend_from_slice(&md5::Md5::digest(&p.data));
            }
            let mut object = Object::new(data.into(), &u.content_type);
            object.etag = format!("\"{}-{}\"", hex(&md5::Md5::digest(&digests)), chosen.len());
            let etag = object.etag.clone();
            st.uploads.remove(&id);
            st.buckets
                .get_mut(&bucket)
                .expect("checked above")
                .insert(key.clone(), object);
            let mut x = document();
            x.open("CompleteMultipartUploadResult")
                .el("Location", &format!("/{bucket}/{key}"))
                .el("Bucket", &bucket)
                .el("Key", &key)
                .el("ETag", &etag)
                .close("CompleteMultipartUploadResult");
            xml(200, x)
        }
        "DeleteObject" => {
            // S3 answers 204 whether or not the key was there.
            objects.remove(&key);
            empty(204)
                .body(Default::default())
                .expect("a valid response")
        }
        _ => {
            let Some(o) = objects.get(&key).cloned() else {
                drop(st);
                return fail(ApiError::new(
                    404,
                    "NoSuchKey",
                    "The specified key does not exist.",
                ));
            };
            drop(st);
            let len = o.data.len();
            let range = parts
                .headers
                .get(hyper::header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(|r| byte_range(r, len));
            let (status, body, content_range) = match range {
                None => (200, o.data.clone(), None),
                Some(Some((a, b))) => (
                    206,
                    o.data.slice(a..=b),
                    Some(format!("bytes {a}-{b}/{len}")),
                ),
                Some(None) => {
                    return fail(ApiError::new(
                        416,
                        "InvalidRange",
                        "The requested range is not satisfiable",
                    ));
                }
            };
            let mut b = empty(status)
                .header("ETag", &o.etag)
                .header("Content-Type", &o.content_type)
                .header("Last-Modified", http_date(o.modified_ms))
                .header("Accept-Ranges", "bytes")
                .header("Content-Length", body.len());
            if let Some(cr) = content_range {
                b = b.header("Content-Range", cr);
            }
            let body = if action == "HeadObject" {
                Bytes::new()
            } else {
                body
            };
            b.body(http_body_util::Full::new(body))
                .expect("a valid response")
        }
    }
}

fn no_upload() -> ApiError {
    ApiError::new(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
}

/// One `bytes=` range of a `len`-byte object, inclusive, or `None` when it cannot be
/// satisfied: `a-b`, `a-` and `-n` (the last n bytes), as RFC 9110 defines them.
fn byte_range(header: &str, len: usize) -> Option<(usize, usize)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (n > 0).then(|| (len.saturating_sub(n), len - 1))
        }
        (a, "") => {
            let a: usize = a.parse().ok()?;
            (a < len).then(|| (a, len - 1))
        }
        (a, b) => {
            let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b && a < len).then(|| (a, b.min(len - 1)))
        }
    }
}

/// `Sat, 28 Nov 2026 12:00:00 GMT`, HTTP's date format.
fn http_date(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let (y, m, d) = pym_fake_common::time::civil_from_days(days);
    let s = ms.rem_euclid(86_400_000) / 1000;
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} GMT",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn document() -> Xml {
    let mut x = Xml::default();
    x.0.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    x
}

fn xml(status: u16, x: Xml) -> Reply {
    crate::reply(status, "application/xml", x.0)
}

fn empty(status: u16) -> hyper::http::response::Builder {
    hyper::Response::builder().status(status)
}

fn error(e: ApiError, resource: &str, request_id: &str, head: bool) -> Reply {
    if head {
        // A HEAD answer carries no body: the status says it all.
        return empty(e.status)
            .body(Default::default())
            .expect("a valid response");
    }
    let mut x = document();
    x.open("Error")
        .el("Code", &e.code)
        .el("Message", &e.message)
        .el("Resource", &format!("/{resource}"))
        .el("RequestId", request_id)
        .close("Error");
    xml(e.status, x)
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
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn aws_chunked_bodies_decode() {
        let body =
            b"5;chunk-signature=abc\r\nhello\r\n3\r\n!!!\r\n0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n";
        assert_eq!(
            super::decode_aws_chunked(body).unwrap().as_ref(),
            b"hello!!!"
        );
        assert!(super::decode_aws_chunked(b"5\r\nhel").is_none());
        assert_eq!(super::percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::byte_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(super::byte_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(super::byte_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(super::byte_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(super::byte_range("bytes=100-", 100), None);
        assert_eq!(super::http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            super::http_date(1_795_870_037_000),
            "Sat, 28 Nov 2026 12:47:17 GMT"
        );
    }
}

//! The local S3 of `tests/fake-aws`, driven by the official Rust SDK (`aws-sdk-s3`) as any
//! client would: ranges, ETags, metadata, listing with the SDK's paginator, deletion and
//! multipart uploads. Built with the `aws-beanstalk` feature (the SDK comes with it).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use pym_fake_aws::{FakeAws, Options};

fn client(fake: &FakeAws, rt: &tokio::runtime::Runtime) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(
        "AKIDPYMDEPLOYTEST",
        "pym-it-s3-secret",
        None,
        None,
        "test",
    );
    let conf = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&fake.endpoint)
            .load(),
    );
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    )
}

fn md5_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(data).unwrap();
    let out = out.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_local_s3_answers_the_sdk_as_s3_does() {
    let fake = FakeAws::start(Options {
        lb_port: None,
        ..Default::default()
    })
    .expect("the local S3 starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s3 = client(&fake, &rt);
    rt.block_on(async {
        s3.create_bucket().bucket("pym-s3").send().await.unwrap();
        s3.head_bucket().bucket("pym-s3").send().await.unwrap();
        let missing = s3
            .head_bucket()
            .bucket("pym-no-such-bucket")
            .send()
            .await
            .unwrap_err();
        assert!(
            missing.as_service_error().is_some_and(|e| e.is_not_found()),
            "{missing:?}"
        );
        let buckets = s3.list_buckets().send().await.unwrap();
        assert!(buckets.buckets().iter().any(|b| b.name() == Some("pym-s3")));

        // A body with its type; the ETag is its MD5, the metadata comes back.
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let put = s3
            .put_object()
            .bucket("pym-s3")
            .key("dir/a.bin")
            .content_type("application/x-pym")
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.e_tag(),
            Some(format!("\"{}\"", md5_hex(&body)).as_str())
        );
        let head = s3
            .head_object()
            .bucket("pym-s3")
            .key("dir/a.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(
            (head.content_type(), head.content_length()),
            (Some("application/x-pym"), Some(100_000))
        );
        assert!(head.last_modified().is_some(), "no Last-Modified");
        // Ranges: a middle slice, the tail, the last bytes; one past the end is refused.
        for (range, want) in [
            ("bytes=10-19", &body[10..20]),
            ("bytes=99990-", &body[99_990..]),
            ("bytes=-5", &body[99_995..]),
        ] {
            let got = s3
                .get_object()
                .bucket("pym-s3")
                .key("dir/a.bin")
                .range(range)
                .send()
                .await
                .unwrap();
            assert!(
                got.content_range()
                    .is_some_and(|r| r.starts_with("bytes ") && r.ends_with("/100000")),
                "{range}: {:?}",
                got.content_range()
            );
            assert_eq!(
                got.body.collect().await.unwrap().into_bytes().as_ref(),
                want,
                "{range}"
            );
        }
        let past = s3
            .get_object()
            .bucket("pym-s3")
            .key("dir/a.bin")
            .range("bytes=100000-")
            .send()
            .await
            .unwrap_err();
        assert_eq!(past.raw_response().map(|r| r.status().as_u16()), Some(416));

        // Listing, a page at a time through the SDK's own paginator.
        for i in 0..5 {
            s3.put_object()
                .bucket("pym-s3")
                .key(format!("list/{i}"))
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .unwrap();
        }
        let pages: Vec<_> = s3
            .list_objects_v2()
            .bucket("pym-s3")
            .prefix("list/")
            .max_keys(2)
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        let keys: Vec<String> = pages
            .iter()
            .flat_map(|p| {
                p.as_ref()
                    .unwrap()
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string))
            })
            .collect();
        assert_eq!(pages.len(), 3, "5 keys, 2 a page");
        assert_eq!(keys, ["list/0", "list/1", "list/2", "list/3", "list/4"]);

        // Deletion, idempotent as in S3.
        s3.delete_object()
            .bucket("pym-s3")
            .key("list/0")
            .send()
            .await
            .unwrap();
        s3.delete_object()
            .bucket("pym-s3")
            .key("list/0")
            .send()
            .await
            .unwrap();
        let gone = s3
            .get_object()
            .bucket("pym-s3")
            .key("list/0")
            .send()
            .await
            .unwrap_err();
        assert!(
            gone.as_service_error().is_some_and(|e| e.is_no_such_key()),
            "{gone:?}"
        );

        // Multipart: two parts (the first at S3's 5 MiB minimum), listed, completed; the
        // ETag is the MD5 of the parts' MD5s with the count.
        let part1 = vec![7u8; 5 * 1024 * 1024];
        let part2 = b"the last part may be small".to_vec();
        let up = s3
            .create_multipart_upload()
            .bucket("pym-s3")
            .key("big.bin")
            .content_type("application/x-big")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap().to_string();
        let mut done = Vec::new();
        for (n, data) in [(1, &part1), (2, &part2)] {
            let p = s3
                .upload_part()
                .bucket("pym-s3")
                .key("big.bin")
                .upload_id(&id)
                .part_number(n)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .unwrap();
            done.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(p.e_tag().unwrap())
                    .build(),
            );
        }
        let listed = s3
            .list_parts()
            .bucket("pym-s3")
            .key("big.bin")
            .upload_id(&id)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.parts().len(), 2);
        let complete = s3
            .complete_multipart_upload()
            .bucket("pym-s3")
            .key("big.bin")
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let digests: Vec<u8> = [&part1, &part2]
            .iter()
            .flat_map(|d| {
                (0..16).map(move |i| u8::from_str_radix(&md5_hex(d)[i * 2..i * 2 + 2], 16).unwrap())
            })
            .collect();
        assert_eq!(
            complete.e_tag(),
            Some(format!("\"{}-2\"", md5_hex(&digests)).as_str())
        );
        let big = s3
            .get_object()
            .bucket("pym-s3")
            .key("big.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(big.content_type(), Some("application/x-big"));
        let data = big.body.collect().await.unwrap().into_bytes();
        assert_eq!(
            (data.len(), &data[data.len() - part2.len()..]),
            (part1.len() + part2.len(), part2.as_slice())
        );
        // An aborted upload is gone.
        let up = s3
            .create_multipart_upload()
            .bucket("pym-s3")
            .key("never.bin")
            .send()
            .await
            .unwrap();
        s3.abort_multipart_upload()
            .bucket("pym-s3")
            .key("never.bin")
            .upload_id(up.upload_id().unwrap())
            .send()
            .await
            .unwrap();
        let aborted = s3
            .list_parts()
            .bucket("pym-s3")
            .key("never.bin")
            .upload_id(up.upload_id().unwrap())
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            aborted.raw_response().map(|r| r.status().as_u16()),
            Some(404)
        );
        // Every answer names its request.
        let raw = s3
            .head_object()
            .bucket("pym-s3")
            .key("big.bin")
            .send()
            .await
            .unwrap();
        assert!(
            aws_sdk_s3::operation::RequestId::request_id(&raw).is_some_and(|id| !id.is_empty()),
            "no x-amz-request-id"
        );
    });
}

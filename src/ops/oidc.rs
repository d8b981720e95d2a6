//! The CI job's identity token (OpenID Connect), which the cloud targets exchange for
//! short-lived credentials, so that no cloud key is stored in CI.
//!
//! GitHub Actions hands it to a job that has `permissions: id-token: write`: a GET of
//! `$ACTIONS_ID_TOKEN_REQUEST_URL` with `&audience=<the cloud's audience>`, authorized by
//! `Bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answers `{"value": "<JWT>"}`. The token is
//! a secret: it is masked before anything could print it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

use crate::error::hinted;

pub const REQUEST_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
pub const REQUEST_TOKEN: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// The audience AWS STS takes GitHub's tokens with.
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";

/// Whether this job can ask for an identity token (GitHub Actions with `id-token: write`).
pub fn available() -> bool {
    [REQUEST_URL, REQUEST_TOKEN]
        .iter()
        .all(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// The job's identity token for `audience`.
pub async fn github_token(audience: &str) -> Result<String> {
    let (Ok(url), Ok(bearer)) = (std::env::var(REQUEST_URL), std::env::var(REQUEST_TOKEN)) else {
        return Err(hinted(
            "this job cannot ask for an identity token",
            "give the job `permissions: id-token: write` (pymdeploy ci github writes it)",
        ));
    };
    crate::output::Printer::from_env().add_secret(&bearer);
    let sep = if url.contains('?') { '&' } else { '?' };
    let uri: hyper::Uri = format!(
        "{url}{sep}audience={}",
        crate::ops::http::query_value(audience)
    )
    .parse()
    .with_context(|| format!("{REQUEST_URL} is not a URL"))?;
    let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if uri.scheme_str() != Some("https") && !loopback {
        bail!("{REQUEST_URL} is not an https URL: {uri}");
    }
    let connector = crate::ops::http::https_connector(None, loopback)?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let req = hyper::Request::get(uri)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"))
        .header(hyper::header::ACCEPT, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("pymdeploy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())?;
    let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .context("the identity token request did not answer within 30 s")?
        .context("cannot ask for the job's identity token")?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "the identity token request answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).context("the identity token answer is not JSON")?;
    let token = v["value"]
        .as_str()
        .filter(|t| !t.is_empty())
        .context("the identity token answer has no `value`")?
        .to_string();
    crate::output::Printer::from_env().add_secret(&token);
    Ok(token)
}

/// Writes a token to a file only this user can read, in a directory of its own, for a
/// client that reads its token from a file (the AWS SDK's web identity provider); the
/// directory goes when the returned guard is dropped.
pub fn token_file(token: &str) -> Result<TokenFile> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("pymdeploy-oidc-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("token");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(TokenFile { dir, path })
}

/// A token's file; removed (with its directory) on drop.
pub struct TokenFile {
    dir: std::path::PathBuf,
    pub path: std::path::PathBuf,
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

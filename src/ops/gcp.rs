//! Google Cloud's Application Default Credentials: where they are, and (feature
//! `gcp-cloud-run`) an access token from them.

use anyhow::Result;

use crate::error::hinted;

/// gcloud's application default credentials file (`gcloud auth application-default
/// login` writes it), whether or not it exists.
fn gcloud_adc_file() -> Option<std::path::PathBuf> {
    std::env::var_os("CLOUDSDK_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config/gcloud"))
        })
        .map(|d| d.join("application_default_credentials.json"))
}

/// The metadata server's host (GCE_METADATA_HOST overrides it, as Google's libraries do).
fn metadata_host() -> String {
    std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into())
}

/// Workload identity federation for this process, once `federate` set it: the
/// external-account credentials (as Google's `external_account` JSON) that exchange the
/// CI job's identity token and impersonate the deploy service account.
static FEDERATED: std::sync::OnceLock<Federation> = std::sync::OnceLock::new();

struct Federation {
    /// How `adc_source` says it.
    said: String,
    /// The external-account credentials, impersonating `service_account`.
    json: serde_json::Value,
    /// What `generateIdToken` needs (private Cloud Run services only).
    #[cfg_attr(not(feature = "gcp-cloud-run"), allow(dead_code))]
    service_account: String,
    /// IAM Credentials' base URL.
    #[cfg_attr(not(feature = "gcp-cloud-run"), allow(dead_code))]
    iam: String,
}

/// A Google API's base URL: Google's own, unless `CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>`
/// names another (as gcloud's `api_endpoint_overrides/<api>` does).
fn api_base(api: &str, google: &str) -> String {
    std::env::var(format!(
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_{}",
        api.to_ascii_uppercase()
    ))
    .ok()
    .filter(|v| !v.is_empty())
    .unwrap_or_else(|| google.to_string())
    .trim_end_matches('/')
    .to_string()
}

/// Makes this process's Google credentials the GitHub Actions job's own identity,
/// federated: its OIDC token (asked for the audience `https://iam.googleapis.com/<provider>`)
/// exchanged at Google's STS for the pool's token, then `service_account` impersonated
/// through IAM Credentials' `generateAccessToken`; google-cloud-auth's external-account
/// credentials do both. Every Google call after it (Cloud Run, Monitoring, the registry's
/// token) goes by them.
pub fn federate(provider: &str, service_account: &str) -> Result<()> {
    let url = std::env::var(crate::ops::oidc::REQUEST_URL)?;
    let bearer = std::env::var(crate::ops::oidc::REQUEST_TOKEN)?;
    let provider = provider.trim_start_matches("//iam.googleapis.com/");
    let sep = if url.contains('?') { '&' } else { '?' };
    let json = serde_json::json!({
        "type": "external_account",
        "audience": format!("//iam.googleapis.com/{provider}"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{}/v1/token", api_base("sts", "https://sts.googleapis.com")),
        "service_account_impersonation_url": format!(
            "{}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken",
            api_base("iamcredentials", "https://iamcredentials.googleapis.com")
        ),
        "credential_source": {
            "url": format!(
                "{url}{sep}audience={}",
                crate::ops::http::query_value(&format!("https://iam.googleapis.com/{provider}"))
            ),
            "headers": {"Authorization": format!("Bearer {bearer}")},
            "format": {"type": "json", "subject_token_field_name": "value"},
        },
    });
    let said = format!("this job's identity token, federated by {provider} as {service_account}");
    let _ = FEDERATED.set(Federation {
        said,
        json,
        service_account: service_account.to_string(),
        iam: api_base("iamcredentials", "https://iamcredentials.googleapis.com"),
    });
    Ok(())
}

/// The external-account credentials `federate` set, if it did.
pub fn federated() -> Option<&'static serde_json::Value> {
    FEDERATED.get().map(|f| &f.json)
}

/// Where Application Default Credentials are looked for, in order; the first that exists.
pub fn adc_source() -> Result<String> {
    if let Some(f) = FEDERATED.get() {
        return Ok(f.said.clone());
    }
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        let p = std::path::PathBuf::from(&path);
        if !p.is_file() {
            return Err(hinted(
                format!(
                    "GOOGLE_APPLICATION_CREDENTIALS names {}, which is not a file",
                    p.display()
                ),
                "point it at a service-account key (JSON), or unset it and run `gcloud auth application-default login`",
            ));
        }
        return Ok(format!("the key in {}", p.display()));
    }
    let well_known = gcloud_adc_file();
    if let Some(p) = well_known.as_ref().filter(|p| p.is_file()) {
        return Ok(format!(
            "gcloud's application default credentials ({})",
            p.display()
        ));
    }
    let metadata = metadata_host();
    use std::net::ToSocketAddrs;
    if (metadata.as_str(), 80)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some())
    {
        return Ok(format!("the metadata server ({metadata})"));
    }
    Err(hinted(
        format!(
            "no Google Cloud credentials: looked in GOOGLE_APPLICATION_CREDENTIALS (not set), {} (no such file), and the metadata server {metadata} (not reachable)",
            well_known.map_or("gcloud's application default credentials".into(), |p| p
                .display()
                .to_string())
        ),
        "on a workstation: `gcloud auth application-default login`; in CI: GOOGLE_APPLICATION_CREDENTIALS=<a service-account key file>",
    ))
}

/// An access token from Application Default Credentials (the federated ones where
/// `federate` set them); `None` without a Google target's feature (Google's auth library
/// is not compiled in).
#[cfg(any(feature = "gcp-cloud-run", feature = "gke"))]
pub fn access_token() -> Result<Option<String>> {
    // Its own thread and runtime: the caller is sync code that may run inside one.
    let token = std::thread::spawn(|| -> Result<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(google_access_token())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the access-token thread panicked"))?;
    token.map(Some).map_err(|e| {
        hinted(
            format!("Application Default Credentials gave no access token: {e:#}"),
            "`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS=<a service-account key file>; for a registry, `gcloud auth configure-docker` also works",
        )
    })
}

/// An access token of this process's Google credentials: the federated ones where
/// `federate` set them, else Application Default Credentials.
#[cfg(any(feature = "gcp-cloud-run", feature = "gke"))]
pub async fn google_access_token() -> Result<String> {
    token_of(federated().cloned()).await
}

/// The access token of external-account credentials (Google's JSON), or with `None` of
/// Application Default Credentials.
#[cfg(any(feature = "gcp-cloud-run", feature = "gke"))]
async fn token_of(external: Option<serde_json::Value>) -> Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let creds = match external {
        Some(json) => google_cloud_auth::credentials::external_account::Builder::new(json)
            .build_access_token_credentials(),
        None => google_cloud_auth::credentials::Builder::default().build_access_token_credentials(),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(creds
        .access_token()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .token)
}

/// The token field `field` of the JSON a token endpoint answers `req` with; else the
/// error `refused` makes of the status and body it answered.
#[cfg(feature = "gcp-cloud-run")]
async fn token_answer(
    req: reqwest::RequestBuilder,
    url: &str,
    field: &str,
    refused: impl FnOnce(reqwest::StatusCode, &serde_json::Value) -> anyhow::Error,
) -> Result<String> {
    use anyhow::Context;
    let r = req
        .send()
        .await
        .with_context(|| format!("cannot reach {url} for an identity token"))?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    match body[field].as_str() {
        Some(t) if status.is_success() => Ok(t.to_string()),
        _ => Err(refused(status, &body)),
    }
}

/// An identity token of the federated deploy service account, for `audience`: the
/// pool's own token (the exchange without impersonation) asks IAM Credentials'
/// `generateIdToken` of the service account, as the principal that may act as it.
#[cfg(feature = "gcp-cloud-run")]
async fn federated_identity_token(
    client: &reqwest::Client,
    f: &Federation,
    audience: &str,
) -> Result<String> {
    use anyhow::Context;
    let mut json = f.json.clone();
    if let Some(o) = json.as_object_mut() {
        o.remove("service_account_impersonation_url");
    }
    let pool = token_of(Some(json))
        .await
        .context("the identity token exchange failed")?;
    let url = format!(
        "{}/v1/projects/-/serviceAccounts/{}:generateIdToken",
        f.iam, f.service_account
    );
    let req = client
        .post(&url)
        .bearer_auth(&pool)
        .json(&serde_json::json!({"audience": audience, "includeEmail": true}));
    token_answer(req, &url, "token", |status, body| {
        hinted(
            format!(
                "IAM Credentials gave no identity token for {} ({status}): {}",
                f.service_account,
                body["error"]["message"].as_str().unwrap_or("no reason")
            ),
            "the pool's principal needs roles/iam.serviceAccountOpenIdTokenCreator on the deploy service account",
        )
    })
    .await
}

#[cfg(not(any(feature = "gcp-cloud-run", feature = "gke")))]
pub fn access_token() -> Result<Option<String>> {
    Ok(None)
}

/// An identity token for `audience` (a private Cloud Run service's URL) from Application
/// Default Credentials, as Google issues them: a service-account key signs a JWT
/// (RS256) that its `token_uri` exchanges for an ID token; gcloud's user credentials
/// refresh at their `token_uri`; on Google Cloud, the metadata server's `identity`.
#[cfg(feature = "gcp-cloud-run")]
pub async fn identity_token(audience: &str) -> Result<String> {
    use anyhow::{Context, anyhow, bail};
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()?;
    let hint = "`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS=<a service-account key file>";
    if let Some(f) = FEDERATED.get() {
        return federated_identity_token(&client, f, audience).await;
    }
    let file = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
        .map(std::path::PathBuf::from)
        .or_else(|| gcloud_adc_file().filter(|p| p.is_file()));
    let exchange = |form: Vec<(&'static str, String)>, token_uri: String| {
        let req = client.post(&token_uri).form(&form);
        async move {
            token_answer(req, &token_uri, "id_token", |status, body| {
                hinted(
                    format!(
                        "{token_uri} gave no identity token ({status}): {}",
                        body["error_description"]
                            .as_str()
                            .or(body["error"].as_str())
                            .unwrap_or("no reason")
                    ),
                    hint,
                )
            })
            .await
        }
    };
    if let Some(path) = file {
        let key: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?;
        let token_uri = key["token_uri"]
            .as_str()
            .unwrap_or("https://oauth2.googleapis.com/token")
            .to_string();
        return match key["type"].as_str() {
            Some("service_account") => {
                let assertion = signed_jwt(&key, &token_uri, audience)?;
                exchange(
                    vec![
                        (
                            "grant_type",
                            "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                        ),
                        ("assertion", assertion),
                    ],
                    token_uri,
                )
                .await
            }
            Some("authorized_user") => {
                let field = |k: &str| {
                    key[k]
                        .as_str()
                        .map(String::from)
                        .ok_or_else(|| anyhow!("{} has no `{k}`", path.display()))
                };
                let form = vec![
                    ("grant_type", "refresh_token".into()),
                    ("client_id", field("client_id")?),
                    ("client_secret", field("client_secret")?),
                    ("refresh_token", field("refresh_token")?),
                ];
                exchange(form, token_uri).await
            }
            other => bail!(
                "{} holds credentials of type {other:?}, which cannot give an identity token here; use a service-account key",
                path.display()
            ),
        };
    }
    let host = metadata_host();
    let url =
        format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/identity");
    let r = client
        .get(&url)
        .query(&[("audience", audience), ("format", "full")])
        .header("Metadata-Flavor", "Google")
        .send()
        .await;
    match r {
        Ok(r) if r.status().is_success() => Ok(r.text().await?.trim().to_string()),
        Ok(r) => Err(hinted(
            format!(
                "the metadata server gave no identity token ({})",
                r.status()
            ),
            hint,
        )),
        Err(e) => Err(hinted(
            format!(
                "no credentials for an identity token: no key file, and the metadata server {host} does not answer ({e})"
            ),
            hint,
        )),
    }
}

/// The JWT a service-account key signs to ask its token server for an identity token.
#[cfg(feature = "gcp-cloud-run")]
fn signed_jwt(key: &serde_json::Value, token_uri: &str, audience: &str) -> Result<String> {
    use anyhow::anyhow;
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let email = key["client_email"]
        .as_str()
        .ok_or_else(|| anyhow!("the service-account key has no `client_email`"))?;
    let pem = key["private_key"]
        .as_str()
        .ok_or_else(|| anyhow!("the service-account key has no `private_key`"))?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| anyhow!("the service-account key's `private_key` is not PEM"))?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| {
        anyhow!("the service-account key's `private_key` is not an RSA PKCS#8 key: {e}")
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": key["private_key_id"]});
    let claims = serde_json::json!({"iss": email, "sub": email, "aud": token_uri, "target_audience": audience, "iat": now, "exp": now + 3600});
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signature = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| anyhow!("cannot sign with the service-account key"))?;
    Ok(format!("{signing_input}.{}", b64(&signature)))
}

//! Google Cloud's Application Default Credentials: where they are, and (feature
//! `gcp-cloud-run`) an access token from them.

use anyhow::Result;

use crate::error::hinted;

/// Where Application Default Credentials are looked for, in order; the first that exists.
pub fn adc_source() -> Result<String> {
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        let p = std::path::PathBuf::from(&path);
        if !p.is_file() {
            return Err(hinted(
                format!("GOOGLE_APPLICATION_CREDENTIALS names {}, which is not a file", p.display()),
                "point it at a service-account key (JSON), or unset it and run `gcloud auth application-default login`",
            ));
        }
        return Ok(format!("the key in {}", p.display()));
    }
    let well_known = std::env::var_os("CLOUDSDK_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config/gcloud")))
        .map(|d| d.join("application_default_credentials.json"));
    if let Some(p) = well_known.as_ref().filter(|p| p.is_file()) {
        return Ok(format!("gcloud's application default credentials ({})", p.display()));
    }
    let metadata = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
    use std::net::ToSocketAddrs;
    if (metadata.as_str(), 80).to_socket_addrs().is_ok_and(|mut a| a.next().is_some()) {
        return Ok(format!("the metadata server ({metadata})"));
    }
    Err(hinted(
        format!(
            "no Google Cloud credentials: looked in GOOGLE_APPLICATION_CREDENTIALS (not set), {} (no such file), and the metadata server {metadata} (not reachable)",
            well_known.map_or("gcloud's application default credentials".into(), |p| p.display().to_string())
        ),
        "on a workstation: `gcloud auth application-default login`; in CI: GOOGLE_APPLICATION_CREDENTIALS=<a service-account key file>",
    ))
}

/// An access token from Application Default Credentials; `None` without the
/// gcp-cloud-run feature (Google's auth library is not compiled in).
#[cfg(feature = "gcp-cloud-run")]
pub fn access_token() -> Result<Option<String>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Its own thread and runtime: the caller is sync code that may run inside one.
    let token = std::thread::spawn(|| -> Result<String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let creds = google_cloud_auth::credentials::Builder::default().build_access_token_credentials().map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(creds.access_token().await.map_err(|e| anyhow::anyhow!("{e}"))?.token)
        })
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

#[cfg(not(feature = "gcp-cloud-run"))]
pub fn access_token() -> Result<Option<String>> {
    Ok(None)
}

//! The edge: the proxy of `ops::proxy` shared by every service deployed on one engine,
//! routing each request by host name (and path prefix) to a **site**, one per service and
//! environment, on the engine's HTTP and HTTPS ports.
//!
//! A site is the files `<key>.json` (its `SiteConf`), `<key>.upstream` (its routes, as the
//! per-service proxy's route file), `<key>.canary` and `<key>.maintenance` in the sites
//! directory of the edge's volume. Each is replaced whole by a rename after an fsync, so
//! an edge killed during an update, or an engine that loses power, finds either the old
//! file or the new one, never a mix. Certificates are kept in the volume too
//! (`certs/<host>.pem`, chain then key), as is the ACME account (`acme/<directory>.json`).
//!
//! TLS: a certificate is chosen per connection by its SNI host name: the site's own files
//! (`tls: {cert, key}`) or the one ACME issued for the host. Each host of a site with
//! `tls: acme` gets its certificate by HTTP-01 (RFC 8555), answered by the edge itself on
//! its HTTP port, and a new one once a third of its lifetime is left.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// Where the edge keeps its sites, in its volume.
pub const SITES_DIR: &str = "/state/sites";
/// The port the edge serves TLS on inside its container (HTTP is `proxy::PORT`).
pub const TLS_PORT: u16 = 8443;
/// Where ACME's HTTP-01 challenges are asked for (RFC 8555, 8.3).
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// What a site is: the host names and path it answers, and how it does TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConf {
    /// Host names, exact (`api.example.com`) or one level of wildcard (`*.example.com`).
    pub hosts: Vec<String>,
    /// Only requests whose path is this prefix or below it (unset: every path).
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub tls: SiteTls,
    /// The service's name and environment, for status and the access log.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub env: String,
}

/// How a site does TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum SiteTls {
    /// Plain HTTP only.
    #[default]
    Off,
    /// A certificate chain and key the team provides (PEM).
    Files { cert_pem: String, key_pem: String },
    /// A certificate per host from an ACME CA.
    Acme {
        directory: String,
        #[serde(default)]
        email: Option<String>,
        /// Roots to trust for the directory besides the public ones (a private CA's).
        #[serde(default)]
        ca_pem: Option<String>,
    },
}

impl SiteTls {
    pub fn is_on(&self) -> bool {
        !matches!(self, SiteTls::Off)
    }
}

/// The answer a site in maintenance gives every request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Maintenance {
    pub retry_after: u32,
    /// The page (HTML when it starts with `<`, else plain text).
    pub page: String,
}

/// Whether `host` (lowercase, no port) is one of `hosts`: equal, `*` (any), or under a
/// `*.` wildcard by exactly one label. Exact names rank above wildcards.
pub fn host_rank(hosts: &[String], host: &str) -> Option<u8> {
    hosts
        .iter()
        .filter_map(|h| {
            if h == "*" {
                Some(0)
            } else if let Some(suffix) = h.strip_prefix("*.") {
                host.strip_suffix(suffix)
                    .and_then(|l| l.strip_suffix('.'))
                    .filter(|l| !l.is_empty() && !l.contains('.'))
                    .map(|_| 1)
            } else {
                h.eq_ignore_ascii_case(host).then_some(2)
            }
        })
        .max()
}

/// Whether `path` is `prefix` or below it (`/api` holds `/api` and `/api/x`, not `/apix`).
pub fn under_prefix(prefix: Option<&str>, path: &str) -> bool {
    let Some(p) = prefix
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
    else {
        return true;
    };
    path == p
        || path
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with(['/', '?']))
}

/// Replaces `path` with `bytes` so that a reader (or a restart after a crash) sees the old
/// content or the new, never part of either: written beside it, flushed to disk, renamed
/// over it, and the directory flushed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.new",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Exactly `n` bytes of stdin: what `docker exec` hands a command without a shell (the
/// length given, so no end of input is needed).
pub fn read_input(n: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0; n];
    std::io::stdin()
        .read_exact(&mut buf)
        .with_context(|| format!("cannot read {n} bytes from stdin"))?;
    Ok(buf)
}

/// A site's key as a file name: its service's name and environment (`hello-live`).
pub fn site_key(service: &str, env: &str) -> String {
    format!("{service}-{env}")
}

/// The route file of the site `key` in `sites`.
pub fn site_state(sites: &Path, key: &str) -> PathBuf {
    sites.join(format!("{key}.upstream"))
}

/// Writes the site `key` (what `__edge-site` does inside the edge).
pub fn set_site(sites: &Path, key: &str, conf: &SiteConf) -> Result<()> {
    check_key(key)?;
    std::fs::create_dir_all(sites).with_context(|| format!("cannot create {}", sites.display()))?;
    if let SiteTls::Files { cert_pem, key_pem } = &conf.tls {
        certified_key(cert_pem, key_pem).context("the site's certificate and key do not load")?;
    }
    write_atomic(
        &sites.join(format!("{key}.json")),
        &serde_json::to_vec_pretty(conf)?,
    )
}

/// Removes the site `key`: its conf first (so it stops answering at once), then its other
/// files.
pub fn remove_site(sites: &Path, key: &str) -> Result<()> {
    check_key(key)?;
    for ext in ["json", "upstream", "canary", "maintenance"] {
        let f = sites.join(format!("{key}.{ext}"));
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", f.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || key.starts_with('.')
    {
        bail!("`{key}` is not a site's key");
    }
    Ok(())
}

/// The maintenance file beside a route file.
pub fn maintenance_file(state: &Path) -> PathBuf {
    state.with_extension("maintenance")
}

/// Puts the site whose route file is `state` in maintenance (`Some`) or out of it.
pub fn set_maintenance(state: &Path, m: Option<&Maintenance>) -> Result<()> {
    let file = maintenance_file(state);
    match m {
        Some(m) => write_atomic(&file, &serde_json::to_vec(m)?),
        None => match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", file.display()))
            }
            _ => Ok(()),
        },
    }
}

/// Every site in `sites`: its key and conf (a file that does not parse is skipped and
/// said on stderr).
pub fn read_sites(sites: &Path) -> Vec<(String, SiteConf)> {
    let Ok(entries) = std::fs::read_dir(sites) else {
        return Vec::new();
    };
    let mut out: Vec<(String, SiteConf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let key = name.strip_suffix(".json")?.to_string();
            let text = std::fs::read_to_string(e.path()).ok()?;
            match serde_json::from_str(&text) {
                Ok(conf) => Some((key, conf)),
                Err(err) => {
                    eprintln!("ignoring the site {key}: {err}");
                    None
                }
            }
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A certificate chain and its key (PEM) as rustls serves them.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("the certificate is not PEM")?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in the PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .context("the private key is not PEM (PKCS#8, PKCS#1 or SEC1)")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .context("the private key is of a kind rustls cannot sign with")?;
    Ok(CertifiedKey::new(chain, signer))
}

/// The validity (not before, not after; Unix seconds) of a DER certificate, read from its
/// TBSCertificate (RFC 5280, 4.1) without a full X.509 parser.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    // An element's tag, header length and content length.
    fn element(b: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *b.first()?;
        let first = *b.get(1)? as usize;
        if first < 0x80 {
            return Some((tag, 2, first));
        }
        let n = first & 0x7f;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        Some((tag, 2 + n, len))
    }
    fn inside(b: &[u8]) -> Option<&[u8]> {
        let (_, h, l) = element(b)?;
        b.get(h..h + l)
    }
    fn skip(b: &[u8]) -> Option<&[u8]> {
        let (_, h, l) = element(b)?;
        b.get(h + l..)
    }
    fn time(b: &[u8]) -> Option<i64> {
        let (tag, h, l) = element(b)?;
        let s = std::str::from_utf8(b.get(h..h + l)?).ok()?;
        let s = s.strip_suffix('Z')?;
        let (year, rest) = match tag {
            0x17 => {
                let y: i64 = s.get(0..2)?.parse().ok()?;
                (if y < 50 { 2000 + y } else { 1900 + y }, s.get(2..)?)
            }
            0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
            _ => return None,
        };
        let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
        let (mo, d, hh, mm, ss) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
        Some(days_from_civil(year, mo, d) * 86400 + hh * 3600 + mm * 60 + ss)
    }
    let cert = inside(der)?;
    let mut tbs = inside(cert)?;
    if *tbs.first()? == 0xa0 {
        tbs = skip(tbs)?; // version
    }
    let tbs = skip(tbs)?; // serial
    let tbs = skip(tbs)?; // signature algorithm
    let tbs = skip(tbs)?; // issuer
    let validity = inside(tbs)?;
    let from = time(validity)?;
    let until = time(skip(validity)?)?;
    Some((from, until))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A certificate the edge serves, and its validity.
#[derive(Clone)]
pub struct Served {
    pub key: Arc<CertifiedKey>,
    pub not_before: i64,
    pub not_after: i64,
}

impl Served {
    fn load(cert_pem: &str, key_pem: &str) -> Result<Served> {
        let key = certified_key(cert_pem, key_pem)?;
        let (not_before, not_after) = validity(key.cert[0].as_ref()).unwrap_or((0, i64::MAX));
        Ok(Served {
            key: Arc::new(key),
            not_before,
            not_after,
        })
    }

    /// Whether it is time for a new one: a third of its lifetime or less is left.
    fn due(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(1);
        self.not_after - now <= life / 3
    }
}

/// The certificates the edge serves, by host name (a site's files under each of its hosts;
/// ACME's per host), chosen by SNI.
#[derive(Default)]
pub struct Certs {
    by_host: RwLock<HashMap<String, Served>>,
    /// Certificates ACME issued, kept across reloads of the sites.
    issued: RwLock<HashMap<String, Served>>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certs")
    }
}

impl Certs {
    /// Makes the served set from the sites' own files and what ACME issued.
    pub fn rebuild(&self, sites: &[(String, SiteConf)]) {
        let issued = self.issued.read().unwrap().clone();
        let mut by_host = issued;
        for (key, conf) in sites {
            if let SiteTls::Files { cert_pem, key_pem } = &conf.tls {
                match Served::load(cert_pem, key_pem) {
                    Ok(s) => {
                        for h in &conf.hosts {
                            by_host.insert(h.to_ascii_lowercase(), s.clone());
                        }
                    }
                    Err(e) => eprintln!("the site {key}'s certificate does not load: {e:#}"),
                }
            }
        }
        *self.by_host.write().unwrap() = by_host;
    }

    fn issue(&self, host: &str, served: Served) {
        self.issued
            .write()
            .unwrap()
            .insert(host.to_string(), served.clone());
        self.by_host
            .write()
            .unwrap()
            .insert(host.to_string(), served);
    }

    /// The certificate for `host`: its own, else a wildcard's one label up.
    pub fn for_host(&self, host: &str) -> Option<Served> {
        let by_host = self.by_host.read().unwrap();
        let host = host.to_ascii_lowercase();
        by_host.get(&host).cloned().or_else(|| {
            let (_, parent) = host.split_once('.')?;
            by_host.get(&format!("*.{parent}")).cloned()
        })
    }

    /// Each host and its certificate's expiry, for status.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .by_host
            .read()
            .unwrap()
            .iter()
            .map(|(h, s)| (h.clone(), s.not_after))
            .collect();
        out.sort();
        out
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.for_host(hello.server_name()?).map(|s| s.key)
    }
}

/// The TLS config the edge serves with: certificates by SNI, HTTP/2 and HTTP/1.1.
pub fn server_config(certs: Arc<Certs>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// ACME's side of the edge: the challenges it answers and the certificates it keeps.
#[derive(Default)]
pub struct Acme {
    /// HTTP-01 tokens and their key authorizations.
    pub challenges: Mutex<HashMap<String, String>>,
    /// Hosts whose last order failed: when to try again, and how many times it failed.
    backoff: Mutex<HashMap<String, (i64, u32)>>,
}

/// Where the edge keeps `host`'s certificate.
fn cert_file(state_dir: &Path, host: &str) -> PathBuf {
    state_dir.join("certs").join(format!("{host}.pem"))
}

/// Loads the certificates ACME issued before (the edge restarted) into `certs`.
pub fn load_issued(state_dir: &Path, certs: &Certs) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("certs")) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(host) = name.strip_suffix(".pem") else {
            continue;
        };
        let Ok(pem) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        match Served::load(&pem, &pem) {
            Ok(s) => certs.issue(host, s),
            Err(err) => eprintln!("ignoring the certificate of {host}: {err:#}"),
        }
    }
}

impl Acme {
    /// Orders a certificate for every host of an ACME site that has none, or whose
    /// certificate is due; one host at a time, each failure backed off (10 s doubling up to
    /// an hour) and said on stderr.
    pub async fn renew_due(&self, state_dir: &Path, sites: &[(String, SiteConf)], certs: &Certs) {
        let now = now();
        for (key, conf) in sites {
            let SiteTls::Acme {
                directory,
                email,
                ca_pem,
            } = &conf.tls
            else {
                continue;
            };
            for host in &conf.hosts {
                let host = host.to_ascii_lowercase();
                if host.contains('*') {
                    continue; // HTTP-01 cannot prove a wildcard
                }
                if certs
                    .issued
                    .read()
                    .unwrap()
                    .get(&host)
                    .is_some_and(|s| !s.due(now))
                {
                    continue;
                }
                if self
                    .backoff
                    .lock()
                    .unwrap()
                    .get(&host)
                    .is_some_and(|(at, _)| *at > now)
                {
                    continue;
                }
                let ordered = self
                    .order(
                        state_dir,
                        &host,
                        directory,
                        email.as_deref(),
                        ca_pem.as_deref(),
                    )
                    .await;
                match ordered.and_then(|pem| {
                    let served = Served::load(&pem, &pem)?;
                    let file = cert_file(state_dir, &host);
                    std::fs::create_dir_all(file.parent().expect("in certs/"))?;
                    write_atomic(&file, pem.as_bytes())?;
                    Ok(served)
                }) {
                    Ok(served) => {
                        eprintln!(
                            "{}",
                            serde_json::json!({"event": "certificate", "site": key, "host": host, "not_after": served.not_after})
                        );
                        self.backoff.lock().unwrap().remove(&host);
                        certs.issue(&host, served);
                    }
                    Err(e) => {
                        let mut backoff = self.backoff.lock().unwrap();
                        let failed = backoff.get(&host).map_or(0, |(_, n)| *n) + 1;
                        let wait = (5i64 << failed.min(10)).min(3600);
                        backoff.insert(host.clone(), (now + wait, failed));
                        eprintln!(
                            "{}",
                            serde_json::json!({"event": "certificate-failed", "site": key, "host": host, "error": format!("{e:#}"), "retry_in_s": wait})
                        );
                    }
                }
            }
        }
    }

    /// One order for `host`: the account (made once per directory and kept), the HTTP-01
    /// challenge answered by this edge, the certificate chain and its new key (PEM).
    async fn order(
        &self,
        state_dir: &Path,
        host: &str,
        directory: &str,
        email: Option<&str>,
        ca_pem: Option<&str>,
    ) -> Result<String> {
        use instant_acme::{
            Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
            OrderStatus, RetryPolicy,
        };
        let http = acme_client(ca_pem)?;
        let account_file = state_dir.join("acme").join(format!(
            "{}.json",
            directory
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        ));
        let account = match std::fs::read(&account_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(credentials) => Account::builder_with_http(Box::new(http))
                .from_credentials(credentials)
                .await
                .context("cannot restore the ACME account")?,
            None => {
                let contact = email.map(|e| format!("mailto:{e}"));
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = Account::builder_with_http(Box::new(http))
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.to_string(),
                        None,
                    )
                    .await
                    .with_context(|| format!("cannot make an ACME account at {directory}"))?;
                std::fs::create_dir_all(account_file.parent().expect("in acme/"))?;
                write_atomic(&account_file, &serde_json::to_vec(&credentials)?)?;
                account
            }
        };
        let ids = [Identifier::Dns(host.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .with_context(|| format!("cannot order a certificate for {host}"))?;
        let mut tokens = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("cannot read an authorization")?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .context("the CA offers no HTTP-01 challenge")?;
            self.challenges.lock().unwrap().insert(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_string(),
            );
            tokens.push(challenge.token.clone());
            challenge
                .set_ready()
                .await
                .context("cannot tell the CA the challenge is ready")?;
        }
        let retries = RetryPolicy::default().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retries).await;
        let answered = async {
            let status = status.context("the order did not become ready")?;
            if status != OrderStatus::Ready {
                bail!(
                    "the CA did not validate {host} ({status:?}): is port 80 of this host reachable from the CA, and does {host} resolve to it?"
                );
            }
            let key_pem = order.finalize().await.context("cannot finalize the order")?;
            let chain = order
                .poll_certificate(&retries)
                .await
                .context("the certificate was not issued")?;
            Ok(format!("{}\n{key_pem}", chain.trim_end()))
        }
        .await;
        let mut challenges = self.challenges.lock().unwrap();
        for t in tokens {
            challenges.remove(&t);
        }
        answered
    }

    /// The key authorization for an HTTP-01 `token`, if the edge is answering it.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.challenges.lock().unwrap().get(token).cloned()
    }
}

/// The HTTPS client the ACME account uses: the public roots (webpki-roots; the edge's
/// image has no CA bundle) and the site's own CA, if any.
fn acme_client(
    ca_pem: Option<&str>,
) -> Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        instant_acme::BodyWrapper<bytes::Bytes>,
    >,
> {
    let connector = crate::ops::http::https_connector(ca_pem, false)?;
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// One access-log line (JSON) per request on stdout, kept in a buffer of the proxy worker
/// that served it (no other thread is woken per request) and written when 64 KiB wait,
/// and by each worker every 100 ms (`flush_log`), whole lines at a time.
#[derive(Clone, Copy, Default)]
pub struct AccessLog;

thread_local! {
    static LOG: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl AccessLog {
    pub fn line(&self, line: String) {
        LOG.with(|b| {
            let mut b = b.borrow_mut();
            b.push_str(&line);
            b.push('\n');
            if b.len() >= 64 * 1024 {
                write_log(&mut b);
            }
        });
    }
}

fn write_log(buf: &mut String) {
    if !buf.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(buf.as_bytes());
        let _ = out.flush();
        buf.clear();
    }
}

/// Writes what this thread's access log holds.
pub fn flush_log() {
    LOG.with(|b| write_log(&mut b.borrow_mut()));
}

thread_local! {
    /// The second `push_log_time` last wrote, and its text up to the fraction.
    static LOG_SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Appends a timestamp for the access log: RFC 3339 in UTC, to the millisecond. The
/// date and time of a second are worked out once per thread.
pub fn push_log_time(out: &mut String) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    LOG_SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != d.as_secs() {
            *cached = (d.as_secs(), second_text(d.as_secs() as i64));
        }
        out.push_str(&cached.1);
    });
    let ms = d.subsec_millis();
    for digit in [ms / 100, ms / 10 % 10, ms % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
    out.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch, in UTC.
fn second_text(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since the epoch (the inverse of `days_from_civil`).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d_ = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d_:02}T{:02}:{:02}:{:02}.",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_or_by_one_wildcard_label_and_prefixes_by_segment() {
        let hosts = vec!["api.example.com".to_string(), "*.example.org".to_string()];
        assert_eq!(host_rank(&hosts, "api.example.com"), Some(2));
        assert_eq!(host_rank(&hosts, "API.example.com"), Some(2));
        assert_eq!(host_rank(&hosts, "a.example.org"), Some(1));
        assert_eq!(host_rank(&hosts, "a.b.example.org"), None);
        assert_eq!(host_rank(&hosts, "example.org"), None);
        assert_eq!(host_rank(&hosts, "www.example.com"), None);
        assert_eq!(host_rank(&["*".to_string()], "anything"), Some(0));
        assert!(under_prefix(Some("/api"), "/api"));
        assert!(under_prefix(Some("/api/"), "/api/v1"));
        assert!(!under_prefix(Some("/api"), "/apix"));
        assert!(under_prefix(None, "/x"));
    }

    #[test]
    fn a_certificate_s_validity_is_read_and_a_renewal_is_due_at_a_third_of_its_life() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let cert = params.self_signed(&key).unwrap();
        let (from, until) = validity(cert.der()).unwrap();
        assert_eq!(from, days_from_civil(2026, 1, 2) * 86400);
        assert_eq!(until, days_from_civil(2049, 12, 31) * 86400);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        let served = Served::load(&cert.pem(), &key.serialize_pem()).unwrap();
        assert!(!served.due(from + 10));
        assert!(served.due(until - (until - from) / 3));
        let certs = Certs::default();
        certs.issue("a.test", served);
        assert!(certs.for_host("A.test").is_some());
        assert!(certs.for_host("b.test").is_none());
    }

    #[test]
    fn a_site_is_written_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("pym-edge-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let conf = SiteConf {
            hosts: vec!["a.test".into()],
            path_prefix: Some("/api".into()),
            service: "a".into(),
            env: "live".into(),
            ..SiteConf::default()
        };
        set_site(&dir, "a-live", &conf).unwrap();
        assert_eq!(read_sites(&dir), vec![("a-live".to_string(), conf)]);
        assert!(set_site(&dir, "../x", &SiteConf::default()).is_err());
        let bad = SiteConf {
            tls: SiteTls::Files {
                cert_pem: "nope".into(),
                key_pem: "nope".into(),
            },
            ..SiteConf::default()
        };
        assert!(set_site(&dir, "b-live", &bad).is_err());
        remove_site(&dir, "a-live").unwrap();
        assert!(read_sites(&dir).is_empty());
        let mut t = String::new();
        push_log_time(&mut t);
        assert!(t.len() == 24 && t.ends_with('Z'), "{t}");
        assert_eq!(second_text(951_782_400 + 3723), "2000-02-29T01:02:03.");
        assert_eq!(second_text(0), "1970-01-01T00:00:00.");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The identity token side of a CI job, as GitHub Actions plays it for a job with
//! `permissions: id-token: write`, and the check a cloud makes of such a token.
//!
//! [`Issuer`] answers `GET /token?audience=A` (authorized by the request token it was
//! given, as `ACTIONS_ID_TOKEN_REQUEST_URL` is) with `{"value": "<JWT>"}`: an RS256 JWT
//! whose `iss` is the issuer's own URL, `aud` the audience asked for, `sub` the job's
//! subject. Like token.actions.githubusercontent.com it publishes
//! `/.well-known/openid-configuration` and its keys at `jwks_uri`. [`verify`] is what a
//! cloud's STS does with a token: it fetches the keys its `iss` publishes and checks the
//! signature, the audience and the expiry. The key pair is made with `openssl`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use ring::signature::{self, RsaKeyPair};

use crate::base64;

/// A running issuer. Dropping it stops it.
pub struct Issuer {
    /// `http://127.0.0.1:<port>`: its `iss`.
    pub url: String,
    /// What a job gets as `ACTIONS_ID_TOKEN_REQUEST_URL` and `_TOKEN`.
    pub request_url: String,
    pub request_token: String,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

struct Shared {
    url: String,
    request_token: String,
    subject: String,
    key: RsaKeyPair,
    /// The audiences tokens were asked for, in order.
    audiences: Mutex<Vec<String>>,
}

impl Issuer {
    /// Starts an issuer of tokens for `subject` (`repo:org/repo:environment:live`).
    pub fn start(subject: &str) -> std::io::Result<Issuer> {
        // ring reads an RSA key as PKCS#1 DER (`RSAPrivateKey`).
        let der = std::process::Command::new("sh")
            .args([
                "-c",
                "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null | openssl rsa -traditional -outform DER 2>/dev/null",
            ])
            .output()?;
        if !der.status.success() {
            return Err(std::io::Error::other("openssl made no RSA key"));
        }
        let key = RsaKeyPair::from_der(&der.stdout)
            .map_err(|e| std::io::Error::other(format!("openssl's key: {e}")))?;
        let rt = crate::runtime("fake-oidc")?;
        let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let request_token = format!("actions-request-{}", std::process::id());
        let shared = Arc::new(Shared {
            url: url.clone(),
            request_token: request_token.clone(),
            subject: subject.to_string(),
            key,
            audiences: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        rt.spawn(crate::net::serve_http(listener, move |parts, _| {
            let s = s.clone();
            async move { answer(&s, &parts) }
        }));
        Ok(Issuer {
            request_url: format!("{url}/token?api-version=2.0"),
            url,
            request_token,
            shared,
            _rt: rt,
        })
    }

    /// The audiences tokens were asked for.
    pub fn audiences(&self) -> Vec<String> {
        self.shared.audiences.lock().unwrap().clone()
    }
}

fn reply(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn answer(s: &Shared, parts: &hyper::http::request::Parts) -> Response<Full<Bytes>> {
    let query = parts.uri.query().unwrap_or("");
    match parts.uri.path() {
        "/.well-known/openid-configuration" => reply(
            200,
            serde_json::json!({"issuer": s.url, "jwks_uri": format!("{}/.well-known/jwks", s.url)}),
        ),
        "/.well-known/jwks" => {
            let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(s.key.public());
            let (n, e) = (public.n.as_slice(), public.e.as_slice());
            reply(
                200,
                serde_json::json!({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
                    "n": url64(n), "e": url64(e)}]}),
            )
        }
        "/token" => {
            let bearer = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if bearer != Some(s.request_token.as_str()) {
                return reply(401, serde_json::json!({"message": "Bad credentials"}));
            }
            let audience = query
                .split('&')
                .find_map(|p| p.strip_prefix("audience="))
                .map(unescape)
                .unwrap_or_else(|| s.url.clone());
            s.audiences.lock().unwrap().push(audience.clone());
            let now = crate::time::now_ms() / 1000;
            let claims = serde_json::json!({
                "iss": s.url, "aud": audience, "sub": s.subject,
                "iat": now, "nbf": now, "exp": now + 300,
                "repository": "pymdeploy/it", "environment": "live",
            });
            let head = url64(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
            let body = url64(claims.to_string().as_bytes());
            let signed = format!("{head}.{body}");
            let mut sig = vec![0; s.key.public().modulus_len()];
            s.key
                .sign(
                    &signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signed.as_bytes(),
                    &mut sig,
                )
                .expect("RS256 signs");
            reply(
                200,
                serde_json::json!({"count": 1, "value": format!("{signed}.{}", url64(&sig))}),
            )
        }
        _ => reply(404, serde_json::json!({"message": "Not Found"})),
    }
}

fn url64(data: &[u8]) -> String {
    base64::encode(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A query value, percent-decoded.
fn unescape(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Checks an identity token as a cloud's STS does: the keys its issuer publishes (its
/// `iss`'s `/.well-known/openid-configuration`, then `jwks_uri`) verify its RS256
/// signature; it is for `audience` and not expired. Its claims, or why it is refused.
pub async fn verify(token: &str, audience: &str) -> Result<serde_json::Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, body, sig] = parts[..] else {
        return Err("not a JWT".into());
    };
    let json = |part: &str| {
        base64::decode_any(part)
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .ok_or_else(|| "a JWT part is not base64url JSON".to_string())
    };
    let (header, claims) = (json(head)?, json(body)?);
    if header["alg"] != "RS256" {
        return Err(format!("unsupported alg {}", header["alg"]));
    }
    let iss = claims["iss"].as_str().ok_or("no iss")?;
    let config = crate::net::get_json(&format!("{iss}/.well-known/openid-configuration")).await?;
    let jwks = crate::net::get_json(config["jwks_uri"].as_str().ok_or("no jwks_uri")?).await?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
        .ok_or("no key of the token's kid")?;
    let part = |name: &str| {
        key[name]
            .as_str()
            .and_then(base64::decode_any)
            .ok_or_else(|| format!("the key has no {name}"))
    };
    let (n, e) = (part("n")?, part("e")?);
    let sig = base64::decode_any(sig).ok_or("the signature is not base64url")?;
    signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{head}.{body}").as_bytes(),
            &sig,
        )
        .map_err(|_| "the signature does not verify".to_string())?;
    if claims["aud"].as_str() != Some(audience) {
        return Err(format!(
            "the token is for {}, not {audience}",
            claims["aud"]
        ));
    }
    if claims["exp"].as_i64().unwrap_or(0) < crate::time::now_ms() / 1000 {
        return Err("the token has expired".into());
    }
    Ok(claims)
}

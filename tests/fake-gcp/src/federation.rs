//! Workload identity federation, as a CI job's deploy reaches it: Google's STS token
//! exchange (`POST /v1/token`, RFC 8693) takes the job's OIDC token, checked as Google
//! checks it (the keys its issuer publishes verify it; its audience is
//! `https://iam.googleapis.com/<provider>`), for a federated access token; IAM
//! Credentials' `generateAccessToken` (`POST /v1/projects/-/serviceAccounts/SA:generateAccessToken`)
//! takes that token for one of the service account it impersonates. The tokens each
//! issued are kept, so a test can tell which credentials every later call carried.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::{Reply, Shared, json as j, reply};

/// What federation gave out.
#[derive(Clone, Debug, Default)]
pub struct Issued {
    /// Federated access tokens, and the subject of the identity token each came from.
    pub federated: BTreeMap<String, String>,
    /// Service-account access tokens, and the service account each acts as.
    pub impersonated: BTreeMap<String, String>,
    /// How many identity tokens `generateIdToken` gave.
    pub id_tokens: u64,
}

fn answer(status: u16, v: Value) -> Reply {
    reply(status, "application/json; charset=UTF-8", v.to_string())
}

/// `POST /v1/token`.
pub(crate) async fn exchange(shared: &Arc<Shared>, body: &[u8]) -> Reply {
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let invalid = |what: &str| {
        answer(
            400,
            json!({"error": "invalid_request", "error_description": what}),
        )
    };
    if get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" {
        return invalid("Invalid value for \"grant_type\".");
    }
    if get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
        return invalid("Invalid value for \"requested_token_type\".");
    }
    if get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt" {
        return invalid("Invalid value for \"subject_token_type\".");
    }
    let Some(provider) = get("audience")
        .strip_prefix("//iam.googleapis.com/")
        .filter(|p| p.starts_with("projects/") && p.contains("/workloadIdentityPools/"))
    else {
        return invalid(
            "Invalid value for \"audience\". This value should be the full resource name of the Identity Provider.",
        );
    };
    let expected = format!("https://iam.googleapis.com/{provider}");
    let claims = match pym_fake_common::oidc::verify(get("subject_token"), &expected).await {
        Ok(c) => c,
        Err(why) => {
            return answer(
                400,
                json!({"error": "invalid_grant", "error_description": format!("The subject token is invalid: {why}")}),
            );
        }
    };
    let token = format!("fed-{:08x}-{}", shared.ids.next(), j::now_ms());
    let subject = claims["sub"].as_str().unwrap_or_default().to_string();
    shared
        .lock()
        .federation
        .federated
        .insert(token.clone(), subject);
    answer(
        200,
        json!({"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600}),
    )
}

/// `POST /v1/projects/-/serviceAccounts/{sa}:generateAccessToken`, with a federated
/// token as its bearer.
pub(crate) fn generate_access_token(shared: &Arc<Shared>, sa: &str, bearer: Option<&str>) -> Reply {
    let known = bearer.is_some_and(|b| shared.lock().federation.federated.contains_key(b));
    if !known {
        return answer(
            401,
            json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
        );
    }
    let token = format!("ya29.fake-{:08x}-{}", shared.ids.next(), j::now_ms());
    shared
        .lock()
        .federation
        .impersonated
        .insert(token.clone(), sa.to_string());
    let expire = pym_fake_common::time::rfc3339(j::now_ms() + 3_600_000);
    answer(200, json!({"accessToken": token, "expireTime": expire}))
}

/// `POST /v1/projects/-/serviceAccounts/{sa}:generateIdToken`, with a federated token as
/// its bearer: an identity token of the service account for `audience` (what a private
/// service's front door takes).
pub(crate) fn generate_id_token(
    shared: &Arc<Shared>,
    sa: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Reply {
    let known = bearer.is_some_and(|b| shared.lock().federation.federated.contains_key(b));
    if !known {
        return answer(
            401,
            json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
        );
    }
    let req: Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(audience) = req["audience"].as_str().filter(|a| !a.is_empty()) else {
        return answer(
            400,
            json!({"error": {"code": 400, "message": "Invalid value for audience.", "status": "INVALID_ARGUMENT"}}),
        );
    };
    let now = j::now_ms() / 1000;
    let token = j::jwt(
        &json!({"iss": "https://accounts.google.com", "aud": audience, "azp": sa, "email": sa, "email_verified": true, "sub": "100000000000000000001", "iat": now, "exp": now + 3600}),
    );
    shared.lock().federation.id_tokens += 1;
    answer(200, json!({"token": token}))
}

/// `GET /tokeninfo?access_token=T`, as oauth2.googleapis.com answers it: what a service
/// account token this server gave is for (GKE's apiserver asks it of a bearer token).
pub(crate) fn tokeninfo(shared: &Arc<Shared>, query: &str) -> Reply {
    let token: Option<String> = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned());
    let sa = token.and_then(|t| shared.lock().federation.impersonated.get(&t).cloned());
    match sa {
        Some(sa) => answer(
            200,
            json!({"email": sa, "email_verified": "true", "expires_in": "3599", "access_type": "online", "scope": "https://www.googleapis.com/auth/cloud-platform"}),
        ),
        None => answer(
            400,
            json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        ),
    }
}

//! STS's `AssumeRoleWithWebIdentity` (Query API, version 2011-06-15), the exchange a CI
//! job makes of its OIDC identity token: the token is checked as STS checks it (the
//! keys its issuer publishes verify its signature, its audience is `sts.amazonaws.com`,
//! it has not expired), and the answer is temporary credentials for the role: an
//! `ASIA…` access key, its secret and a session token, for an hour. The server then
//! knows that key: a request signed with it must carry its session token
//! (`X-Amz-Security-Token`), and the calls are counted per signing key.

use std::sync::Arc;

use crate::xml::Xml;
use crate::{Reply, Shared, iso, now_ms, reply};

const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Temporary credentials STS gave out.
#[derive(Clone, Debug)]
pub struct Session {
    pub secret: String,
    pub token: String,
    pub role: String,
    /// The identity token's `sub`.
    pub subject: String,
}

pub(crate) async fn handle(shared: &Arc<Shared>, body: &[u8]) -> Reply {
    let p: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| {
        p.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let request_id = shared.request_id();
    let fail = |status: u16, code: &str, message: &str| {
        let mut x = Xml::default();
        x.0.push_str(&format!(r#"<ErrorResponse xmlns="{XMLNS}">"#));
        x.open("Error")
            .el("Type", "Sender")
            .el("Code", code)
            .el("Message", message)
            .close("Error")
            .el("RequestId", &request_id)
            .close("ErrorResponse");
        reply(status, "text/xml", x.0)
    };
    if get("Action") != "AssumeRoleWithWebIdentity" {
        return fail(
            400,
            "InvalidAction",
            "only AssumeRoleWithWebIdentity is served here",
        );
    }
    if let Some(e) = shared.lock().call("AssumeRoleWithWebIdentity") {
        return fail(e.status, &e.code, &e.message);
    }
    let (role, session_name, token) = (
        get("RoleArn"),
        get("RoleSessionName"),
        get("WebIdentityToken"),
    );
    if role.is_empty() || session_name.is_empty() || token.is_empty() {
        return fail(
            400,
            "ValidationError",
            "RoleArn, RoleSessionName and WebIdentityToken are required",
        );
    }
    let claims = match pym_fake_common::oidc::verify(token, "sts.amazonaws.com").await {
        Ok(c) => c,
        Err(why) => return fail(400, "InvalidIdentityToken", &why),
    };
    let subject = claims["sub"].as_str().unwrap_or_default().to_string();
    let n = shared.ids.next();
    let key = format!("ASIA{:016X}", n);
    let session = Session {
        secret: format!("fake-sts-secret-{n:08x}-{}", std::process::id()),
        token: format!("fake-sts-session-{n:08x}-{}", now_ms()),
        role: role.to_string(),
        subject: subject.clone(),
    };
    shared.lock().sessions.insert(key.clone(), session.clone());
    let account = role.split(':').nth(4).unwrap_or("123456789012");
    let role_name = role.rsplit('/').next().unwrap_or(role);
    let mut x = Xml::default();
    x.0.push_str(&format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="{XMLNS}">"#
    ));
    x.open("AssumeRoleWithWebIdentityResult")
        .el("SubjectFromWebIdentityToken", &subject)
        .el("Audience", "sts.amazonaws.com")
        .open("AssumedRoleUser")
        .el(
            "Arn",
            &format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}"),
        )
        .el("AssumedRoleId", &format!("AROA{n:016X}:{session_name}"))
        .close("AssumedRoleUser")
        .open("Credentials")
        .el("SessionToken", &session.token)
        .el("SecretAccessKey", &session.secret)
        .el("Expiration", &iso(now_ms() + 3_600_000))
        .el("AccessKeyId", &key)
        .close("Credentials")
        .el("Provider", claims["iss"].as_str().unwrap_or_default())
        .close("AssumeRoleWithWebIdentityResult")
        .open("ResponseMetadata")
        .el("RequestId", &request_id)
        .close("ResponseMetadata")
        .close("AssumeRoleWithWebIdentityResponse");
    reply(200, "text/xml", x.0)
}

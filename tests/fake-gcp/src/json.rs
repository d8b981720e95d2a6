//! JSON helpers: the enum encodings of the v2 API (names in storage, numbers on the wire
//! when the caller asks for `$alt=json;enum-encoding=int`), google.rpc status codes,
//! protobuf `Duration`s and `Timestamp`s, base64 for IAM etags.

use serde_json::{Map, Value};

/// Standard base64 with padding (IAM etags are `bytes`).
pub use pym_fake_common::base64::encode as base64;
/// Milliseconds since the Unix epoch, and `2026-11-27T19:00:00.123Z` (a protobuf JSON
/// `Timestamp`) from them.
pub use pym_fake_common::time::{now_ms, rfc3339_millis as timestamp};

/// The enums of Service, Revision and Condition, by field name: `(name, number)`.
fn table(field: &str) -> Option<&'static [(&'static str, i64)]> {
    Some(match field {
        "ingress" => &[
            ("INGRESS_TRAFFIC_UNSPECIFIED", 0),
            ("INGRESS_TRAFFIC_ALL", 1),
            ("INGRESS_TRAFFIC_INTERNAL_ONLY", 2),
            ("INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER", 3),
            ("INGRESS_TRAFFIC_NONE", 4),
        ],
        "launchStage" => &[
            ("LAUNCH_STAGE_UNSPECIFIED", 0),
            ("EARLY_ACCESS", 1),
            ("ALPHA", 2),
            ("BETA", 3),
            ("GA", 4),
            ("DEPRECATED", 5),
            ("UNIMPLEMENTED", 6),
            ("PRELAUNCH", 7),
        ],
        // Only under `traffic` and `trafficStatuses` (a Condition's `type` is a string).
        "trafficType" => &[
            ("TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED", 0),
            ("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", 1),
            ("TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", 2),
        ],
        "state" => &[
            ("STATE_UNSPECIFIED", 0),
            ("CONDITION_PENDING", 1),
            ("CONDITION_RECONCILING", 2),
            ("CONDITION_FAILED", 3),
            ("CONDITION_SUCCEEDED", 4),
        ],
        "severity" => &[
            ("SEVERITY_UNSPECIFIED", 0),
            ("ERROR", 1),
            ("WARNING", 2),
            ("INFO", 3),
        ],
        "reason" => &[
            ("COMMON_REASON_UNDEFINED", 0),
            ("UNKNOWN", 1),
            ("REVISION_FAILED", 3),
            ("PROGRESS_DEADLINE_EXCEEDED", 4),
            ("CONTAINER_MISSING", 6),
            ("CONTAINER_PERMISSION_DENIED", 7),
            ("CONTAINER_IMAGE_UNAUTHORIZED", 8),
            ("CONTAINER_IMAGE_AUTHORIZATION_CHECK_FAILED", 9),
            ("ENCRYPTION_KEY_PERMISSION_DENIED", 10),
            ("ENCRYPTION_KEY_CHECK_FAILED", 11),
            ("SECRETS_ACCESS_CHECK_FAILED", 12),
            ("WAITING_FOR_OPERATION", 13),
            ("IMMEDIATE_RETRY", 14),
            ("POSTPONED_RETRY", 15),
            ("INTERNAL", 16),
            ("VPC_NETWORK_NOT_FOUND", 17),
        ],
        "revisionReason" => &[
            ("REVISION_REASON_UNDEFINED", 0),
            ("PENDING", 1),
            ("RESERVE", 2),
            ("RETIRED", 3),
            ("RETIRING", 4),
            ("RECREATING", 5),
            ("HEALTH_CHECK_CONTAINER_ERROR", 6),
            ("CUSTOMIZED_PATH_RESPONSE_PENDING", 7),
            ("MIN_INSTANCES_NOT_PROVISIONED", 8),
            ("ACTIVE_REVISION_LIMIT_REACHED", 9),
            ("NO_DEPLOYMENT", 10),
            ("HEALTH_CHECK_SKIPPED", 11),
            ("MIN_INSTANCES_WARMING", 12),
        ],
        "executionEnvironment" => &[
            ("EXECUTION_ENVIRONMENT_UNSPECIFIED", 0),
            ("EXECUTION_ENVIRONMENT_GEN1", 1),
            ("EXECUTION_ENVIRONMENT_GEN2", 2),
        ],
        "encryptionKeyRevocationAction" => &[
            ("ENCRYPTION_KEY_REVOCATION_ACTION_UNSPECIFIED", 0),
            ("PREVENT_NEW", 1),
            ("SHUTDOWN", 2),
        ],
        "scalingMode" => &[
            ("SCALING_MODE_UNSPECIFIED", 0),
            ("AUTOMATIC", 1),
            ("MANUAL", 2),
        ],
        _ => return None,
    })
}

/// Rewrites every known enum field of `v` as names (`ints == false`) or numbers. Values
/// that are not in the table are left as they are.
pub fn encode_enums(v: &mut Value, ints: bool) {
    walk(v, None, ints);
}

fn walk(v: &mut Value, parent: Option<&str>, ints: bool) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let field = if k == "type" && matches!(parent, Some("traffic" | "trafficStatuses"))
                {
                    "trafficType"
                } else {
                    k.as_str()
                };
                if let (Some(t), true) = (table(field), k != "type" || field == "trafficType") {
                    convert(x, t, ints);
                } else {
                    walk(x, Some(k), ints);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                walk(x, parent, ints);
            }
        }
        _ => {}
    }
}

fn convert(x: &mut Value, t: &[(&str, i64)], ints: bool) {
    let found = match &*x {
        Value::String(s) => t.iter().find(|(n, _)| n == s),
        Value::Number(n) => t.iter().find(|(_, i)| Some(*i) == n.as_i64()),
        _ => None,
    };
    if let Some((name, num)) = found {
        *x = if ints {
            Value::from(*num)
        } else {
            Value::from(*name)
        };
    }
}

/// `(HTTP status, canonical code)` of a google.rpc status name.
pub fn status_codes(status: &str) -> (u16, i64) {
    match status {
        "OK" => (200, 0),
        "CANCELLED" => (499, 1),
        "INVALID_ARGUMENT" => (400, 3),
        "DEADLINE_EXCEEDED" => (504, 4),
        "NOT_FOUND" => (404, 5),
        "ALREADY_EXISTS" => (409, 6),
        "PERMISSION_DENIED" => (403, 7),
        "RESOURCE_EXHAUSTED" => (429, 8),
        "FAILED_PRECONDITION" => (400, 9),
        "ABORTED" => (409, 10),
        "OUT_OF_RANGE" => (400, 11),
        "UNIMPLEMENTED" => (501, 12),
        "INTERNAL" => (500, 13),
        "UNAVAILABLE" => (503, 14),
        "DATA_LOSS" => (500, 15),
        "UNAUTHENTICATED" => (401, 16),
        _ => (500, 2),
    }
}

/// The usual status name of an HTTP error status (for faults given by HTTP code only).
pub fn status_of_http(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// An `ErrorInfo` detail of domain `run.googleapis.com`.
pub fn error_info(reason: &str, metadata: Map<String, Value>) -> Value {
    serde_json::json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "run.googleapis.com",
        "metadata": metadata,
    })
}

/// Reads a protobuf JSON `Duration` (`"10s"`, `"1.5s"`) into milliseconds.
pub fn parse_duration(v: Option<&Value>) -> Option<u64> {
    let s = v?.as_str()?.strip_suffix('s')?;
    let secs: f64 = s.parse().ok()?;
    (secs >= 0.0).then_some((secs * 1000.0) as u64)
}

/// The claims of a JWT, read without checking its signature.
pub fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&pym_fake_common::base64::decode_any(payload)?).ok()
}

/// A JWT with these claims, signed with nothing a client could check (the local Cloud
/// Run is its only reader).
pub fn jwt(claims: &Value) -> String {
    let url = |b: &[u8]| {
        base64(b)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    format!(
        "{}.{}.{}",
        url(br#"{"alg":"RS256","typ":"JWT","kid":"pym-fake-gcp"}"#),
        url(claims.to_string().as_bytes()),
        url(b"not-a-signature")
    )
}

/// Two base64 strings name the same bytes (padding and the URL-safe alphabet aside).
pub fn same_base64(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('=').replace('-', "+").replace('_', "/");
    norm(a) == norm(b)
}

pub fn now() -> String {
    timestamp(now_ms())
}

/// A 64-bit FNV-1a hash (stable names: URL hashes, container names).
pub fn fnv(data: &str) -> u64 {
    data.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `n` lowercase base-36 characters of a hash.
pub fn base36(mut h: u64, n: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| {
            let c = A[(h % 36) as usize] as char;
            h /= 36;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn enums_both_ways() {
        let mut v = json!({"ingress": "INGRESS_TRAFFIC_ALL", "traffic": [{"type": 2, "percent": 100}],
            "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"}});
        super::encode_enums(&mut v, true);
        assert_eq!(
            v,
            json!({"ingress": 1, "traffic": [{"type": 2, "percent": 100}], "terminalCondition": {"type": "Ready", "state": 4}})
        );
        super::encode_enums(&mut v, false);
        assert_eq!(
            v["traffic"][0]["type"],
            "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
        );
        assert_eq!(v["terminalCondition"]["type"], "Ready");
    }

    #[test]
    fn base64_and_times() {
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(
            super::timestamp(1_795_806_000_123),
            "2026-11-27T19:00:00.123Z"
        );
        assert_eq!(super::parse_duration(Some(&json!("1.5s"))), Some(1500));
    }
}

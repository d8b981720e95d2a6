//! The docker target's `tls` key: TLS at the engine's edge proxy for a service's `hosts`.

use serde::{Deserialize, Serialize};

use super::Schema;

/// `tls:` in pym-config.yaml: `acme`, or `{cert: FILE, key: FILE}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tls {
    /// A certificate per host from `acme_directory`, renewed by the edge.
    Acme(AcmeWord),
    /// A certificate chain and its key, PEM files (relative to the service's root).
    Files { cert: String, key: String },
}

/// The word `acme`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcmeWord {
    Acme,
}

impl Schema for Tls {
    fn schema() -> serde_json::Value {
        serde_json::json!({
            "oneOf": [
                {"const": "acme"},
                {
                    "type": "object",
                    "properties": {"cert": {"type": "string"}, "key": {"type": "string"}},
                    "required": ["cert", "key"],
                    "additionalProperties": false,
                },
            ]
        })
    }
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

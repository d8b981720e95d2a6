//! Let's Encrypt's ACME test server, Debian's `pebble`, on loopback ports of its own, with
//! its DNS stand-in (`pebble-challtestsrv`) answering every name with one address: a real
//! RFC 8555 server that validates HTTP-01 challenges by connecting to the edge's HTTP
//! port, and issues certificates that live `validity` seconds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

pub(crate) struct Pebble {
    dir: PathBuf,
    children: Vec<Child>,
    /// The directory URL, as a container reaches it (the engine's bridge gateway).
    pub directory: String,
    /// The CA that signed Pebble's own HTTPS listener (PEM): what the edge must trust.
    pub listener_ca: String,
    management: u16,
}

impl Pebble {
    /// Pebble validating HTTP-01 on `http_port` (the edge's) at `validate_at` (every name
    /// resolves to it), issuing certificates that live `validity` seconds; containers reach
    /// it at `gateway` (this machine's address from the engine's networks).
    pub(crate) fn start(
        http_port: u16,
        https_port: u16,
        validity: u64,
        gateway: &str,
        validate_at: &str,
    ) -> Pebble {
        let dir = temp_dir("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        let gateway = gateway.to_string();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "pym-it pebble listener CA");
        let issuer = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            gateway.clone(),
        ])
        .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let (listen, management, dns, challenges) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("0.0.0.0:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": https_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-defaultIPv4",
                validate_at,
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{challenges}"),
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts (.ci/setup installs pebble)");
        let pebble = Command::new("pebble")
            .args(["-config"])
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble starts (.ci/setup installs it)");
        let me = Pebble {
            directory: format!("https://{gateway}:{listen}/dir"),
            listener_ca: issuer.pem(),
            management,
            dir,
            children: vec![dns_server, pebble],
        };
        std::fs::write(me.dir.join("listener-ca.pem"), &me.listener_ca).unwrap();
        wait_until("pebble to answer", Duration::from_secs(20), || {
            me.curl(&format!("https://127.0.0.1:{listen}/dir"))
                .is_some()
        });
        me
    }

    fn curl(&self, url: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "5", "--cacert"])
            .arg(self.dir.join("listener-ca.pem"))
            .arg(url)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The root Pebble issues under (made anew each time it starts), as a PEM file.
    pub(crate) fn issuing_root(&self) -> PathBuf {
        let pem = self
            .curl(&format!("https://127.0.0.1:{}/roots/0", self.management))
            .expect("pebble's management interface gives its root");
        let path = self.dir.join("issuing-root.pem");
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// What Pebble said, for a failing test's message.
    pub(crate) fn log(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

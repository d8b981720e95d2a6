//! HTTPS for the API port: a CA made at start, a certificate it signs for 127.0.0.1 and
//! localhost, and the accept loop that speaks TLS before HTTP. kubectl sends its
//! credentials only over TLS, so a server that checks tokens answers HTTPS.

use std::sync::Arc;

use bytes::Bytes;
use hyper::Response;
use hyper::http::request::Parts;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Body;

/// A new CA (its certificate in PEM) and an acceptor whose certificate it signed.
pub fn acceptor() -> Result<(String, TlsAcceptor), String> {
    let fail =
        |e: &dyn std::fmt::Display| format!("cannot make the local apiserver's certificate: {e}");
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pym-fake-kube CA");
    let ca_key = KeyPair::generate().map_err(|e| fail(&e))?;
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(|e| fail(&e))?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(|e| fail(&e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let key = KeyPair::generate().map_err(|e| fail(&e))?;
    let cert = leaf.signed_by(&key, &ca).map_err(|e| fail(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec()), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| fail(&e))?;
    Ok((ca.pem(), TlsAcceptor::from(Arc::new(config))))
}

/// Answers HTTPS on every connection `listener` accepts, each request with `handle`.
pub async fn serve<F, R>(listener: TcpListener, acceptor: TlsAcceptor, handle: F)
where
    F: Fn(Parts, Bytes) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, handle) = (acceptor.clone(), handle.clone());
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                pym_fake_common::net::serve_connection(tls, handle).await;
            }
        });
    }
}

//! TLS server configurations built from the Volt's identity.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tdx_volt::{Error, ErrorKind, Result};

use crate::identity::VoltIdentity;

fn tls_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Tls, what.to_owned()).with_source(e)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(
    identity: &VoltIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let leaf = CertificateDer::from_pem_slice(identity.tls_cert_pem().as_bytes())
        .map_err(|e| tls_error("reading the TLS certificate", e))?;
    let ca = CertificateDer::from_pem_slice(identity.ca_pem().as_bytes())
        .map_err(|e| tls_error("reading the CA certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.tls_key_pem().as_bytes())
        .map_err(|e| tls_error("reading the TLS key", e))?;
    Ok((vec![leaf, ca], key))
}

/// The websocket gateway's TLS: server certificate only, HTTP/1.1.
pub fn gateway_config(identity: &VoltIdentity) -> Result<Arc<ServerConfig>> {
    let (certs, key) = chain(identity)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_error("TLS certificate", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The gRPC server's TLS: HTTP/2, and a client certificate issued by the Volt's CA is
/// accepted (and verified) when presented; without one the caller needs a `volt-token`.
pub fn grpc_config(identity: &VoltIdentity) -> Result<Arc<ServerConfig>> {
    let (certs, key) = chain(identity)?;
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(identity.ca_pem().as_bytes())
        .map_err(|e| tls_error("reading the CA certificate", e))?;
    roots.add(ca).map_err(|e| tls_error("CA certificate", e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_error("client certificate verifier", e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls_error("TLS certificate", e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

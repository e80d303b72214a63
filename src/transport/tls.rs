//! TLS client settings: trust the Volt's CA from the configuration (and the public web PKI
//! only when asked, or when a cloud relay is in the way), and present the client certificate
//! for mutual TLS when asked to. Certificates are always verified.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::RootCertStore;

use crate::protocol::config::Relay;
use crate::{ClientConfig, Error, ErrorKind, PrivateKey, Result};

/// Where trust comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trust {
    /// Also trust the public web PKI (Mozilla's roots, from `webpki-roots`).
    pub public_roots: bool,
    /// The connection goes to the configuration's relay, not to the Volt itself.
    pub via_relay: bool,
}

/// A rustls client configuration for the Volt (or its relay) named in `config`. With
/// `client_key`, and a certificate in the credential (`credential.cert`), the client presents
/// that certificate, proving it holds the key (mutual TLS).
pub(crate) fn client_config(
    config: &ClientConfig,
    trust: Trust,
    alpn: &[&[u8]],
    client_key: Option<&PrivateKey>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let mut sources = Vec::new();
    if let Some(pem) = &config.volt().ca_pem {
        sources.push(("volt.ca_pem", pem.as_str()));
    }
    if let Some(pem) = &config.credential().ca {
        sources.push(("credential.ca", pem.as_str()));
    }
    let mut public = trust.public_roots;
    if trust.via_relay {
        match &config.volt().relay {
            Some(Relay::Detailed { ca_pem, cloud, .. }) => {
                if let Some(pem) = ca_pem {
                    sources.push(("volt.relay.ca_pem", pem.as_str()));
                }
                public |= cloud.unwrap_or(false);
            }
            // A relay given only by its URL is a public service with a public certificate.
            Some(Relay::Url(_)) => public = true,
            None => {}
        }
    }
    for (field, pem) in sources {
        add_pem(&mut roots, field, pem)?;
    }
    if public {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if roots.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "volt.ca_pem: missing, so the Volt's certificate cannot be verified \
             (set it, or enable public roots for a Volt with a public certificate)",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Tls, "no usable TLS versions").with_source(e))?
        .with_root_certificates(roots);
    let mut tls = match (client_key, &config.credential().cert) {
        (Some(key), Some(cert_pem)) => {
            let certified = certified_key(cert_pem, key)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(tls))
}

/// The credential's certificate with a signer for the client key. The key's DER is read from
/// our zeroizing buffer in place (rustls's own DER holder would not wipe a copy).
fn certified_key(cert_pem: &str, key: &PrivateKey) -> Result<CertifiedKey> {
    let chain = certificates("credential.cert", cert_pem)?;
    let der = key.to_pkcs8_der()?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(der.as_slice()),
    ))
    .map_err(|e| Error::new(ErrorKind::Key, "the client key cannot sign for TLS").with_source(e))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        Error::new(
            ErrorKind::Config,
            "credential.cert: its key is not the credential's key",
        )
        .with_source(e)
    })?;
    Ok(certified)
}

fn add_pem(roots: &mut RootCertStore, field: &'static str, pem: &str) -> Result<()> {
    for cert in certificates(field, pem)? {
        roots.add(cert).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("{field}: not a usable CA certificate"),
            )
            .with_source(e)
        })?;
    }
    Ok(())
}

/// The certificates of a PEM field: at least one, all well formed.
fn certificates(field: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::new(ErrorKind::Config, format!("{field}: not a PEM certificate")).with_source(e)
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{field}: holds no PEM certificate"),
        ));
    }
    Ok(certs)
}

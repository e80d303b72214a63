//! TLS client settings: trust the Volt's CA from the configuration (and the public web PKI
//! only when asked, or when a cloud relay is in the way). Certificates are always verified.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::protocol::config::Relay;
use crate::{ClientConfig, Error, ErrorKind, Result};

/// Where trust comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trust {
    /// Also trust the public web PKI (Mozilla's roots, from `webpki-roots`).
    pub public_roots: bool,
    /// The connection goes to the configuration's relay, not to the Volt itself.
    pub via_relay: bool,
}

/// A rustls client configuration for the Volt (or its relay) named in `config`.
pub(crate) fn client_config(
    config: &ClientConfig,
    trust: Trust,
    alpn: &[&[u8]],
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
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Tls, "no usable TLS versions").with_source(e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(tls))
}

fn add_pem(roots: &mut RootCertStore, field: &'static str, pem: &str) -> Result<()> {
    let mut found = 0usize;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| {
            Error::new(ErrorKind::Config, format!("{field}: not a PEM certificate")).with_source(e)
        })?;
        roots.add(cert).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("{field}: not a usable CA certificate"),
            )
            .with_source(e)
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{field}: holds no PEM certificate"),
        ));
    }
    Ok(())
}

//! The emulated Volt's identity: its id, its signing key (Ed25519, or RSA-2048 for an
//! RSA-era Volt, see [`Era`]), a CA certificate for that key, and a TLS server certificate for
//! `127.0.0.1` and `localhost` signed by the CA.
//!
//! Everything is created on first start in the data directory and reused afterwards:
//!
//! | file | holds | mode |
//! | --- | --- | --- |
//! | `volt.json` | id and display name | default |
//! | `volt-key.pem` | the Volt signing key (PKCS#8); its algorithm fixes the era | 0600 |
//! | `ca.pem` | the CA certificate (its key is the Volt key) | default |
//! | `tls-cert.pem` | the TLS server certificate | default |
//! | `tls-key.pem` | the TLS server key (ECDSA P-256) | 0600 |

use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore as _};
use serde_json::json;
use tdx_volt::{Error, ErrorKind, PrivateKey, Result};
use zeroize::Zeroizing;

use crate::files::{read_optional, write_atomic, Access};

const CA_COMMON_NAME: &str = "tdx-volt-emulator CA";

/// The RSA key size of an RSA-era Volt and its clients.
pub const LEGACY_RSA_BITS: usize = 2048;

/// Which generation of Volt the emulator plays, fixed by its signing key when the data
/// directory is first created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Era {
    /// Ed25519 keys; the websocket gateway speaks protocol v1 (binary frames).
    #[default]
    Current,
    /// RSA-2048 keys; the websocket gateway speaks the older JSON text protocol of the
    /// Python client `volt_client_web` 0.1.x (`serve --legacy`).
    Legacy,
}

impl Era {
    /// The era of a Volt whose signing key is `key`.
    pub fn of_key(key: &PrivateKey) -> Era {
        match key.algorithm() {
            tdx_volt::KeyAlgorithm::Rsa => Era::Legacy,
            _ => Era::Current,
        }
    }

    /// A fresh key of this era, for the Volt or one of its clients.
    pub fn generate_key(self) -> Result<PrivateKey> {
        match self {
            Era::Current => Ok(PrivateKey::generate_ed25519()),
            Era::Legacy => PrivateKey::generate_rsa(LEGACY_RSA_BITS),
        }
    }

    /// How this era is chosen on the command line, for error messages.
    fn describe(self) -> &'static str {
        match self {
            Era::Current => "an Ed25519 Volt (created without --legacy): start it without --legacy",
            Era::Legacy => "an RSA-era Volt (created with --legacy): start it with --legacy",
        }
    }
}

/// The Volt's identity and certificates.
pub struct VoltIdentity {
    id: String,
    display_name: String,
    era: Era,
    signing_key: PrivateKey,
    ca_pem: String,
    tls_cert_pem: String,
    tls_key_pem: Zeroizing<String>,
    dir: PathBuf,
}

impl std::fmt::Debug for VoltIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoltIdentity")
            .field("id", &self.id)
            .field("display_name", &self.display_name)
            .field("era", &self.era)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn cert_error(what: &str, e: rcgen::Error) -> Error {
    Error::new(ErrorKind::Key, format!("{what}: {e}"))
}

impl VoltIdentity {
    /// Loads the identity kept in `dir`, creating whatever is missing (and `dir` itself). The
    /// era is the existing key's; a new Volt is of [`Era::Current`].
    pub fn load_or_create(dir: &Path) -> Result<VoltIdentity> {
        VoltIdentity::open(dir, None)
    }

    /// Loads the identity kept in `dir` as a Volt of `era`, creating whatever is missing. A
    /// directory holding a Volt of the other era is a [`ErrorKind::Config`] error saying
    /// which flag starts it: the two are never mixed.
    pub fn load_or_create_as(dir: &Path, era: Era) -> Result<VoltIdentity> {
        VoltIdentity::open(dir, Some(era))
    }

    fn open(dir: &Path, want: Option<Era>) -> Result<VoltIdentity> {
        crate::files::create_dir(dir)?;

        let meta_path = dir.join("volt.json");
        let (id, display_name) = match read_optional(&meta_path)? {
            Some(text) => {
                let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("{}: not JSON", meta_path.display()),
                    )
                    .with_source(e)
                })?;
                let field = |k: &str| {
                    meta.get(k)
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            Error::new(
                                ErrorKind::Config,
                                format!("{}: {k}: missing", meta_path.display()),
                            )
                        })
                };
                (field("id")?, field("display_name")?)
            }
            None => {
                let mut raw = [0u8; 16];
                OsRng.fill_bytes(&mut raw);
                let id = format!("did:volt:{}", hex_id(&raw));
                let name = "tdx-volt emulator".to_owned();
                let meta = json!({"id": id, "display_name": name});
                write_atomic(&meta_path, meta.to_string().as_bytes(), Access::Public)?;
                (id, name)
            }
        };

        let key_path = dir.join("volt-key.pem");
        let signing_key = match read_optional(&key_path)? {
            Some(pem) => PrivateKey::from_pem(&Zeroizing::new(pem), None).map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("{}: not a usable key", key_path.display()),
                )
                .with_source(e)
            })?,
            None => {
                let key = want.unwrap_or_default().generate_key()?;
                write_atomic(&key_path, key.to_pkcs8_pem()?.as_bytes(), Access::Private)?;
                key
            }
        };
        let era = Era::of_key(&signing_key);
        if want.is_some_and(|w| w != era) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} holds {}, or use another directory",
                    dir.display(),
                    era.describe()
                ),
            ));
        }
        let key_pem = signing_key.to_pkcs8_pem()?;
        let ca_key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| cert_error("loading the Volt key for the CA", e))?;

        let ca_path = dir.join("ca.pem");
        let ca_pem = match read_optional(&ca_path)? {
            Some(pem) => pem,
            None => {
                let cert = ca_params()?
                    .self_signed(&ca_key)
                    .map_err(|e| cert_error("signing the CA certificate", e))?;
                write_atomic(&ca_path, cert.pem().as_bytes(), Access::Public)?;
                cert.pem()
            }
        };

        let cert_path = dir.join("tls-cert.pem");
        let tls_key_path = dir.join("tls-key.pem");
        let (tls_cert_pem, tls_key_pem) =
            match (read_optional(&cert_path)?, read_optional(&tls_key_path)?) {
                (Some(cert), Some(key)) => (cert, Zeroizing::new(key)),
                _ => {
                    let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                        .map_err(|e| cert_error("generating the TLS key", e))?;
                    let mut params =
                        rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
                            .map_err(|e| cert_error("TLS certificate names", e))?;
                    params
                        .distinguished_name
                        .push(rcgen::DnType::CommonName, "tdx-volt-emulator");
                    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
                    let ca = ca_params()?;
                    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
                    let cert = params
                        .signed_by(&server_key, &issuer)
                        .map_err(|e| cert_error("signing the TLS certificate", e))?;
                    let key_pem = Zeroizing::new(server_key.serialize_pem());
                    write_atomic(&tls_key_path, key_pem.as_bytes(), Access::Private)?;
                    write_atomic(&cert_path, cert.pem().as_bytes(), Access::Public)?;
                    (cert.pem(), key_pem)
                }
            };

        Ok(VoltIdentity {
            id,
            display_name,
            era,
            signing_key,
            ca_pem,
            tls_cert_pem,
            tls_key_pem,
            dir: dir.to_path_buf(),
        })
    }

    /// Issues a client certificate for `client_key`, signed by the Volt CA: subject CN
    /// `common_name`, client-auth usage, and `host` as a SAN when it is an IP address or DNS
    /// name. Returns the PEM and the DER.
    pub fn issue_client_certificate(
        &self,
        client_key: &tdx_volt::PublicKey,
        common_name: &str,
        host: &str,
    ) -> Result<(String, Vec<u8>)> {
        let spki_der = client_key.to_spki_der()?;
        let subject_key = ClientPublicKey::from_spki(&spki_der, client_key.algorithm())?;
        let key_pem = self.signing_key.to_pkcs8_pem()?;
        let ca_key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| cert_error("loading the Volt key for the CA", e))?;
        let sans: Vec<String> = if host.is_empty() {
            Vec::new()
        } else {
            vec![host.to_owned()]
        };
        let mut params = rcgen::CertificateParams::new(sans)
            .or_else(|_| rcgen::CertificateParams::new(Vec::<String>::new()))
            .map_err(|e| cert_error("client certificate names", e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        // A random serial: every certificate is distinct, even for one key in one second, so
        // a certificate names one session.
        let mut serial = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let ca = ca_params()?;
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let cert = params
            .signed_by(&subject_key, &issuer)
            .map_err(|e| cert_error("signing the client certificate", e))?;
        Ok((cert.pem(), cert.der().to_vec()))
    }

    /// The Volt id (a DID): the audience of identity tokens.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The display name.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// The Volt signing key (signs key exchanges, and is the CA key; an RSA-era Volt's
    /// also opens the call keys clients send it).
    pub fn signing_key(&self) -> &PrivateKey {
        &self.signing_key
    }

    /// Which generation of Volt this is.
    pub fn era(&self) -> Era {
        self.era
    }

    /// The Volt's fingerprint: [`tdx_volt::PublicKey::fingerprint`] of its public key (how
    /// RSA-era clients name it in `target_fingerprint`).
    pub fn fingerprint(&self) -> Result<String> {
        self.signing_key.public_key().fingerprint()
    }

    /// The CA certificate PEM (`DIR/ca.pem`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The TLS server certificate PEM.
    pub fn tls_cert_pem(&self) -> &str {
        &self.tls_cert_pem
    }

    /// The TLS server private key PEM.
    pub fn tls_key_pem(&self) -> &str {
        &self.tls_key_pem
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The CA's parameters; rebuilt identically on every start so it can issue certificates.
fn ca_params() -> Result<rcgen::CertificateParams> {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_error("CA", e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Lower-case hex: ids only need to be unique and URL-safe.
fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client's public key in the form rcgen signs certificates for.
struct ClientPublicKey {
    key: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
}

impl ClientPublicKey {
    fn from_spki(spki_der: &[u8], algorithm: tdx_volt::KeyAlgorithm) -> Result<ClientPublicKey> {
        let spki = spki::SubjectPublicKeyInfoRef::try_from(spki_der)
            .map_err(|_| Error::new(ErrorKind::Key, "client public key is not SPKI DER"))?;
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::new(ErrorKind::Key, "client public key has unused bits"))?
            .to_vec();
        let algorithm = match algorithm {
            tdx_volt::KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            tdx_volt::KeyAlgorithm::Rsa => &rcgen::PKCS_RSA_SHA256,
            _ => {
                return Err(Error::new(
                    ErrorKind::Key,
                    "unsupported client key algorithm",
                ))
            }
        };
        Ok(ClientPublicKey { key, algorithm })
    }
}

impl rcgen::PublicKeyData for ClientPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tdx_volt::PublicKey;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tdx-volt-emulator-{name}-{}-{}",
            std::process::id(),
            OsRng.next_u32()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn created_once_then_reused() {
        let dir = scratch("identity");
        let first = VoltIdentity::load_or_create(&dir).unwrap();
        let second = VoltIdentity::load_or_create(&dir).unwrap();
        assert_eq!(first.id(), second.id());
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.tls_cert_pem(), second.tls_cert_pem());
        assert_eq!(
            first.signing_key().public_key(),
            second.signing_key().public_key()
        );
        // The CA certificate carries the Volt key, as clients expect when public_key is absent.
        assert_eq!(
            PublicKey::from_certificate_pem(first.ca_pem()).unwrap(),
            first.signing_key().public_key()
        );
        assert!(first.id().starts_with("did:volt:"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_legacy_volt_is_rsa_throughout_and_never_mixed_with_the_other_era() {
        let dir = scratch("legacy");
        let volt = VoltIdentity::load_or_create_as(&dir, Era::Legacy).unwrap();
        assert_eq!(volt.era(), Era::Legacy);
        let key = volt.signing_key().public_key();
        assert_eq!(key.algorithm(), tdx_volt::protocol::keys::KeyAlgorithm::Rsa);
        assert_eq!(PublicKey::from_certificate_pem(volt.ca_pem()).unwrap(), key);
        assert_eq!(volt.fingerprint().unwrap(), key.fingerprint().unwrap());
        // The directory's own era is what a plain load finds.
        let again = VoltIdentity::load_or_create(&dir).unwrap();
        assert_eq!(again.era(), Era::Legacy);
        assert_eq!(again.signing_key().public_key(), key);
        // Started as the other era: a configuration error naming the flag.
        let err = VoltIdentity::load_or_create_as(&dir, Era::Current).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("with --legacy"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);

        let dir = scratch("current");
        VoltIdentity::load_or_create(&dir).unwrap();
        let err = VoltIdentity::load_or_create_as(&dir, Era::Legacy).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("without --legacy"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("modes");
        VoltIdentity::load_or_create(&dir).unwrap();
        for name in ["volt-key.pem", "tls-key.pem"] {
            let mode = std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let dir = scratch("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("volt.json"), "{not json").unwrap();
        assert!(VoltIdentity::load_or_create(&dir).is_err());
        std::fs::write(
            dir.join("volt.json"),
            r#"{"id":"did:volt:x","display_name":"n"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("volt-key.pem"), "garbage").unwrap();
        let err = VoltIdentity::load_or_create(&dir).unwrap_err();
        assert!(err.to_string().contains("volt-key.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

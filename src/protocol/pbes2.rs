//! Encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`) with PBES2, read and written by this crate.
//!
//! Reading accepts PBKDF2 with HMAC-SHA256 as the PRF (its AlgorithmIdentifier with or without
//! a NULL parameter: the official JavaScript client writes it without) and AES-256-CBC or
//! DES-EDE3-CBC as the cipher. Writing produces the same layout as the official client
//! (PBKDF2-HMAC-SHA256, no key length, AES-256-CBC), so either side can read the other's keys.

use aes::cipher::{
    block_padding::Pkcs7, BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _,
};
use pkcs8::der::asn1::{ObjectIdentifier, OctetStringRef};
use pkcs8::der::{Decode as _, Encode as _, Reader as _, SliceReader, Tag};
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroizing;

use super::error::{Error, Result};

const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");
const HMAC_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.9");
const AES_256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
const DES_EDE3_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.3.7");

/// Iteration counts above this are refused, so a hostile file cannot stall a reader.
pub const MAX_PBKDF2_ITERATIONS: u32 = 4_000_000;

#[derive(Clone, Copy)]
enum Cipher {
    Aes256Cbc,
    DesEde3Cbc,
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes256Cbc => 32,
            Cipher::DesEde3Cbc => 24,
        }
    }
}

struct Params<'a> {
    salt: &'a [u8],
    iterations: u32,
    cipher: Cipher,
    iv: &'a [u8],
    data: &'a [u8],
}

fn bad(what: &'static str) -> Error {
    Error::key(format!("encrypted private key: {what}"))
}

fn parse(der: &[u8]) -> Result<Params<'_>> {
    let malformed = |_| bad("malformed EncryptedPrivateKeyInfo");
    let mut reader = SliceReader::new(der).map_err(malformed)?;
    let params = reader
        .sequence(|r| {
            let (salt, iterations, key_len, cipher_oid, iv) = r.sequence(|r| {
                let scheme = ObjectIdentifier::decode(r)?;
                if scheme != PBES2 {
                    return Err(Tag::ObjectIdentifier.value_error());
                }
                r.sequence(|r| {
                    let (salt, iterations, key_len) = r.sequence(|r| {
                        let kdf = ObjectIdentifier::decode(r)?;
                        if kdf != PBKDF2 {
                            return Err(Tag::ObjectIdentifier.value_error());
                        }
                        r.sequence(|r| {
                            let salt = OctetStringRef::decode(r)?.as_bytes();
                            let iterations = u32::decode(r)?;
                            let key_len = if r.peek_tag()? == Tag::Integer {
                                Some(u16::decode(r)?)
                            } else {
                                None
                            };
                            // The PRF defaults to HMAC-SHA1, which we do not accept.
                            if r.is_finished() {
                                return Err(Tag::Sequence.value_error());
                            }
                            r.sequence(|r| {
                                let prf = ObjectIdentifier::decode(r)?;
                                if prf != HMAC_SHA256 {
                                    return Err(Tag::ObjectIdentifier.value_error());
                                }
                                if !r.is_finished() {
                                    pkcs8::der::asn1::Null::decode(r)?;
                                }
                                Ok(())
                            })?;
                            Ok((salt, iterations, key_len))
                        })
                    })?;
                    let (cipher_oid, iv) = r.sequence(|r| {
                        let oid = ObjectIdentifier::decode(r)?;
                        let iv = OctetStringRef::decode(r)?.as_bytes();
                        Ok((oid, iv))
                    })?;
                    Ok((salt, iterations, key_len, cipher_oid, iv))
                })
            })?;
            let data = OctetStringRef::decode(r)?.as_bytes();
            Ok((salt, iterations, key_len, cipher_oid, iv, data))
        })
        .map_err(|_| bad("unsupported or malformed PBES2 parameters (need PBKDF2-HMAC-SHA256)"))?;
    reader
        .finish(())
        .map_err(|_| bad("unexpected data after the EncryptedPrivateKeyInfo"))?;
    let (salt, iterations, key_len, cipher_oid, iv, data) = params;
    let cipher = if cipher_oid == AES_256_CBC {
        Cipher::Aes256Cbc
    } else if cipher_oid == DES_EDE3_CBC {
        Cipher::DesEde3Cbc
    } else {
        return Err(bad("unsupported cipher (need AES-256-CBC or DES-EDE3-CBC)"));
    };
    if key_len.is_some_and(|n| usize::from(n) != cipher.key_len()) {
        return Err(bad("key length does not match the cipher"));
    }
    if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
        return Err(bad("PBKDF2 iteration count out of range"));
    }
    let iv_len = match cipher {
        Cipher::Aes256Cbc => 16,
        Cipher::DesEde3Cbc => 8,
    };
    if iv.len() != iv_len {
        return Err(bad("IV has the wrong length"));
    }
    if data.is_empty() || !data.len().is_multiple_of(iv_len) {
        return Err(bad("encrypted data is not a whole number of cipher blocks"));
    }
    Ok(Params {
        salt,
        iterations,
        cipher,
        iv,
        data,
    })
}

/// Decrypts an `EncryptedPrivateKeyInfo` into the PKCS#8 DER it protects.
pub(crate) fn decrypt(der: &[u8], passphrase: &str) -> Result<Zeroizing<Vec<u8>>> {
    let p = parse(der)?;
    let mut key = Zeroizing::new(vec![0u8; p.cipher.key_len()]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), p.salt, p.iterations, &mut key);
    let plain = match p.cipher {
        Cipher::Aes256Cbc => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, p.iv)
            .map_err(|_| bad("bad key or IV length"))?
            .decrypt_padded_vec_mut::<Pkcs7>(p.data),
        Cipher::DesEde3Cbc => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, p.iv)
            .map_err(|_| bad("bad key or IV length"))?
            .decrypt_padded_vec_mut::<Pkcs7>(p.data),
    }
    .map_err(|_| Error::key("private key: wrong passphrase (decryption failed)"))?;
    Ok(Zeroizing::new(plain))
}

/// Encrypts PKCS#8 DER with PBKDF2-HMAC-SHA256 (`iterations`, random 16-byte salt) and
/// AES-256-CBC (random IV), in the official client's layout.
pub(crate) fn encrypt(pkcs8_der: &[u8], passphrase: &str, iterations: u32) -> Result<Vec<u8>> {
    if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
        return Err(bad("PBKDF2 iteration count out of range"));
    }
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut iv);
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), &salt, iterations, key.as_mut());
    let data = cbc::Encryptor::<aes::Aes256>::new(key.as_ref().into(), (&iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(pkcs8_der);

    let oid = |o: ObjectIdentifier| o.to_der().map_err(|_| bad("OID encoding failed"));
    let int = |n: u32| n.to_der().map_err(|_| bad("integer encoding failed"));
    let prf = seq(&[oid(HMAC_SHA256)?]);
    let kdf_params = seq(&[octets(&salt), int(iterations)?, prf]);
    let kdf = seq(&[oid(PBKDF2)?, kdf_params]);
    let enc = seq(&[oid(AES_256_CBC)?, octets(&iv)]);
    let alg = seq(&[oid(PBES2)?, seq(&[kdf, enc])]);
    Ok(seq(&[alg, octets(&data)]))
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn octets(bytes: &[u8]) -> Vec<u8> {
    tlv(0x04, bytes)
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_passphrase() {
        let secret = b"0123456789abcdef0123456789abcdef-some-pkcs8";
        let enc = encrypt(secret, "pw", 1000).unwrap();
        assert_eq!(decrypt(&enc, "pw").unwrap().as_slice(), secret);
        assert!(decrypt(&enc, "px").is_err() || decrypt(&enc, "px").unwrap().as_slice() != secret);
    }

    #[test]
    fn long_lengths_encode() {
        let big = vec![7u8; 300];
        let t = tlv(0x04, &big);
        assert_eq!(&t[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let enc = encrypt(&big, "pw", 10).unwrap();
        assert_eq!(decrypt(&enc, "pw").unwrap().as_slice(), big.as_slice());
    }

    #[test]
    fn garbage_and_hostile_parameters_are_errors() {
        assert!(decrypt(b"", "pw").is_err());
        assert!(decrypt(&[0x30, 0x03, 0x02, 0x01, 0x00], "pw").is_err());
        assert!(encrypt(b"x", "pw", 0).is_err());
        assert!(encrypt(b"x", "pw", MAX_PBKDF2_ITERATIONS + 1).is_err());
    }
}

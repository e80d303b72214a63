//! Prints a fresh Ed25519 client key as PKCS#8 PEM, encrypted when a passphrase is given:
//! `cargo run --example keygen [-- PASSPHRASE]`.

fn main() -> Result<(), tdx_volt::Error> {
    let key = tdx_volt::PrivateKey::generate_ed25519();
    match std::env::args().nth(1) {
        Some(passphrase) => print!(
            "{}",
            key.to_encrypted_pkcs8_pem(
                &passphrase,
                tdx_volt::protocol::keys::DEFAULT_PBKDF2_ITERATIONS
            )?
        ),
        None => print!("{}", key.to_pkcs8_pem()?.as_str()),
    }
    print!("{}", key.public_key().to_spki_pem()?);
    Ok(())
}

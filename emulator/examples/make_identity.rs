//! Creates (or reuses) an emulated Volt identity in a directory and prints its id:
//! `cargo run -p tdx-volt-emulator --example make_identity -- DIR`.

fn main() -> Result<(), tdx_volt::Error> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./volt-data".into());
    let identity = tdx_volt_emulator::VoltIdentity::load_or_create(std::path::Path::new(&dir))?;
    println!("{} in {}", identity.id(), identity.dir().display());
    Ok(())
}

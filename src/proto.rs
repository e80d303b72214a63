//! Prost types generated from `proto/` for every message of the Volt API, for users who want
//! typed messages rather than JSON.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The `tdx.volt_api` packages.
pub mod tdx {
    /// The `tdx.volt_api` packages.
    pub mod volt_api {
        /// `tdx.volt_api.volt.v1`: resources, files, wires, identities, sync and more.
        pub mod volt {
            /// Version 1.
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/tdx.volt_api.volt.v1.rs"));
            }
        }
        /// `tdx.volt_api.data.v1`: SQLite databases.
        pub mod data {
            /// Version 1.
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/tdx.volt_api.data.v1.rs"));
            }
        }
        /// `tdx.volt_api.relay.v1`: relays and proxies.
        pub mod relay {
            /// Version 1.
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/tdx.volt_api.relay.v1.rs"));
            }
        }
        /// `tdx.volt_api.proto_db_sync.v1`: database sync messages.
        pub mod proto_db_sync {
            /// Version 1.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/tdx.volt_api.proto_db_sync.v1.rs"
                ));
            }
        }
    }
}

pub use tdx::volt_api::data::v1 as data;
pub use tdx::volt_api::relay::v1 as relay;
pub use tdx::volt_api::volt::v1 as volt;

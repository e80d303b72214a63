//! Shared by the services' unit tests: a `Services` in a fresh temporary directory (removed on
//! drop), the test caller, and protobuf send/receive over a call's channels.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::resources::new_id;
use super::Services;
use crate::call::{Caller, InboundSender, OutboundReceiver};
use crate::identity::VoltIdentity;

pub struct TestServices {
    pub svc: Arc<Services>,
    pub dir: PathBuf,
}

impl TestServices {
    pub fn new(tag: &str) -> TestServices {
        let dir = std::env::temp_dir().join(format!("volt-{tag}-test-{}", new_id()));
        let identity = VoltIdentity::load_or_create(&dir).unwrap();
        let svc = Arc::new(Services::open(identity).unwrap());
        // The test caller owns the Volt, as the default client does.
        svc.access()
            .claim_volt_owner_blocking(&caller().client_id)
            .unwrap();
        TestServices { svc, dir }
    }
}

impl Drop for TestServices {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn caller() -> Caller {
    Caller {
        client_id: "client-1".into(),
        session_id: "session-1".into(),
    }
}

pub async fn send<M: Message>(tx: &InboundSender, message: &M) {
    tx.send(Bytes::from(message.encode_to_vec())).await.unwrap();
}

pub async fn recv<M: Message + Default>(rx: &mut OutboundReceiver) -> Option<M> {
    rx.recv().await.map(|b| M::decode(b.as_ref()).unwrap())
}

//! The call table's unit tests: the older protocol's first frame and its token.
use std::sync::atomic::AtomicBool;

use super::*;
use crate::protocol::legacy::{self, ClientFrame, LegacyKey};
use crate::protocol::token::{unix_now, IdentityToken, TokenSigner, Validation};
use crate::transport::delivery::{self, Unread};
use crate::transport::websocket::{FirstFrame, Target};
use crate::PrivateKey;

pub(in crate::transport::websocket) fn legacy_settings() -> (Arc<Settings>, PrivateKey) {
    let volt = PrivateKey::generate_rsa(2048).expect("volt key");
    let settings = Settings {
        protocol: Protocol::Legacy { hops: Vec::new() },
        target: Target {
            url: "ws://127.0.0.1:1/api".into(),
            tls: None,
            connect_timeout: std::time::Duration::from_secs(1),
            max_inbound: 1 << 20,
        },
        signer: TokenSigner::new(
            Arc::new(PrivateKey::generate_rsa(2048).expect("client key")),
            "did:volt:test",
            None,
        ),
        volt_key: volt.public_key(),
        meta: serde_json::Map::new(),
        keepalive: std::time::Duration::from_secs(30),
        max_outbound: 1 << 20,
        call_buffer: 16,
        supervisor: Arc::new(crate::transport::Supervisor::new(Default::default(), true)),
        spare: Default::default(),
    };
    (Arc::new(settings), volt)
}

/// Opens call 1 without its request, as signed at `signed`; returns the token signed at
/// open and what the call's handle keeps to renew it.
fn open_legacy(table: &mut Table, settings: &Settings, signed: Instant) -> (String, FirstFrame) {
    let key = Arc::new(LegacyKey::generate());
    let token = super::super::legacy::token(settings, &key).expect("token");
    let (delivery, _receivers) = delivery::channels(4, Unread::Bounded);
    let (phase, _) = watch::channel(Phase::Opening);
    table.on_command(Command::Open(Box::new(OpenCall {
        id: 1,
        path: Arc::from("/test.Fake/Echo"),
        opening: Opening::Legacy {
            token: token.clone(),
            key: key.clone(),
            signed,
        },
        first: None,
        end_after_first: false,
        exchange_timeout: std::time::Duration::from_secs(5),
        delivery,
        phase,
        service: None,
    })));
    let first = FirstFrame {
        key,
        signed,
        pending: AtomicBool::new(true),
    };
    (token, first)
}

fn sent_token(table: &mut Table) -> Option<String> {
    let Some(Message::Text(text)) = table.outbox.pop_front() else {
        panic!("no text frame sent");
    };
    ClientFrame::parse(&text).expect("frame").token
}

fn send(table: &mut Table, token: Option<String>) {
    table.on_command(Command::Send {
        id: 1,
        json: "{}".into(),
        token,
    });
}

#[tokio::test]
async fn a_first_frame_long_after_the_open_carries_a_fresh_token() {
    let (settings, _volt) = legacy_settings();
    let mut table = Table::new(settings.clone());
    // Opened just now: the token signed at open goes out as it is, once.
    let (fresh, first) = open_legacy(&mut table, &settings, Instant::now());
    assert!(
        table.outbox.is_empty(),
        "nothing is sent before the first message"
    );
    let renewed = first.renewed_token(&settings).expect("signs");
    assert_eq!(renewed, None, "a fresh token is not signed again");
    send(&mut table, renewed);
    assert_eq!(sent_token(&mut table), Some(fresh));
    send(&mut table, first.renewed_token(&settings).expect("signs"));
    assert_eq!(sent_token(&mut table), None);

    // Opened 45 s before its first message: signed again (by the caller, away from the
    // connection task), with a current window.
    let mut table = Table::new(settings.clone());
    let long_ago = Instant::now()
        .checked_sub(std::time::Duration::from_secs(45))
        .expect("an instant 45 s back");
    let (stale, first) = open_legacy(&mut table, &settings, long_ago);
    send(&mut table, first.renewed_token(&settings).expect("signs"));
    let resigned = sent_token(&mut table).expect("a token");
    assert_ne!(resigned, stale);
    let claims = IdentityToken::parse(&resigned)
        .expect("jwt")
        .verify(
            &settings.signer.key().public_key(),
            &Validation::new("did:volt:test", unix_now()),
        )
        .expect("verifies");
    assert!(claims.extra.contains_key(legacy::KEY_CLAIM));
}

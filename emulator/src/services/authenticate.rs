//! VoltAPI/Authenticate: how a client without a session (or wanting a certificate) gets one.
//!
//! The emulator grants every request (decision PERMIT) unless started with another
//! [`AuthenticatePolicy`] (deny everything, or answer PENDING a number of times first): it is
//! a development Volt with no administrator to ask. What it issues is bound to the client's key — tokens for the new
//! session must be signed by that key, and the certificate is only usable with it — so
//! granting does not let anyone act as someone else.
//!
//! - `public_key`: a session for that key, no DID.
//! - `did_public_key`: as above, plus a new identity DID made by the Volt.
//! - `did`: a DID this Volt already knows; the session uses the key recorded for it.
//! - `did_document` + `did_document_signature`: the client's own DID; the signature (base64,
//!   by the document's key over the document text) must verify.
//!
//! `challenge`, `exchange_token` and verifiable presentations are accepted and not checked.
//! Every grant returns a session id, a client certificate for the key signed by the Volt CA
//! (SAN = `host`), the CA as `chain`, and the identity DID.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;
use tdx_volt::proto::volt::PolicyDecision;
use tdx_volt::proto::volt::{self as pb, authenticate_request::ClientIdentifier};
use tdx_volt::PublicKey;

use crate::call::{Failure, Inbound, Outbound};
use crate::clients::Session;

use super::resources::new_id;
use super::{unary, AuthenticatePolicy, Services};

/// Answers one Authenticate call.
pub async fn handle(
    svc: &Arc<Services>,
    inbound: Inbound,
    outbound: &Outbound,
) -> Result<(), Failure> {
    unary(
        inbound,
        outbound,
        |request: pb::AuthenticateRequest| async move { authenticate(svc, request).await },
    )
    .await
}

async fn authenticate(
    svc: &Services,
    request: pb::AuthenticateRequest,
) -> Result<pb::AuthenticateResponse, Failure> {
    let (key_pem, identity_did) = match request.client_identifier {
        Some(ClientIdentifier::PublicKey(pem)) => (pem, String::new()),
        Some(ClientIdentifier::DidPublicKey(pem)) => {
            (pem, format!("did:volt:{}", new_id().replace('-', "")))
        }
        Some(ClientIdentifier::Did(did)) => {
            let known = svc
                .clients()
                .by_identity_did(&did)
                .ok_or_else(|| Failure::not_found(format!("unknown identity DID: {did}")))?;
            (known.public_key_pem, did)
        }
        Some(ClientIdentifier::DidDocument(document)) => {
            own_did(&document, &request.did_document_signature)?
        }
        None => {
            return Err(Failure::invalid(
                "Authenticate needs public_key, did_public_key, did or did_document",
            ))
        }
    };
    let key = PublicKey::from_pem(&key_pem)
        .map_err(|e| Failure::invalid(format!("client public key: {e}")))?;
    let key_pem = key
        .to_spki_pem()
        .map_err(|e| Failure::internal("client public key", e))?;
    let undecided = |decision: PolicyDecision| pb::AuthenticateResponse {
        decision: decision as i32,
        request_time: svc.now(),
        ..Default::default()
    };
    match svc.authenticate_policy() {
        AuthenticatePolicy::Deny => return Ok(undecided(PolicyDecision::Deny)),
        AuthenticatePolicy::PendingThenPermit(n)
            if svc.count_authenticate_request(&key_pem) <= n =>
        {
            return Ok(undecided(PolicyDecision::Pending))
        }
        _ => {}
    }
    let client_name = if request.client_name.is_empty() {
        "client".to_owned()
    } else {
        request.client_name.clone()
    };
    let (cert_pem, cert_der) = svc
        .identity()
        .issue_client_certificate(&key, &client_name, &request.host)
        .map_err(|e| Failure::internal("issuing the client certificate", e))?;

    // A key this Volt has seen keeps its client id and home folder.
    let (client_id, home_id) = match svc.clients().by_public_key(&key) {
        Some(s) => (s.client_id, s.home_id),
        None => {
            let client_id = new_id();
            let home_id = svc
                .resources()
                .create_home_folder(&client_id, &client_name)
                .await?;
            (client_id, home_id)
        }
    };
    let session_id = new_id();
    svc.clients()
        .insert(Session {
            session_id: session_id.clone(),
            client_id,
            client_name,
            public_key_pem: key_pem,
            home_id,
            identity_did: identity_did.clone(),
            cert_pem: cert_pem.clone(),
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(&cert_der),
            revoked: false,
        })
        .map_err(|e| Failure::internal("saving the session", e))?;
    let now = svc.now();
    Ok(pb::AuthenticateResponse {
        status: None,
        session_id,
        identity_did,
        cert: cert_pem,
        chain: svc.identity().ca_pem().to_owned(),
        decision: PolicyDecision::Permit as i32,
        request_time: now,
        decision_time: now,
        credential: Vec::new(),
    })
}

/// The key an Authenticate request speaks for: the presented key, the key recorded for a
/// known DID, or the key of a self-managed DID document (whose signature is checked). Used to
/// verify the token of a caller that has no session yet.
pub fn request_key(
    svc: &Services,
    request: &pb::AuthenticateRequest,
) -> Result<PublicKey, Failure> {
    let pem = match &request.client_identifier {
        Some(ClientIdentifier::PublicKey(pem)) | Some(ClientIdentifier::DidPublicKey(pem)) => {
            pem.clone()
        }
        Some(ClientIdentifier::Did(did)) => {
            svc.clients()
                .by_identity_did(did)
                .ok_or_else(|| Failure::not_found(format!("unknown identity DID: {did}")))?
                .public_key_pem
        }
        Some(ClientIdentifier::DidDocument(document)) => {
            own_did(document, &request.did_document_signature)?.0
        }
        None => {
            return Err(Failure::invalid(
                "Authenticate needs public_key, did_public_key, did or did_document",
            ))
        }
    };
    PublicKey::from_pem(&pem).map_err(|e| Failure::invalid(format!("client public key: {e}")))
}

/// Checks a self-managed DID document: its first verification method's `publicKeyPem` must
/// verify `signature` (base64) over the document text. Returns the key PEM and the DID.
fn own_did(document: &str, signature_b64: &str) -> Result<(String, String), Failure> {
    let doc: Value = serde_json::from_str(document)
        .map_err(|e| Failure::invalid(format!("did_document is not JSON: {e}")))?;
    let did = doc
        .get("id")
        .and_then(Value::as_str)
        .filter(|d| d.starts_with("did:"))
        .ok_or_else(|| Failure::invalid("did_document has no DID id"))?;
    let key_pem = doc
        .get("verificationMethod")
        .and_then(Value::as_array)
        .and_then(|methods| methods.first())
        .and_then(|m| m.get("publicKeyPem"))
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::invalid("did_document has no verificationMethod publicKeyPem"))?;
    let key = PublicKey::from_pem(key_pem)
        .map_err(|e| Failure::invalid(format!("did_document key: {e}")))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| Failure::invalid("did_document_signature is not base64"))?;
    key.verify(document.as_bytes(), &signature)
        .map_err(|_| Failure::denied("did_document_signature does not verify"))?;
    Ok((key_pem.to_owned(), did.to_owned()))
}

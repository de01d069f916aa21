//! A software passkey authenticator: discoverable ES256 credentials with user
//! verification, speaking the same JSON as the browser's `PublicKeyCredential.toJSON()`.
//!
//! Written here rather than taken from webauthn-authenticator-rs because its
//! `SoftPasskey` (0.6) supports neither resident (discoverable) credentials nor user
//! handles, which usernameless sign-in needs. Being a test tool, it can also do what a
//! browser never would: claim a foreign origin, hash a wrong rp id, or skip user
//! verification — each to prove the server refuses it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_cbor_2::Value as Cbor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;

#[derive(Clone)]
struct Credential {
    id: Vec<u8>,
    rp_id: String,
    user_handle: Vec<u8>,
    key: PKey<Private>,
    counter: u32,
}

/// One authenticator (think: one phone) holding any number of credentials.
#[derive(Clone)]
pub struct SoftPasskey {
    origin: String,
    creds: Vec<Credential>,
    /// Whether it performs (and reports) user verification.
    pub verifies_user: bool,
    /// Test knobs: pretend to be at another origin / hash another rp id.
    pub claimed_origin: Option<String>,
    pub claimed_rp_id: Option<String>,
    /// Test knob: the id the next created credential gets (a "squatter" reusing someone
    /// else's credential id with its own key). Used once, then cleared.
    pub next_credential_id: Option<Vec<u8>>,
}

impl SoftPasskey {
    /// A user-verifying authenticator used from pages at `origin`.
    pub fn new(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            creds: Vec::new(),
            verifies_user: true,
            claimed_origin: None,
            claimed_rp_id: None,
            next_credential_id: None,
        }
    }

    pub fn credential_count(&self) -> usize {
        self.creds.len()
    }

    /// The raw ids of the credentials this authenticator holds, oldest first.
    pub fn credential_ids(&self) -> Vec<Vec<u8>> {
        self.creds.iter().map(|c| c.id.clone()).collect()
    }

    /// `navigator.credentials.create()`: `options` is the server's `{"publicKey":{...}}`.
    pub fn create(&mut self, options: &Value) -> Result<Value, String> {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().ok_or("no rp.id")?.to_owned();
        let challenge = pk["challenge"].as_str().ok_or("no challenge")?;
        let user_handle = b64(pk["user"]["id"].as_str().ok_or("no user.id")?)?;
        if pk["authenticatorSelection"]["userVerification"] == "required" && !self.verifies_user {
            // A browser would fail here; we carry on so the server's check is exercised.
        }
        if let Some(excluded) = pk["excludeCredentials"].as_array() {
            for ex in excluded {
                let id = b64(ex["id"].as_str().unwrap_or_default())?;
                if self.creds.iter().any(|c| c.id == id && c.rp_id == rp_id) {
                    return Err(
                        "InvalidStateError: already registered on this authenticator".into(),
                    );
                }
            }
        }
        let algs: Vec<i64> = pk["pubKeyCredParams"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["alg"].as_i64()).collect())
            .unwrap_or_default();
        if !algs.contains(&-7) {
            return Err("NotSupportedError: ES256 not offered".into());
        }

        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| e.to_string())?;
        let ec = EcKey::generate(&group).map_err(|e| e.to_string())?;
        let (mut x, mut y) = (
            BigNum::new().map_err(|e| e.to_string())?,
            BigNum::new().map_err(|e| e.to_string())?,
        );
        let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
        ec.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .map_err(|e| e.to_string())?;
        let id = match self.next_credential_id.take() {
            Some(id) => id,
            None => {
                let mut id = vec![0u8; 32];
                openssl::rand::rand_bytes(&mut id).map_err(|e| e.to_string())?;
                id
            }
        };
        let cred = Credential {
            id: id.clone(),
            rp_id: rp_id.clone(),
            user_handle,
            key: PKey::from_ec_key(ec).map_err(|e| e.to_string())?,
            counter: 0,
        };

        let cose = cbor_map(vec![
            (Cbor::Integer(1), Cbor::Integer(2)),
            (Cbor::Integer(3), Cbor::Integer(-7)),
            (Cbor::Integer(-1), Cbor::Integer(1)),
            (
                Cbor::Integer(-2),
                Cbor::Bytes(x.to_vec_padded(32).map_err(|e| e.to_string())?),
            ),
            (
                Cbor::Integer(-3),
                Cbor::Bytes(y.to_vec_padded(32).map_err(|e| e.to_string())?),
            ),
        ]);
        let mut auth_data = self.auth_data_prefix(&rp_id, AT, cred.counter);
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID: none
        auth_data.extend_from_slice(&(id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend(serde_cbor_2::to_vec(&cose).map_err(|e| e.to_string())?);
        let attestation = cbor_map(vec![
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), cbor_map(vec![])),
            (
                Cbor::Text("authData".into()),
                Cbor::Bytes(auth_data.clone()),
            ),
        ]);
        let client_data = self.client_data("webauthn.create", challenge);
        self.creds.push(cred);
        Ok(json!({
            "id": enc(&id),
            "rawId": enc(&id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": enc(client_data.as_bytes()),
                "attestationObject": enc(&serde_cbor_2::to_vec(&attestation).map_err(|e| e.to_string())?),
                "authenticatorData": enc(&auth_data),
                "transports": ["internal"],
                "publicKeyAlgorithm": -7,
            }
        }))
    }

    /// `navigator.credentials.get()`: usernameless when `allowCredentials` is empty.
    pub fn get(&mut self, options: &Value) -> Result<Value, String> {
        let pk = &options["publicKey"];
        let rp_id = pk["rpId"].as_str().ok_or("no rpId")?.to_owned();
        let challenge = pk["challenge"].as_str().ok_or("no challenge")?.to_owned();
        let allowed: Vec<Vec<u8>> = pk["allowCredentials"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["id"].as_str().and_then(|s| b64(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let idx = self
            .creds
            .iter()
            .rposition(|c| c.rp_id == rp_id && (allowed.is_empty() || allowed.contains(&c.id)))
            .ok_or("NotAllowedError: no credential for this site")?;
        self.creds[idx].counter += 1;
        let cred = self.creds[idx].clone();
        let auth_data = self.auth_data_prefix(&rp_id, 0, cred.counter);
        let client_data = self.client_data("webauthn.get", &challenge);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(client_data.as_bytes()));
        let mut signer =
            Signer::new(MessageDigest::sha256(), &cred.key).map_err(|e| e.to_string())?;
        signer.update(&signed).map_err(|e| e.to_string())?;
        let signature = signer.sign_to_vec().map_err(|e| e.to_string())?;
        Ok(json!({
            "id": enc(&cred.id),
            "rawId": enc(&cred.id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": enc(client_data.as_bytes()),
                "authenticatorData": enc(&auth_data),
                "signature": enc(&signature),
                "userHandle": enc(&cred.user_handle),
            }
        }))
    }

    fn auth_data_prefix(&self, rp_id: &str, extra_flags: u8, counter: u32) -> Vec<u8> {
        let hashed = self.claimed_rp_id.as_deref().unwrap_or(rp_id);
        let mut flags = UP | BE | BS | extra_flags;
        if self.verifies_user {
            flags |= UV;
        }
        let mut out = Sha256::digest(hashed.as_bytes()).to_vec();
        out.push(flags);
        out.extend_from_slice(&counter.to_be_bytes());
        out
    }

    fn client_data(&self, kind: &str, challenge: &str) -> String {
        json!({
            "type": kind,
            "challenge": challenge,
            "origin": self.claimed_origin.as_deref().unwrap_or(&self.origin),
            "crossOrigin": false,
        })
        .to_string()
    }
}

fn cbor_map(entries: Vec<(Cbor, Cbor)>) -> Cbor {
    Cbor::Map(entries.into_iter().collect::<BTreeMap<_, _>>())
}

fn enc(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("bad base64url: {e}"))
}

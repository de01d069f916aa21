//! Sealing a person's OpenAI key into a compact JWE bound to its record.
//!
//! Format: protected header `{"alg":"A256GCMKW","enc":"A256GCM","kid":<master kid>,
//! "typ":"JWT", iv, tag}`; claims `{sub: user id, jti: key id, iat, key, org?,
//! project?}`. Opening checks the header strictly *before* any decryption (only our
//! algorithms, no `zip`, no `crit`, a `kid` the keyring holds) and the claims *after*
//! it: `sub`/`jti` must equal the ids of the record the JWE was read from, so a JWE
//! copied into another record does not open.
//!
//! The operator's key (a plan's fallback for people who stored none) is sealed the same
//! way, bound to [`OPERATOR_SUBJECT`] instead of a user id: a subject no user id can
//! spell, so a person's record never opens as the operator's, nor the other way round.

use std::fmt;

use josekit::jwe::{self, JweDecrypter, JweHeader};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::CoreError;
use crate::ids::{KeyId, UserId};
use crate::keyring::Keyring;
use crate::secret::OpenAiKey;
use crate::time::UnixTime;

const ALG: &str = "A256GCMKW";
const ENC: &str = "A256GCM";
/// Header parameters we write or that A256GCMKW itself needs; anything else is refused.
const ALLOWED_HEADER: [&str; 6] = ["alg", "enc", "kid", "typ", "iv", "tag"];

/// What a vault record is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub user_id: UserId,
    pub key_id: KeyId,
}

/// The `sub` of the operator's key: 16 characters, but with a `:` that no user id
/// (lowercase base32 only) can hold.
pub const OPERATOR_SUBJECT: &str = "keygate:operator";

/// What the operator's key record is bound to: [`OPERATOR_SUBJECT`] and its key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorBinding {
    pub key_id: KeyId,
}

/// Whose record a JWE is sealed for: its `sub` and `jti` claims, checked on open.
pub trait Bound {
    fn subject(&self) -> &str;
    fn key_id(&self) -> &KeyId;
}

impl Bound for Binding {
    fn subject(&self) -> &str {
        self.user_id.as_str()
    }
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}

impl Bound for OperatorBinding {
    fn subject(&self) -> &str {
        OPERATOR_SUBJECT
    }
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}

/// A sealed key as stored: the compact JWE plus the `kid` read from its header.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    compact: String,
    kid: String,
}

/// An opened vault record.
#[derive(Debug)]
pub struct UnsealedKey {
    pub key: OpenAiKey,
    pub org: Option<String>,
    pub project: Option<String>,
    pub issued_at: UnixTime,
}

#[derive(Serialize)]
struct ClaimsOut<'a> {
    sub: &'a str,
    jti: &'a str,
    iat: UnixTime,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    org: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<&'a str>,
}

#[derive(Deserialize)]
struct ClaimsIn {
    sub: String,
    jti: String,
    iat: UnixTime,
    key: Zeroizing<String>,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    project: Option<String>,
}

/// Seals `key` for `binding` under the keyring's active master key.
pub fn seal(
    keyring: &Keyring,
    binding: &impl Bound,
    key: &OpenAiKey,
    org: Option<&str>,
    project: Option<&str>,
    now: UnixTime,
) -> Result<SealedKey, CoreError> {
    let (kid, encrypter) = keyring.active_encrypter()?;
    let claims = ClaimsOut {
        sub: binding.subject(),
        jti: binding.key_id().as_str(),
        iat: now,
        key: key.expose_secret(),
        org,
        project,
    };
    let payload =
        Zeroizing::new(serde_json::to_vec(&claims).map_err(|e| CoreError::Seal(e.to_string()))?);
    let mut header = JweHeader::new();
    header.set_content_encryption(ENC);
    header.set_key_id(kid);
    header.set_token_type("JWT");
    let compact = jwe::serialize_compact(&payload, &header, encrypter)
        .map_err(|e| CoreError::Seal(e.to_string()))?;
    Ok(SealedKey {
        compact,
        kid: kid.to_owned(),
    })
}

/// Opens a sealed key read from the record identified by `binding`.
pub fn open(
    keyring: &Keyring,
    sealed: &SealedKey,
    binding: &impl Bound,
) -> Result<UnsealedKey, CoreError> {
    check_lengths(&sealed.compact)?;
    let selector = |header: &JweHeader| -> Result<Option<&dyn JweDecrypter>, josekit::JoseError> {
        match check_header(keyring, header) {
            Ok(d) => Ok(Some(d)),
            // The selector cannot carry our error type; `None` makes josekit fail, and
            // `check_header` is called again below to say why.
            Err(_) => Ok(None),
        }
    };
    let (payload, header) = match jwe::deserialize_compact_with_selector(&sealed.compact, selector)
    {
        Ok(v) => v,
        Err(_) => {
            let header = peek_header(&sealed.compact)?;
            check_header(keyring, &header)?;
            return Err(CoreError::Unseal(
                "decryption failed (tampered or wrong key)",
            ));
        }
    };
    let payload = Zeroizing::new(payload);
    if header.key_id() != Some(sealed.kid.as_str()) {
        return Err(CoreError::Unseal("kid changed"));
    }
    let claims: ClaimsIn =
        serde_json::from_slice(&payload).map_err(|_| CoreError::Unseal("claims are not valid"))?;
    if claims.sub != binding.subject() || claims.jti != binding.key_id().as_str() {
        return Err(CoreError::Unseal("sealed for another record"));
    }
    let key = OpenAiKey::parse(&claims.key).map_err(|_| CoreError::Unseal("key is not valid"))?;
    Ok(UnsealedKey {
        key,
        org: claims.org,
        project: claims.project,
        issued_at: claims.iat,
    })
}

impl SealedKey {
    /// Reads a stored compact JWE, learning its `kid`. Does not decrypt.
    pub fn from_compact(compact: String) -> Result<Self, CoreError> {
        let header = peek_header(&compact)?;
        let kid = header
            .key_id()
            .ok_or(CoreError::Unseal("no kid in header"))?
            .to_owned();
        Ok(Self { compact, kid })
    }

    pub fn as_compact(&self) -> &str {
        &self.compact
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// True when this record should be re-sealed under the active master key.
    pub fn needs_reseal(&self, keyring: &Keyring) -> bool {
        self.kid != keyring.active_kid()
    }
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedKey(kid={})", self.kid)
    }
}

fn check_header<'k>(
    keyring: &'k Keyring,
    header: &JweHeader,
) -> Result<&'k dyn JweDecrypter, CoreError> {
    let claims = header.claims_set();
    if let Some(name) = claims
        .keys()
        .find(|k| !ALLOWED_HEADER.contains(&k.as_str()))
    {
        return Err(match name.as_str() {
            "zip" => CoreError::Unseal("compression (zip) is not allowed"),
            "crit" => CoreError::Unseal("critical header extensions are not supported"),
            _ => CoreError::Unseal("unexpected header parameter"),
        });
    }
    // The key wrap's iv and tag: like the content's, exactly what we write (a short
    // GCM tag would be checked only as far as it goes).
    for (name, len) in [("iv", IV_LEN), ("tag", TAG_LEN)] {
        let exact = header
            .claim(name)
            .and_then(|v| v.as_str())
            .is_some_and(|v| b64_len_is(v, len));
        if !exact {
            return Err(CoreError::Unseal(
                "the key wrap's iv or tag has the wrong length",
            ));
        }
    }
    if header.algorithm() != Some(ALG) {
        return Err(CoreError::Unseal("algorithm is not A256GCMKW"));
    }
    if header.content_encryption() != Some(ENC) {
        return Err(CoreError::Unseal("content encryption is not A256GCM"));
    }
    let kid = header
        .key_id()
        .ok_or(CoreError::Unseal("no kid in header"))?;
    keyring
        .decrypter(kid)
        .map(|d| d as &dyn JweDecrypter)
        .ok_or_else(|| CoreError::UnknownKid(kid.to_owned()))
}

/// AES-GCM's iv and tag, and the wrapped content key, in bytes.
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const CEK_LEN: usize = 32;

/// Every fixed-size part of the compact form has exactly its size: the wrapped key,
/// the content iv and the content tag. OpenSSL's GCM checks as many tag bytes as it
/// is handed, so a tag cut short would be verified only as far as it goes (and a
/// short tag can be forged by trying): refused here, before any decryption.
fn check_lengths(compact: &str) -> Result<(), CoreError> {
    let parts: Vec<&str> = compact.split('.').collect();
    let [_, wrapped, iv, _, tag] = parts.as_slice() else {
        return Err(CoreError::Unseal("not a compact JWE"));
    };
    // The wrapped key is the content key's size: AES-GCM key wrap adds no bytes.
    if !(b64_len_is(wrapped, CEK_LEN) && b64_len_is(iv, IV_LEN) && b64_len_is(tag, TAG_LEN)) {
        return Err(CoreError::Unseal("a part of the JWE has the wrong length"));
    }
    Ok(())
}

/// Whether unpadded base64url `s` is exactly the encoding length of `bytes` bytes.
fn b64_len_is(s: &str, bytes: usize) -> bool {
    s.len() == (bytes * 4).div_ceil(3)
}

fn peek_header(compact: &str) -> Result<JweHeader, CoreError> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if compact.split('.').count() != 5 {
        return Err(CoreError::Unseal("not a compact JWE"));
    }
    let b64 = compact.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| CoreError::Unseal("header is not base64url"))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| CoreError::Unseal("header is not JSON"))?;
    JweHeader::from_map(map).map_err(|_| CoreError::Unseal("header is not a JWE header"))
}

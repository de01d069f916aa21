//! The master keyring: 256-bit key-encryption keys, each named by a `kid`, one active.
//!
//! Text form (the `KEYGATE_MASTER_KEYS` value and the key file `keygate init` writes):
//! entries `kid:base64url(32 bytes)` separated by commas or newlines, `#` starts a
//! comment line, and the **first entry is the active key**. Keys never leave this
//! type except through [`Keyring::to_text`], which exists to write the key file.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use josekit::jwe::A256GCMKW;
use josekit::jwe::alg::aesgcmkw::{AesgcmkwJweDecrypter, AesgcmkwJweEncrypter};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::CoreError;

const KID_MAX_LEN: usize = 64;

/// One key-encryption key. Its `Debug` prints the `kid` only.
struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    encrypter: AesgcmkwJweEncrypter,
    decrypter: AesgcmkwJweDecrypter,
}

/// The set of master keys keygate can open records with; exactly one seals new ones.
pub struct Keyring {
    active: String,
    // Insertion order matters for `to_text` (active first), so keep it beside the map.
    order: Vec<String>,
    keys: BTreeMap<String, MasterKey>,
}

impl Keyring {
    /// A keyring holding one freshly generated key.
    pub fn generate() -> Result<Self, CoreError> {
        let mut ring = Self {
            active: String::new(),
            order: Vec::new(),
            keys: BTreeMap::new(),
        };
        ring.add_generated()?;
        Ok(ring)
    }

    /// Parses the text form. Every problem names the entry (by position and kid, never
    /// by key material).
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let mut order = Vec::new();
        let mut keys = BTreeMap::new();
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let position = format!("#{}", i + 1);
            let (kid, b64) = entry
                .split_once(':')
                .ok_or_else(|| CoreError::InvalidMasterKey {
                    entry: position.clone(),
                    reason: "expected kid:base64url-key".into(),
                })?;
            let kid = kid.trim();
            validate_kid(kid).map_err(|reason| CoreError::InvalidMasterKey {
                entry: position.clone(),
                reason: reason.into(),
            })?;
            let raw = decode_key(b64.trim()).map_err(|reason| CoreError::InvalidMasterKey {
                entry: format!("{position} ({kid})"),
                reason: reason.into(),
            })?;
            if keys.contains_key(kid) {
                return Err(CoreError::DuplicateKid(kid.to_owned()));
            }
            keys.insert(kid.to_owned(), MasterKey::new(kid, raw)?);
            order.push(kid.to_owned());
        }
        let active = order.first().cloned().ok_or(CoreError::EmptyKeyring)?;
        Ok(Self {
            active,
            order,
            keys,
        })
    }

    /// The text form, active key first, with a header comment; for the key file only.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::from(
            "# keygate master keyring: keep this file secret and backed up.\n\
             # Without it the sealed OpenAI keys in the store cannot be opened.\n\
             # One kid:key per line; the first line is the active key.\n",
        ));
        for kid in &self.order {
            if let Some(k) = self.keys.get(kid) {
                out.push_str(kid);
                out.push(':');
                out.push_str(&Zeroizing::new(URL_SAFE_NO_PAD.encode(k.key.as_slice())));
                out.push('\n');
            }
        }
        out
    }

    /// Generates a new key and makes it the active one; older keys stay for opening.
    pub fn add_generated(&mut self) -> Result<&str, CoreError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(raw.as_mut_slice());
        let mut suffix = [0u8; 5];
        rand::rng().fill_bytes(&mut suffix);
        let kid = format!("mk-{}", base32_lower(&suffix));
        let key = MasterKey::new(&kid, raw)?;
        self.keys.insert(kid.clone(), key);
        self.order.insert(0, kid.clone());
        self.active = kid;
        Ok(&self.active)
    }

    /// Removes a key that is not the active one (it can no longer open anything sealed
    /// under it); returns whether it was there. The active key is never removed.
    pub fn remove(&mut self, kid: &str) -> bool {
        if kid == self.active {
            return false;
        }
        self.order.retain(|k| k != kid);
        self.keys.remove(kid).is_some()
    }

    /// A copy to change (a rotation builds the next keyring beside the one in use).
    pub fn duplicate(&self) -> Result<Self, CoreError> {
        Self::parse(&self.to_text())
    }

    pub fn active_kid(&self) -> &str {
        &self.active
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub(crate) fn active_encrypter(&self) -> Result<(&str, &AesgcmkwJweEncrypter), CoreError> {
        self.keys
            .get(&self.active)
            .map(|k| (self.active.as_str(), &k.encrypter))
            .ok_or(CoreError::EmptyKeyring)
    }

    pub(crate) fn decrypter(&self, kid: &str) -> Option<&AesgcmkwJweDecrypter> {
        self.keys.get(kid).map(|k| &k.decrypter)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("kids", &self.order)
            .finish()
    }
}

impl MasterKey {
    fn new(kid: &str, key: Zeroizing<[u8; 32]>) -> Result<Self, CoreError> {
        let mut encrypter = A256GCMKW
            .encrypter_from_bytes(key.as_slice())
            .map_err(|e| CoreError::Seal(e.to_string()))?;
        encrypter.set_key_id(kid);
        let mut decrypter = A256GCMKW
            .decrypter_from_bytes(key.as_slice())
            .map_err(|e| CoreError::Seal(e.to_string()))?;
        decrypter.set_key_id(kid);
        Ok(Self {
            key,
            encrypter,
            decrypter,
        })
    }
}

fn validate_kid(kid: &str) -> Result<(), &'static str> {
    if kid.is_empty() || kid.len() > KID_MAX_LEN {
        return Err("kid must be 1 to 64 characters");
    }
    if !kid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err("kid may contain only letters, digits, '-', '.' and '_'");
    }
    Ok(())
}

fn decode_key(b64: &str) -> Result<Zeroizing<[u8; 32]>, &'static str> {
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(b64)
            .or_else(|_| STANDARD.decode(b64))
            .map_err(|_| "key is not valid base64")?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err("key must be exactly 32 bytes (256 bits)");
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ring_round_trips_through_text() {
        let ring = Keyring::generate().unwrap();
        let text = ring.to_text();
        let again = Keyring::parse(&text).unwrap();
        assert_eq!(again.active_kid(), ring.active_kid());
        assert_eq!(again.kids().count(), 1);
    }

    #[test]
    fn first_entry_is_active_and_commas_or_lines_separate() {
        let a = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let b = STANDARD.encode([2u8; 32]);
        let ring = Keyring::parse(&format!("# c\nk2:{a}, k1:{b}\n")).unwrap();
        assert_eq!(ring.active_kid(), "k2");
        assert_eq!(ring.kids().collect::<Vec<_>>(), ["k2", "k1"]);
    }

    #[test]
    fn rotation_keeps_old_keys() {
        let mut ring = Keyring::generate().unwrap();
        let old = ring.active_kid().to_owned();
        let new = ring.add_generated().unwrap().to_owned();
        assert_ne!(old, new);
        assert_eq!(ring.active_kid(), new);
        assert!(ring.contains(&old));
        let again = Keyring::parse(&ring.to_text()).unwrap();
        assert_eq!(again.active_kid(), new);
    }

    #[test]
    fn only_an_inactive_key_is_removed() {
        let mut ring = Keyring::generate().unwrap();
        let old = ring.active_kid().to_owned();
        let new = ring.add_generated().unwrap().to_owned();
        let mut copy = ring.duplicate().unwrap();
        assert!(!copy.remove(&new));
        assert!(copy.remove(&old));
        assert!(!copy.remove(&old));
        assert_eq!(copy.kids().collect::<Vec<_>>(), [new.as_str()]);
        assert!(ring.contains(&old), "the original is untouched");
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_key_material() {
        let short = URL_SAFE_NO_PAD.encode([7u8; 16]);
        let cases = [
            String::new(),
            "# only a comment".into(),
            "nokey".into(),
            format!("k1:{short}"),
            "k1:not base64!!".into(),
            format!("bad kid:{}", URL_SAFE_NO_PAD.encode([1u8; 32])),
            format!(
                "k1:{},k1:{}",
                URL_SAFE_NO_PAD.encode([1u8; 32]),
                URL_SAFE_NO_PAD.encode([2u8; 32])
            ),
        ];
        for case in cases {
            let err = Keyring::parse(&case).unwrap_err().to_string();
            assert!(!err.contains(&short), "{err}");
        }
    }

    #[test]
    fn debug_prints_kids_only() {
        let ring = Keyring::generate().unwrap();
        let text = ring.to_text();
        let key_b64 = text.lines().last().unwrap().split_once(':').unwrap().1;
        let dbg = format!("{ring:?}");
        assert!(dbg.contains(ring.active_kid()));
        assert!(!dbg.contains(key_b64));
    }
}

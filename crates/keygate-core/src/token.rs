//! Grant tokens: `kg_` + grant id + `_` + 43 base62 characters of secret (≥ 256 bits)
//! + a 6-character base62 CRC-32 of everything before it.
//!
//! Admin keys ([`admin`]) have the same shape behind `kga_`, minted and checked by the
//! same code.
//!
//! The checksum lets the proxy (and secret scanners) reject a mistyped or truncated
//! token without touching the store. Only the SHA-256 of the secret part is stored;
//! [`SecretHash::ct_eq`] compares in constant time.

use std::fmt;

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::{AdminKeyId, GrantId, ID_LEN};

pub const PREFIX: &str = "kg_";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 43 × log2(62) ≈ 256.03 bits.
pub const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// Total length of a token.
pub const TOKEN_LEN: usize = token_len(PREFIX);

/// Why a presented token was refused before any lookup. Never carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the key does not start with kg_ (kga_ for an admin key)")]
    WrongPrefix,
    #[error("the key has the wrong length")]
    WrongLength,
    #[error("the key contains characters a keygate key never has")]
    BadCharacters,
    #[error("the key's checksum does not match (mistyped or truncated?)")]
    BadChecksum,
}

/// SHA-256 of a grant secret: the only form in which a secret is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

/// A freshly minted token: shown to its holder once, then only its hash is kept.
pub struct IssuedToken {
    pub grant_id: GrantId,
    pub token: SecretString,
    pub hash: SecretHash,
}

/// A presented token that passed the format and checksum checks.
#[derive(Debug)]
pub struct ParsedToken {
    pub grant_id: GrantId,
    pub hash: SecretHash,
}

/// Mints a new token for `grant_id`.
pub fn issue(grant_id: &GrantId) -> IssuedToken {
    let (token, hash) = mint(PREFIX, grant_id.as_str());
    IssuedToken {
        grant_id: grant_id.clone(),
        token,
        hash,
    }
}

/// Checks a presented token's shape and checksum and hashes its secret.
pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
    let (id, hash) = split(PREFIX, token)?;
    let grant_id = GrantId::parse(id).map_err(|_| TokenError::BadCharacters)?;
    Ok(ParsedToken { grant_id, hash })
}

/// `prefix` + `id` + `_` + a fresh secret + checksum, and the secret's hash.
fn mint(prefix: &str, id: &str) -> (SecretString, SecretHash) {
    let mut rng = rand::rng();
    let secret: String = (0..SECRET_LEN)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect();
    let hash = SecretHash::of(&secret);
    let len = token_len(prefix);
    let mut token = String::with_capacity(len);
    token.push_str(prefix);
    token.push_str(id);
    token.push('_');
    token.push_str(&secret);
    let sum = checksum(&token);
    token.push_str(&sum);
    (SecretString::from(token), hash)
}

const fn token_len(prefix: &str) -> usize {
    prefix.len() + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
}

/// Checks shape and checksum; returns the id part (not yet parsed) and the secret's hash.
fn split<'t>(prefix: &str, token: &'t str) -> Result<(&'t str, SecretHash), TokenError> {
    let rest = token.strip_prefix(prefix).ok_or(TokenError::WrongPrefix)?;
    let len = token_len(prefix);
    if token.len() != len {
        return Err(TokenError::WrongLength);
    }
    let (id, rest) = rest
        .split_at_checked(ID_LEN)
        .ok_or(TokenError::WrongLength)?;
    let rest = rest.strip_prefix('_').ok_or(TokenError::BadCharacters)?;
    let (secret, sum) = rest
        .split_at_checked(SECRET_LEN)
        .ok_or(TokenError::WrongLength)?;
    if !secret
        .bytes()
        .chain(sum.bytes())
        .all(|b| b.is_ascii_alphanumeric())
    {
        return Err(TokenError::BadCharacters);
    }
    let body = token
        .get(..len - CHECKSUM_LEN)
        .ok_or(TokenError::WrongLength)?;
    if checksum(body) != sum {
        return Err(TokenError::BadChecksum);
    }
    Ok((id, SecretHash::of(secret)))
}

/// Admin keys: `kga_` + admin key id + `_` + secret + checksum, the grant token's
/// shape and code under another prefix (so neither kind can be mistaken for the other).
pub mod admin {
    use super::{AdminKeyId, SecretHash, SecretString, TokenError, mint, split, token_len};

    pub const PREFIX: &str = "kga_";
    /// Total length of an admin key.
    pub const TOKEN_LEN: usize = token_len(PREFIX);

    /// A fresh admin key: shown once, then only `hash` is kept.
    pub struct IssuedAdminKey {
        pub id: AdminKeyId,
        pub token: SecretString,
        pub hash: SecretHash,
    }

    /// A presented admin key that passed the format and checksum checks.
    #[derive(Debug)]
    pub struct ParsedAdminKey {
        pub id: AdminKeyId,
        pub hash: SecretHash,
    }

    pub fn issue(id: &AdminKeyId) -> IssuedAdminKey {
        let (token, hash) = mint(PREFIX, id.as_str());
        IssuedAdminKey {
            id: id.clone(),
            token,
            hash,
        }
    }

    pub fn parse(token: &str) -> Result<ParsedAdminKey, TokenError> {
        let (id, hash) = split(PREFIX, token)?;
        let id = AdminKeyId::parse(id).map_err(|_| TokenError::BadCharacters)?;
        Ok(ParsedAdminKey { id, hash })
    }

    impl std::fmt::Debug for IssuedAdminKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "IssuedAdminKey(id={})", self.id)
        }
    }

    impl IssuedAdminKey {
        pub fn expose_secret(&self) -> &str {
            secrecy::ExposeSecret::expose_secret(&self.token)
        }
    }
}

impl SecretHash {
    fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Constant-time equality: the comparison time does not depend on where they differ.
    pub fn ct_eq(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Lowercase hex, for storage.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedToken(grant={})", self.grant_id)
    }
}

impl IssuedToken {
    pub fn expose_secret(&self) -> &str {
        self.token.expose_secret()
    }
}

fn checksum(body: &str) -> String {
    let mut n = u64::from(crc32fast::hash(body.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn issued_tokens_parse_and_match_their_hash() {
        let id = GrantId::generate();
        let t = issue(&id);
        assert_eq!(t.expose_secret().len(), TOKEN_LEN);
        let p = parse(t.expose_secret()).unwrap();
        assert_eq!(p.grant_id, id);
        assert!(p.hash.ct_eq(&t.hash));
        assert!(!format!("{t:?}").contains(t.expose_secret()));
    }

    #[test]
    fn each_bad_shape_has_its_error() {
        let t = issue(&GrantId::generate());
        let good = t.expose_secret().to_owned();
        assert_eq!(parse("").unwrap_err(), TokenError::WrongPrefix);
        assert_eq!(parse("sk-abc").unwrap_err(), TokenError::WrongPrefix);
        assert_eq!(
            parse(&good[..good.len() - 1]).unwrap_err(),
            TokenError::WrongLength
        );
        assert_eq!(
            parse(&format!("{good}x")).unwrap_err(),
            TokenError::WrongLength
        );
        let mut underscore = good.clone().into_bytes();
        underscore[PREFIX.len() + ID_LEN] = b'-';
        assert_eq!(
            parse(std::str::from_utf8(&underscore).unwrap()).unwrap_err(),
            TokenError::BadCharacters
        );
        let mut flipped = good.clone().into_bytes();
        let i = PREFIX.len() + ID_LEN + 5;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            parse(std::str::from_utf8(&flipped).unwrap()).unwrap_err(),
            TokenError::BadChecksum
        );
        let non_ascii = format!("{}é", &good[..good.len() - 2]);
        assert!(parse(&non_ascii).is_err());
    }

    #[test]
    fn admin_keys_share_the_format_but_not_the_prefix() {
        let id = AdminKeyId::generate();
        let k = admin::issue(&id);
        assert_eq!(k.expose_secret().len(), admin::TOKEN_LEN);
        assert!(k.expose_secret().starts_with("kga_"));
        let p = admin::parse(k.expose_secret()).unwrap();
        assert_eq!(p.id, id);
        assert!(p.hash.ct_eq(&k.hash));
        assert!(!format!("{k:?}").contains(k.expose_secret()));
        // Neither kind parses as the other.
        assert_eq!(
            parse(k.expose_secret()).unwrap_err(),
            TokenError::WrongPrefix
        );
        let g = issue(&GrantId::generate());
        assert_eq!(
            admin::parse(g.expose_secret()).unwrap_err(),
            TokenError::WrongPrefix
        );
        let mut flipped = k.expose_secret().to_owned().into_bytes();
        let i = admin::PREFIX.len() + ID_LEN + 3;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            admin::parse(std::str::from_utf8(&flipped).unwrap()).unwrap_err(),
            TokenError::BadChecksum
        );
    }

    #[test]
    fn hash_hex_round_trips() {
        let t = issue(&GrantId::generate());
        let hex = t.hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(SecretHash::from_hex(&hex).unwrap().ct_eq(&t.hash));
        assert!(SecretHash::from_hex("zz").is_none());
    }

    proptest! {
        #[test]
        fn any_single_character_change_is_caught(pos in 0usize..TOKEN_LEN, c in proptest::char::range('!', '~')) {
            let t = issue(&GrantId::generate());
            let good = t.expose_secret();
            let mut bytes = good.as_bytes().to_vec();
            prop_assume!(bytes[pos] != c as u8);
            bytes[pos] = c as u8;
            let bad = String::from_utf8(bytes).unwrap();
            match parse(&bad) {
                Err(_) => {}
                // A change inside the grant id that is still a valid id and collides on
                // CRC-32 is astronomically unlikely; any success must at least differ.
                Ok(p) => prop_assert!(!p.hash.ct_eq(&t.hash) || p.grant_id != t.grant_id),
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,120}") {
            let _ = parse(&s);
        }
    }
}

//! Typed identifiers. Each is 16 characters of lowercase RFC 4648 base32 (80 random
//! bits): safe in URLs, file names, sled keys and inside a grant token, and never `_`.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::CoreError;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Length of every identifier, in characters.
pub const ID_LEN: usize = 16;

fn random_id() -> String {
    let mut bytes = [0u8; ID_LEN];
    rand::rng().fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect()
}

fn is_valid(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh random identifier.
            pub fn generate() -> Self {
                Self(random_id())
            }

            /// Parses an identifier, refusing anything that is not exactly its format.
            pub fn parse(s: &str) -> Result<Self, CoreError> {
                if is_valid(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(CoreError::InvalidId($what))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = CoreError;
            fn try_from(s: String) -> Result<Self, CoreError> {
                if is_valid(&s) { Ok(Self(s)) } else { Err(CoreError::InvalidId($what)) }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = CoreError;
            fn from_str(s: &str) -> Result<Self, CoreError> {
                Self::parse(s)
            }
        }
    };
}

id_type!(
    /// A person known to keygate.
    UserId,
    "user id"
);
id_type!(
    /// A grant: what an app holds instead of the person's OpenAI key.
    GrantId,
    "grant id"
);
id_type!(
    /// One sealed OpenAI key of a person (a new id each time the key is replaced).
    KeyId,
    "key id"
);

id_type!(
    /// An operator's admin key (`kga_` + this id + secret + checksum).
    AdminKeyId,
    "admin key id"
);

id_type!(
    /// One of a person's passkeys (keygate's id, not the WebAuthn credential id).
    PasskeyId,
    "passkey id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        for _ in 0..100 {
            let id = GrantId::generate();
            assert_eq!(GrantId::parse(id.as_str()).unwrap(), id);
            assert!(!id.as_str().contains('_'));
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in [
            "",
            "short",
            "ABCDEFGHIJKLMNOP",
            "abcdefghijklmno_",
            "abcdefghijklmnopq",
            "abcdefghijklmn01",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let id = UserId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<UserId>("\"../../etc/passwd\"").is_err());
    }
}

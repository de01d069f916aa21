//! Secret newtypes. None derives `Serialize` or `Debug`: the hand-written `Debug`
//! prints at most the last four characters, and the value is reachable only through
//! `expose_secret()` at the one place it is used.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::CoreError;

/// The longest OpenAI key we accept; real ones are ~50–200 characters.
const MAX_OPENAI_KEY_LEN: usize = 512;

/// A person's OpenAI API key.
pub struct OpenAiKey(SecretString);

impl OpenAiKey {
    /// Accepts what a person pastes: surrounding whitespace is trimmed; the rest must be
    /// printable ASCII without spaces (it ends up in an HTTP header).
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(CoreError::InvalidOpenAiKey("it is empty"));
        }
        if trimmed.len() > MAX_OPENAI_KEY_LEN {
            return Err(CoreError::InvalidOpenAiKey(
                "it is longer than 512 characters",
            ));
        }
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CoreError::InvalidOpenAiKey(
                "it may contain only printable ASCII characters without spaces",
            ));
        }
        Ok(Self(SecretString::from(trimmed.to_owned())))
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// An OpenAI admin key (`sk-admin-...`): it manages a whole organization (users,
    /// projects, keys) and is never needed to call models, so keygate refuses to hold one.
    pub fn is_admin_key(&self) -> bool {
        self.0.expose_secret().starts_with("sk-admin-")
    }

    /// The last four characters, shown to the person so they can recognise the key.
    pub fn last4(&self) -> String {
        let s = self.0.expose_secret();
        let start = s.len().saturating_sub(4);
        s.get(start..).unwrap_or_default().to_owned()
    }
}

impl fmt::Debug for OpenAiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenAiKey(…{})", self.last4())
    }
}

/// Lowercase hex SHA-256 of a random bearer secret (session id, connect code): the
/// only form in which such secrets are stored.
pub fn sha256_hex(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_last4() {
        let k = OpenAiKey::parse("  sk-proj-abcdefSECRET1234 \n").unwrap();
        assert_eq!(format!("{k:?}"), "OpenAiKey(…1234)");
        assert_eq!(k.expose_secret(), "sk-proj-abcdefSECRET1234");
    }

    #[test]
    fn refuses_unusable_keys() {
        assert!(OpenAiKey::parse("   ").is_err());
        assert!(OpenAiKey::parse("sk-with space").is_err());
        assert!(OpenAiKey::parse("sk-\u{e9}").is_err());
        assert!(OpenAiKey::parse(&"a".repeat(513)).is_err());
    }

    #[test]
    fn admin_keys_are_recognised() {
        assert!(
            OpenAiKey::parse(" sk-admin-abc123 ")
                .unwrap()
                .is_admin_key()
        );
        assert!(!OpenAiKey::parse("sk-proj-abc123").unwrap().is_admin_key());
        assert!(
            !OpenAiKey::parse("sk-abc-sk-admin-x")
                .unwrap()
                .is_admin_key()
        );
    }
}

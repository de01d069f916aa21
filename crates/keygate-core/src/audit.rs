//! The audit log's vocabulary: what happened ([`Action`], with its wire name) and who
//! did it ([`Actor`]). The store keeps entries, the server writes and reads them; the
//! names here are part of the wire and of the stored format and never change.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{AdminKeyId, UserId};

macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A security or admin action the audit log records.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Action {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl Action {
            /// Every action, in the order docs/API.md lists them.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The wire name (`grant.created`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }
        }
    };
}

actions! {
    /// A person registered with a passkey (which also signs them in).
    UserSignedUp => "user.signed_up",
    /// A person signed in with a passkey.
    UserSignedIn => "user.signed_in",
    /// An operator created a person (`POST /admin/users`).
    UserCreated => "user.created",
    PasskeyAdded => "passkey.added",
    PasskeyRemoved => "passkey.removed",
    /// An OpenAI key was stored where there was none.
    KeyStored => "key.stored",
    /// An OpenAI key replaced the one stored.
    KeyReplaced => "key.replaced",
    KeyDeleted => "key.deleted",
    GrantCreated => "grant.created",
    /// Name, models, scopes, limits, expiry or plan changed.
    GrantChanged => "grant.changed",
    /// A new secret was issued (a rotation, or an app's re-approval).
    GrantRotated => "grant.rotated",
    GrantDisabled => "grant.disabled",
    GrantEnabled => "grant.enabled",
    GrantRevoked => "grant.revoked",
    /// A revoked grant was cleared from the list.
    GrantRemoved => "grant.removed",
    ConnectApproved => "connect.approved",
    ConnectDenied => "connect.denied",
    AdminKeyCreated => "admin_key.created",
    AdminKeyRevoked => "admin_key.revoked",
    AccountDeleted => "account.deleted",
    OperatorKeySet => "operator_key.set",
    OperatorKeyDeleted => "operator_key.deleted",
    /// A new active master key was added (`POST /admin/master-keys`, or
    /// `keygate keys rotate` offline).
    MasterKeyRotated => "master_key.rotated",
    /// A master key no record uses any more was removed from the keyring.
    MasterKeyRetired => "master_key.retired",
    /// A backup of the store was taken (`GET /admin/backup`).
    StoreBackedUp => "store.backed_up",
}

impl Action {
    /// The action with this wire name, if there is one.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did it: the signed-in person, an operator's admin key (a stored `kga_` key by
/// its id, or the bootstrap `KEYGATE_ADMIN_KEY`), or keygate itself (the command
/// line, a background task).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    Person(UserId),
    AdminKey(AdminKeyId),
    /// The bootstrap admin key, which has no id of its own.
    Bootstrap,
    System,
}

impl Actor {
    /// The wire `actor.kind`: `person`, `admin_key` (the bootstrap key too) or `system`.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Person(_) => "person",
            Actor::AdminKey(_) | Actor::Bootstrap => "admin_key",
            Actor::System => "system",
        }
    }

    /// The wire `actor.id`: the person's or the admin key's id, `bootstrap`, or none.
    pub fn id(&self) -> Option<&str> {
        match self {
            Actor::Person(id) => Some(id.as_str()),
            Actor::AdminKey(id) => Some(id.as_str()),
            Actor::Bootstrap => Some("bootstrap"),
            Actor::System => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        assert_eq!(Action::ALL.len(), 25);
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(*a));
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::json!(a.as_str())
            );
            assert_eq!(
                Action::ALL
                    .iter()
                    .filter(|b| b.as_str() == a.as_str())
                    .count(),
                1
            );
        }
        assert_eq!(Action::parse("grant.created"), Some(Action::GrantCreated));
        assert_eq!(Action::parse("grant.create"), None);
        assert_eq!(Action::parse(""), None);
    }

    #[test]
    fn actors_on_the_wire() {
        let user = UserId::generate();
        let person = Actor::Person(user.clone());
        assert_eq!(
            (person.kind(), person.id()),
            ("person", Some(user.as_str()))
        );
        assert_eq!(Actor::Bootstrap.kind(), "admin_key");
        assert_eq!(Actor::Bootstrap.id(), Some("bootstrap"));
        assert_eq!((Actor::System.kind(), Actor::System.id()), ("system", None));
        // The stored form reads back.
        for a in [
            person,
            Actor::AdminKey(AdminKeyId::generate()),
            Actor::Bootstrap,
            Actor::System,
        ] {
            let v = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Actor>(&v).unwrap(), a);
        }
    }
}

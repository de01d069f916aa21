//! What an admin key may do. Scopes are ordered: each includes the ones before it.
//!
//! - `read`: only `GET` requests under `/admin`;
//! - `write`: also changes people and grants;
//! - `admin`: also creates, lists and revokes admin keys (the bootstrap
//!   `KEYGATE_ADMIN_KEY` is `admin`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminScope {
    Read,
    Write,
    Admin,
}

impl AdminScope {
    /// Whether a key of this scope covers `needed`.
    pub fn covers(self, needed: AdminScope) -> bool {
        self >= needed
    }

    /// The scope an `/admin` request needs: managing admin keys needs `admin`, any
    /// other read needs `read`, any other change `write`.
    pub fn needed_for(method_is_get: bool, path_is_admin_keys: bool) -> AdminScope {
        if path_is_admin_keys {
            AdminScope::Admin
        } else if method_is_get {
            AdminScope::Read
        } else {
            AdminScope::Write
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminScope::Read => "read",
            AdminScope::Write => "write",
            AdminScope::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AdminScope::{self, Admin, Read, Write};

    #[test]
    fn each_scope_covers_exactly_those_below_it() {
        let all = [Read, Write, Admin];
        for (i, have) in all.iter().enumerate() {
            for (j, need) in all.iter().enumerate() {
                assert_eq!(have.covers(*need), i >= j, "{have:?} covers {need:?}");
            }
        }
    }

    #[test]
    fn what_a_request_needs() {
        assert_eq!(AdminScope::needed_for(true, false), Read);
        assert_eq!(AdminScope::needed_for(false, false), Write);
        assert_eq!(AdminScope::needed_for(true, true), Admin);
        assert_eq!(AdminScope::needed_for(false, true), Admin);
    }

    #[test]
    fn wire_names() {
        for s in [Read, Write, Admin] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert!(serde_json::from_str::<AdminScope>("\"root\"").is_err());
    }
}

//! What an admin key may do. Scopes are ordered: each includes the ones before it.
//!
//! - `read`: only `GET` requests under `/admin`;
//! - `write`: also changes people and grants;
//! - `admin`: also creates, lists and revokes admin keys, and sets, shows and deletes
//!   the operator's OpenAI key, takes backups and rotates or retires master keys (the
//!   bootstrap `KEYGATE_ADMIN_KEY` is `admin`).

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

    /// The scope an `/admin` request needs: `/admin/keys` and `/admin/operator-key`
    /// (and anything under them) need `admin`, whatever the method; any other read
    /// needs `read`, any other change `write`. `path` is the path the router matched
    /// (percent-decoded), so no spelling of an admin-only path needs less.
    pub fn needed_for(method_is_get: bool, path: &str) -> AdminScope {
        if ADMIN_ONLY.iter().any(|p| is_at_or_under(path, p)) {
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

/// Paths only scope `admin` may use: admin keys (creating one is handing out access)
/// and the operator's OpenAI key (a credential that spends the operator's money).
const ADMIN_ONLY: [&str; 4] = [
    "/admin/keys",
    "/admin/operator-key",
    // The whole store (hashes, the audit log, sealed keys), and the master keyring.
    "/admin/backup",
    "/admin/master-keys",
];

fn is_at_or_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
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
        for (get, path, needed) in [
            (true, "/admin/users", Read),
            (true, "/admin/grants/abc/usage", Read),
            (false, "/admin/users", Write),
            (false, "/admin/grants/abc", Write),
            (true, "/admin/keys", Admin),
            (false, "/admin/keys", Admin),
            (false, "/admin/keys/abc", Admin),
            (true, "/admin/operator-key", Admin),
            (true, "/admin/backup", Admin),
            (true, "/admin/master-keys", Admin),
            (false, "/admin/master-keys/mk-abc", Admin),
            (false, "/admin/operator-key", Admin),
            (false, "/admin/operator-key/x", Admin),
            // Only whole segments: a path that merely starts with the same letters is not.
            (false, "/admin/keysx", Write),
            (true, "/admin/operator-keys", Read),
        ] {
            assert_eq!(AdminScope::needed_for(get, path), needed, "{get} {path}");
        }
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

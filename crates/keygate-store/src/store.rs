use std::path::Path;

use keygate_core::ids::{GrantId, UserId};
use keygate_core::time::UnixTime;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionResult};
use sled::{Transactional, Tree};

use crate::StoreError;
use crate::records::{
    GrantRecord, GrantState, StoredGrant, StoredUser, StoredVault, UserRecord, VaultRecord,
};

/// Tuning for the embedded store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache, in bytes. Small by default: records are tiny and the OS page
    /// cache sits underneath anyway.
    pub cache_capacity: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 16 * 1024 * 1024,
        }
    }
}

/// The open store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    pub(crate) db: sled::Db,
    pub(crate) users: Tree,
    pub(crate) vault: Tree,
    pub(crate) grants: Tree,
    pub(crate) grants_by_user: Tree,
    pub(crate) passkeys: Tree,
    pub(crate) passkeys_by_user: Tree,
    pub(crate) credential_ids: Tree,
    pub(crate) sessions: Tree,
    pub(crate) sessions_by_user: Tree,
    pub(crate) ceremonies: Tree,
    pub(crate) connect_codes: Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and runs pending migrations.
    /// sled allows one open per process and directory; a second one reports `Locked`.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked {
                        path: dir.display().to_string(),
                    }
                }
                sled::Error::Io(ref io) if io.to_string().contains("lock") => StoreError::Locked {
                    path: dir.display().to_string(),
                },
                other => StoreError::Sled(other),
            })?;
        keygate_migrations::run(&db)?;
        Ok(Self {
            users: db.open_tree("users")?,
            vault: db.open_tree("vault")?,
            grants: db.open_tree("grants")?,
            grants_by_user: db.open_tree("grants_by_user")?,
            passkeys: db.open_tree("passkeys")?,
            passkeys_by_user: db.open_tree("passkeys_by_user")?,
            credential_ids: db.open_tree("credential_ids")?,
            sessions: db.open_tree("sessions")?,
            sessions_by_user: db.open_tree("sessions_by_user")?,
            ceremonies: db.open_tree("ceremonies")?,
            connect_codes: db.open_tree("connect_codes")?,
            db,
        })
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(keygate_migrations::current_version(&self.db)?)
    }

    /// Makes every write so far durable. Security-relevant writes call this before
    /// answering.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A cheap read that proves the store answers (for `/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.schema_version().map(|_| ())
    }

    // --- users -------------------------------------------------------------------

    pub fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        put(&self.users, user.id.as_str(), &StoredUser::V1(user.clone()))
    }

    pub fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        Ok(get::<StoredUser>(&self.users, "users", id.as_str())?.map(Into::into))
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.users
            .iter()
            .values()
            .map(|v| Ok(decode::<StoredUser>("users", &v?)?.into()))
            .collect()
    }

    // --- vault -------------------------------------------------------------------

    /// Stores (or replaces) `user`'s sealed key. The record is filed under `user`, the
    /// id it will be looked up by (and bound to when opened), whatever its own fields say.
    pub fn put_vault(&self, user: &UserId, record: &VaultRecord) -> Result<(), StoreError> {
        put(&self.vault, user.as_str(), &StoredVault::V1(record.clone()))
    }

    pub fn vault(&self, user: &UserId) -> Result<Option<VaultRecord>, StoreError> {
        Ok(get::<StoredVault>(&self.vault, "vault", user.as_str())?.map(Into::into))
    }

    /// Compare-and-swap: replaces `user`'s record with `new` only if it is still
    /// exactly `old`. Returns whether it did.
    pub fn replace_vault(
        &self,
        user: &UserId,
        old: &VaultRecord,
        new: &VaultRecord,
    ) -> Result<bool, StoreError> {
        let enc = |r: &VaultRecord| {
            serde_json::to_vec(&StoredVault::V1(r.clone()))
                .map_err(|e| StoreError::Encode(e.to_string()))
        };
        let swapped =
            self.vault
                .compare_and_swap(user.as_str(), Some(enc(old)?), Some(enc(new)?))?;
        Ok(swapped.is_ok())
    }

    pub fn delete_vault(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.vault.remove(user.as_str())?.is_some())
    }

    /// Every vault record with the user id it is filed under (for the re-seal loop).
    pub fn vault_entries(&self) -> Result<Vec<(UserId, VaultRecord)>, StoreError> {
        self.vault
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                let user = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|k| UserId::parse(k).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        tree: "vault",
                        reason: "bad key".into(),
                    })?;
                Ok((user, decode::<StoredVault>("vault", &value)?.into()))
            })
            .collect()
    }

    // --- grants ------------------------------------------------------------------

    /// Stores a new grant and its per-user index entry in one transaction, and only
    /// while the person exists (a grant minted for a person deleted meanwhile would
    /// outlive them). `NotFound { what: "user" }` when they are gone.
    pub fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        let bytes = encode(&StoredGrant::V1(grant.clone()))?;
        let index = index_key(&grant.user_id, &grant.id);
        let result: TransactionResult<(), ()> = (&self.users, &self.grants, &self.grants_by_user)
            .transaction(|(users, grants, idx)| {
                if users.get(grant.user_id.as_str())?.is_none() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                grants.insert(grant.id.as_str(), bytes.clone())?;
                idx.insert(index.as_slice(), &[])?;
                Ok(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => Err(StoreError::NotFound { what: "user" }),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    pub fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>, StoreError> {
        Ok(get::<StoredGrant>(&self.grants, "grants", id.as_str())?.map(Into::into))
    }

    /// A person's grants, oldest first.
    pub fn grants_for_user(&self, user: &UserId) -> Result<Vec<GrantRecord>, StoreError> {
        let mut out = Vec::new();
        for id in index_ids(&self.grants_by_user, "grants_by_user", user, |s| {
            GrantId::parse(s).ok()
        })? {
            if let Some(grant) = self.grant(&id)? {
                out.push(grant);
            }
        }
        out.sort_by_key(|g| (g.created_at, g.id.clone()));
        Ok(out)
    }

    /// Atomically applies `change` to a grant; returns the updated record, or `None` if
    /// there is no such grant.
    pub fn update_grant(
        &self,
        id: &GrantId,
        change: impl Fn(&mut GrantRecord),
    ) -> Result<Option<GrantRecord>, StoreError> {
        let mut failure = None;
        let updated = self.grants.update_and_fetch(id.as_str(), |old| {
            let old = old?;
            let mut rec: GrantRecord = match decode::<StoredGrant>("grants", old) {
                Ok(r) => r.into(),
                Err(e) => {
                    failure = Some(e);
                    return Some(old.to_vec());
                }
            };
            change(&mut rec);
            match serde_json::to_vec(&StoredGrant::V1(rec)) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    failure = Some(StoreError::Encode(e.to_string()));
                    Some(old.to_vec())
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        updated
            .map(|v| Ok(decode::<StoredGrant>("grants", &v)?.into()))
            .transpose()
    }

    /// Marks a grant revoked. Returns the updated grant, `None` if unknown.
    pub fn revoke_grant(
        &self,
        id: &GrantId,
        now: UnixTime,
    ) -> Result<Option<GrantRecord>, StoreError> {
        self.update_grant(id, |g| {
            if g.state != GrantState::Revoked {
                g.state = GrantState::Revoked;
                g.revoked_at = Some(now);
            }
        })
    }

    /// Records `last_used_at` for a batch of grants (the proxy batches these).
    pub fn touch_grants(&self, used: &[(GrantId, UnixTime)]) -> Result<(), StoreError> {
        for (id, at) in used {
            self.update_grant(id, |g| {
                if g.last_used_at.is_none_or(|prev| prev < *at) {
                    g.last_used_at = Some(*at);
                }
            })?;
        }
        Ok(())
    }
}

fn index_key(user: &UserId, grant: &GrantId) -> Vec<u8> {
    pair_key(user.as_str(), grant.as_str())
}

/// The ids in a per-user index (`user id ‖ id → ()`), oldest key order.
pub(crate) fn index_ids<T>(
    index: &Tree,
    tree: &'static str,
    user: &UserId,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    index
        .scan_prefix(user.as_str())
        .keys()
        .map(|key| {
            let key = key?;
            key.get(user.as_str().len()..)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(&parse)
                .ok_or_else(|| StoreError::Corrupt {
                    tree,
                    reason: "bad index key".into(),
                })
        })
        .collect()
}

pub(crate) fn pair_key(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len());
    k.extend_from_slice(a.as_bytes());
    k.extend_from_slice(b.as_bytes());
    k
}

pub(crate) fn put<T: Serialize>(tree: &Tree, key: &str, value: &T) -> Result<(), StoreError> {
    tree.insert(key, encode(value)?)?;
    Ok(())
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))
}

pub(crate) fn get<T: DeserializeOwned>(
    tree: &Tree,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|v| decode(name, &v)).transpose()
}

pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

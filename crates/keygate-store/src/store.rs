use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keygate_core::ids::{AdminKeyId, GrantId, ID_LEN, UserId};
use keygate_core::time::UnixTime;
use keygate_migrations::trees;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionResult};

use crate::StoreError;
use crate::cache::RecordCache;
use crate::records::{
    AdminKeyRecord, AuditRecord, CeremonyRecord, CodeRecord, GrantRecord, GrantState,
    OperatorKeyRecord, PasskeyRecord, SessionRecord, UserRecord, VaultRecord,
};
use crate::table::{Gate, Index, Table, pair_key};

/// The one key of the operator key's tree.
pub(crate) const OPERATOR_KEY_KEY: &str = "operator";

/// Tuning for the store (most of it for the embedded one).
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache, in bytes. Small by default: records are tiny and the OS page
    /// cache sits underneath anyway.
    pub cache_capacity: u64,
    /// How many decoded grant records the grant cache keeps (0: none).
    pub grant_cache_entries: usize,
    /// How many sealed vault records the vault cache keeps (0: none).
    pub vault_cache_entries: usize,
    /// PostgreSQL only: how many connections the node's pool holds at most.
    pub pg_pool_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 16 * 1024 * 1024,
            grant_cache_entries: 4096,
            vault_cache_entries: 4096,
            pg_pool_size: 16,
        }
    }
}

/// Which grants a list shows (`GET /admin/grants`): every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub user: Option<UserId>,
    pub state: Option<GrantState>,
    /// The grant's bound origin, exactly (already normalised by the caller).
    pub origin: Option<String>,
}

impl GrantFilter {
    pub fn matches(&self, g: &GrantRecord) -> bool {
        self.user.as_ref().is_none_or(|u| *u == g.user_id)
            && self.state.is_none_or(|s| s == g.state)
            && self
                .origin
                .as_deref()
                .is_none_or(|o| g.origin.as_deref() == Some(o))
    }
}

/// The open store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct SledStore {
    pub(crate) db: sled::Db,
    pub(crate) users: Table<UserRecord>,
    /// Every function that writes this tree evicts what it wrote from `vault_cache`
    /// afterwards (`put_vault`, `replace_vault`, `delete_vault`, `delete_user`).
    pub(crate) vault: Table<VaultRecord>,
    pub(crate) vault_cache: Arc<RecordCache<UserId, VaultRecord>>,
    /// Every function that writes this tree evicts what it wrote from `grant_cache`
    /// afterwards (`update_grant`, `insert_grant`, `delete_grant`, `delete_user`).
    pub(crate) grants: Table<GrantRecord>,
    pub(crate) grant_cache: Arc<RecordCache<GrantId, GrantRecord>>,
    pub(crate) grants_by_user: Index,
    pub(crate) passkeys: Table<PasskeyRecord>,
    pub(crate) passkeys_by_user: Index,
    pub(crate) credential_ids: Index,
    pub(crate) sessions: Table<SessionRecord>,
    pub(crate) sessions_by_user: Index,
    pub(crate) ceremonies: Table<CeremonyRecord>,
    pub(crate) connect_codes: Table<CodeRecord>,
    /// Usage counters (see `usage.rs`): raw, not a [`Table`] (keys are composite, values
    /// are added to in transactions).
    pub(crate) usage: sled::Tree,
    pub(crate) admin_keys: Table<AdminKeyRecord>,
    /// `user id ‖ grant id → ()` for every grant ever stored: kept when the grant is
    /// removed, so usage rows (which outlive their grant) can be summed per person.
    pub(crate) grant_owners: Index,
    /// The audit log and its per-person copy (see `audit.rs`).
    pub(crate) audit: Table<AuditRecord>,
    pub(crate) audit_by_user: Table<AuditRecord>,
    pub(crate) operator_key: Table<OperatorKeyRecord>,
    /// Held by every write, frozen by a snapshot (`table.rs`, `backup.rs`).
    pub(crate) gate: Gate,
    /// Added to sled's id generator (`next_id`): a restored store starts above every id
    /// its backup had handed out (`backup.rs`), an imported one above every number it
    /// imported (`export.rs`, raised while open: numbers only ever grow).
    pub(crate) id_floor: Arc<AtomicU64>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SledStore")
    }
}

/// sled's database in `dir`; `Locked` when another process holds it.
fn open_db(dir: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_capacity)
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
        })
}

/// The sled migrations the store in `dir` has not applied yet, as (version, name),
/// without applying them (`keygate migrate --check`).
pub fn sled_pending_migrations(dir: &Path) -> Result<Vec<(u32, String)>, StoreError> {
    let db = open_db(dir, StoreOptions::default().cache_capacity)?;
    let at = keygate_migrations::current_version(&db)?;
    Ok(keygate_migrations::all()
        .iter()
        .filter(|m| m.version > at)
        .map(|m| (m.version, m.name.to_owned()))
        .collect())
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir` and runs pending migrations.
    /// sled allows one open per process and directory; a second one reports `Locked`.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let db = open_db(dir, options.cache_capacity)?;
        keygate_migrations::run(&db)?;
        let gate = Gate::default();
        let id_floor = crate::backup::id_floor(&db)?;
        Ok(Self {
            users: Table::open(&db, trees::USERS, &gate)?,
            vault: Table::open(&db, trees::VAULT, &gate)?,
            vault_cache: Arc::new(RecordCache::new(options.vault_cache_entries)),
            grants: Table::open(&db, trees::GRANTS, &gate)?,
            grant_cache: Arc::new(RecordCache::new(options.grant_cache_entries)),
            grants_by_user: Index::open(&db, trees::GRANTS_BY_USER)?,
            passkeys: Table::open(&db, trees::PASSKEYS, &gate)?,
            passkeys_by_user: Index::open(&db, trees::PASSKEYS_BY_USER)?,
            credential_ids: Index::open(&db, trees::CREDENTIAL_IDS)?,
            sessions: Table::open(&db, trees::SESSIONS, &gate)?,
            sessions_by_user: Index::open(&db, trees::SESSIONS_BY_USER)?,
            ceremonies: Table::open(&db, trees::CEREMONIES, &gate)?,
            connect_codes: Table::open(&db, trees::CONNECT_CODES, &gate)?,
            usage: db.open_tree(trees::USAGE)?,
            admin_keys: Table::open(&db, trees::ADMIN_KEYS, &gate)?,
            grant_owners: Index::open(&db, trees::GRANT_OWNERS)?,
            audit: Table::open(&db, trees::AUDIT, &gate)?,
            audit_by_user: Table::open(&db, trees::AUDIT_BY_USER, &gate)?,
            operator_key: Table::open(&db, trees::OPERATOR_KEY, &gate)?,
            gate,
            id_floor: Arc::new(AtomicU64::new(id_floor)),
            db,
        })
    }

    /// A number never handed out before by this store, nor by the store it was restored
    /// from: orders sessions and audit entries across restarts and restores.
    pub(crate) fn next_id(&self) -> Result<u64, StoreError> {
        let generated = self.db.generate_id()?;
        Ok(generated.saturating_add(self.id_floor.load(Ordering::SeqCst)))
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

    // --- admin keys --------------------------------------------------------------

    pub fn insert_admin_key(&self, key: &AdminKeyRecord) -> Result<(), StoreError> {
        self.admin_keys.put(key.id.as_str(), key)
    }

    pub fn admin_key(&self, id: &AdminKeyId) -> Result<Option<AdminKeyRecord>, StoreError> {
        self.admin_keys.get(id.as_str())
    }

    pub fn admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError> {
        self.admin_keys.values()
    }

    /// One page of admin keys, oldest first (ties by id), starting after the cursor
    /// `created_at (u64, big endian) ‖ id` of the last key served: a revoked key's
    /// cursor still says where to go on. Admin keys are few, so all are read and sorted.
    pub fn admin_keys_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AdminKeyRecord>, Option<Vec<u8>>), StoreError> {
        let mut keyed: Vec<(Vec<u8>, AdminKeyRecord)> = self
            .admin_keys
            .values()?
            .into_iter()
            .map(|k| {
                let mut at = k.created_at.to_be_bytes().to_vec();
                at.extend_from_slice(k.id.as_str().as_bytes());
                (at, k)
            })
            .filter(|(at, _)| after.is_none_or(|a| at.as_slice() > a))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let more = keyed.len() > limit;
        keyed.truncate(limit);
        let next = more
            .then(|| keyed.last().map(|(at, _)| at.clone()))
            .flatten();
        Ok((keyed.into_iter().map(|(_, k)| k).collect(), next))
    }

    /// Removes the key; returns whether there was one.
    pub fn delete_admin_key(&self, id: &AdminKeyId) -> Result<bool, StoreError> {
        self.admin_keys.remove(id.as_str())
    }

    // --- users -------------------------------------------------------------------

    pub fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.users.put(user.id.as_str(), user)
    }

    pub fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.users.get(id.as_str())
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.users.values()
    }

    /// One page of people in id order (ids are random: the order is stable, not by
    /// age), starting after the store key `after`; see `Table::page`.
    pub fn users_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<UserRecord>, Option<Vec<u8>>), StoreError> {
        self.users.page(b"", after, limit, |_| true)
    }

    // --- vault -------------------------------------------------------------------

    /// Stores (or replaces) `user`'s sealed key. The record is filed under `user`, the
    /// id it will be looked up by (and bound to when opened), whatever its own fields say.
    pub fn put_vault(&self, user: &UserId, record: &VaultRecord) -> Result<(), StoreError> {
        let written = self.vault.put(user.as_str(), record);
        self.vault_cache.evict(user);
        written
    }

    pub fn vault(&self, user: &UserId) -> Result<Option<VaultRecord>, StoreError> {
        self.vault.get(user.as_str())
    }

    /// The same record as [`SledStore::vault`], still sealed, through the vault cache
    /// (`cache.rs`): the proxy's lookup. Coherent with every vault write made through
    /// this store.
    pub fn vault_cached(&self, user: &UserId) -> Result<Option<Arc<VaultRecord>>, StoreError> {
        self.vault_cache
            .read_through(user, || self.vault.get(user.as_str()))
    }

    /// Compare-and-swap: replaces `user`'s record with `new` only if it is still
    /// exactly `old`. Returns whether it did.
    pub fn replace_vault(
        &self,
        user: &UserId,
        old: &VaultRecord,
        new: &VaultRecord,
    ) -> Result<bool, StoreError> {
        let swapped = self.vault.compare_and_swap(user.as_str(), old, new);
        self.vault_cache.evict(user);
        swapped
    }

    pub fn delete_vault(&self, user: &UserId) -> Result<bool, StoreError> {
        let removed = self.vault.remove(user.as_str());
        self.vault_cache.evict(user);
        removed
    }

    /// Every vault record with the user id it is filed under (for the re-seal loop).
    pub fn vault_entries(&self) -> Result<Vec<(UserId, VaultRecord)>, StoreError> {
        self.vault
            .entries()
            .map(|entry| {
                let (key, record) = entry?;
                let user = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|k| UserId::parse(k).ok())
                    .ok_or_else(|| self.vault.corrupt("bad key"))?;
                Ok((user, record))
            })
            .collect()
    }

    // --- the operator's key ----------------------------------------------------------

    /// Stores (or replaces) the operator's sealed key.
    pub fn put_operator_key(&self, record: &OperatorKeyRecord) -> Result<(), StoreError> {
        self.operator_key.put(OPERATOR_KEY_KEY, record)
    }

    pub fn operator_key(&self) -> Result<Option<OperatorKeyRecord>, StoreError> {
        self.operator_key.get(OPERATOR_KEY_KEY)
    }

    /// Compare-and-swap (the re-seal pass): replaces the record with `new` only if it is
    /// still exactly `old`. Returns whether it did.
    pub fn replace_operator_key(
        &self,
        old: &OperatorKeyRecord,
        new: &OperatorKeyRecord,
    ) -> Result<bool, StoreError> {
        self.operator_key
            .compare_and_swap(OPERATOR_KEY_KEY, old, new)
    }

    /// Removes the operator's key; returns whether there was one.
    pub fn delete_operator_key(&self) -> Result<bool, StoreError> {
        self.operator_key.remove(OPERATOR_KEY_KEY)
    }

    // --- grants ------------------------------------------------------------------

    /// Stores a new grant, its per-user index entry and its owner record in one
    /// transaction, and only while the person exists (a grant minted for a person
    /// deleted meanwhile would outlive them). `NotFound { what: "user" }` when they are
    /// gone.
    pub fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        let bytes = self.grants.encode(grant)?;
        let index = pair_key(grant.user_id.as_str(), grant.id.as_str());
        let _w = self.gate.write();
        let result: TransactionResult<(), ()> = (
            self.users.tree(),
            self.grants.tree(),
            self.grants_by_user.tree(),
            self.grant_owners.tree(),
        )
            .transaction(|(users, grants, idx, owners)| {
                if users.get(grant.user_id.as_str())?.is_none() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                grants.insert(grant.id.as_str(), bytes.clone())?;
                idx.insert(index.as_slice(), &[])?;
                owners.insert(index.as_slice(), &[])?;
                Ok(())
            });
        self.grant_cache.evict(&grant.id);
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => Err(StoreError::NotFound { what: "user" }),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    pub fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>, StoreError> {
        self.grants.get(id.as_str())
    }

    /// The same record as [`SledStore::grant`], through the grant cache (`cache.rs`):
    /// the proxy's lookup. Coherent with every grant write made through this store; the
    /// caller still checks state, expiry and grace against the clock every time.
    pub fn grant_cached(&self, id: &GrantId) -> Result<Option<Arc<GrantRecord>>, StoreError> {
        self.grant_cache
            .read_through(id, || self.grants.get(id.as_str()))
    }

    /// One page of grants in id order that `filter` picks, starting after the grant id
    /// `after` (a page's cursor). With `filter.user` the person's index is walked
    /// (same order, same cursors) instead of every grant.
    pub fn grants_page(
        &self,
        filter: &GrantFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<GrantRecord>, Option<Vec<u8>>), StoreError> {
        use std::ops::Bound;
        let Some(user) = &filter.user else {
            return self.grants.page(b"", after, limit, |g| filter.matches(g));
        };
        let prefix = user.as_str().as_bytes();
        let start = match after {
            Some(id) => Bound::Excluded([prefix, id].concat()),
            None => Bound::Included(prefix.to_vec()),
        };
        let (mut items, mut last) = (Vec::new(), None);
        for key in self
            .grants_by_user
            .tree()
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .keys()
        {
            let key = key?;
            let Some(id) = key.strip_prefix(prefix) else {
                break;
            };
            // Removed between the index read and this one: not listed.
            let Some(grant) = self.grants.get(id)? else {
                continue;
            };
            if !filter.matches(&grant) {
                continue;
            }
            if items.len() == limit {
                return Ok((items, last));
            }
            last = Some(id.to_vec());
            items.push(grant);
        }
        Ok((items, None))
    }

    /// The ids of every grant `user` ever had — removed ones included, whose usage rows
    /// stay — in id order.
    pub fn grant_ids_ever(&self, user: &UserId) -> Result<Vec<GrantId>, StoreError> {
        self.grant_owners.ids_for(user, |s| GrantId::parse(s).ok())
    }

    /// The owner of every grant ever stored, removed ones included. (Grants removed
    /// before schema 7 left no owner record: they are not here.)
    pub fn grant_owners(&self) -> Result<HashMap<GrantId, UserId>, StoreError> {
        let corrupt = || StoreError::Corrupt {
            tree: self.grant_owners.name(),
            reason: "bad owner key".into(),
        };
        let mut owners = HashMap::new();
        for key in self.grant_owners.tree().iter().keys() {
            let key = key?;
            let (user, grant) = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.split_at_checked(ID_LEN))
                .ok_or_else(corrupt)?;
            let (Ok(user), Ok(grant)) = (UserId::parse(user), GrantId::parse(grant)) else {
                return Err(corrupt());
            };
            owners.insert(grant, user);
        }
        Ok(owners)
    }

    /// A person's grants, oldest first.
    pub fn grants_for_user(&self, user: &UserId) -> Result<Vec<GrantRecord>, StoreError> {
        let mut out = Vec::new();
        for id in self
            .grants_by_user
            .ids_for(user, |s| GrantId::parse(s).ok())?
        {
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
        let updated = self.grants.update(id.as_str(), change);
        self.grant_cache.evict(id);
        updated
    }

    /// Marks a grant revoked, and forgets the secret a rotation replaced (its grace ends
    /// with the grant). Returns the updated grant, `None` if unknown.
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
            g.previous_secret_hash = None;
            g.previous_until = None;
        })
    }

    /// Removes a grant record and its per-user index entry in one transaction (a
    /// revoked grant the person clears from their list). Returns whether it existed.
    pub fn delete_grant(&self, id: &GrantId) -> Result<bool, StoreError> {
        let _w = self.gate.write();
        let result: TransactionResult<bool, ()> = (self.grants.tree(), self.grants_by_user.tree())
            .transaction(|(grants, idx)| {
                let Some(bytes) = grants.get(id.as_str())? else {
                    return Ok(false);
                };
                let Ok(grant) = self.grants.decode(&bytes) else {
                    return Err(ConflictableTransactionError::Abort(()));
                };
                grants.remove(id.as_str())?;
                idx.remove(pair_key(grant.user_id.as_str(), grant.id.as_str()))?;
                Ok(true)
            });
        self.grant_cache.evict(id);
        match result {
            Ok(existed) => Ok(existed),
            Err(TransactionError::Abort(())) => Err(self.grants.corrupt("undecodable grant")),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
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

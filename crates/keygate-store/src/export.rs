//! Everything in a sled store as backend-neutral [`Entry`]s, and the way back in:
//! what `keygate store copy` moves between sled and PostgreSQL. Import writes each
//! entry under the keys (and index entries) the sled code itself uses, overwriting
//! what is there, so importing the same entries twice leaves the same store.

use keygate_core::ids::{GrantId, UserId};

use crate::StoreError;
use crate::api::Entry;
use crate::records::CodeRecord;
use crate::store::{OPERATOR_KEY_KEY, SledStore};
use crate::table::{Table, Versioned, pair_key};
use crate::usage::UsageDelta;

/// A key written by keygate as text (ids, hashes), read back.
fn text_key(tree: &'static str, key: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(key.to_vec()).map_err(|_| StoreError::Corrupt {
        tree,
        reason: "key is not text".into(),
    })
}

/// Every `(key as text, record)` of a table.
fn keyed<R: Versioned>(table: &Table<R>) -> Result<Vec<(String, R)>, StoreError> {
    table
        .entries()
        .map(|entry| {
            let (key, record) = entry?;
            Ok((text_key(table.name(), &key)?, record))
        })
        .collect()
}

impl SledStore {
    pub fn export(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        out.extend(self.users.values()?.into_iter().map(Entry::User));
        for (user, record) in self.vault_entries()? {
            out.push(Entry::Vault(user, record));
        }
        out.extend(self.operator_key()?.map(Entry::OperatorKey));
        out.extend(self.grants.values()?.into_iter().map(Entry::Grant));
        let mut owners: Vec<(GrantId, UserId)> = self.grant_owners()?.into_iter().collect();
        owners.sort();
        out.extend(owners.into_iter().map(|(g, u)| Entry::GrantOwner(u, g)));
        out.extend(self.passkeys.values()?.into_iter().map(Entry::Passkey));
        for (hash, s) in keyed(&self.sessions)? {
            out.push(Entry::Session(hash, s));
        }
        for (id, c) in keyed(&self.ceremonies)? {
            out.push(Entry::Ceremony(id, c));
        }
        for (hash, c) in keyed::<CodeRecord>(&self.connect_codes)? {
            out.push(Entry::Code(hash, c));
        }
        for (grant_id, row) in self.usage_rows_all(0, u32::MAX)? {
            out.push(Entry::Usage(UsageDelta {
                grant_id,
                day: row.day,
                model: row.model,
                counts: row.counts,
            }));
        }
        out.extend(self.admin_keys.values()?.into_iter().map(Entry::AdminKey));
        out.extend(self.audit.values()?.into_iter().map(Entry::Audit));
        Ok(out)
    }

    /// Writes every entry with its index entries (see the module docs). Entries are
    /// written one by one: an import that fails part-way is finished by running it
    /// again. Raises the id floor above every sequence number imported, so sessions
    /// and audit entries made afterwards (now, or after the next open) sort after the
    /// imported ones.
    pub fn import(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut max_seq = 0u64;
        for entry in entries {
            let _w = self.gate.write();
            match entry {
                Entry::User(u) => self.users.put(u.id.as_str(), u)?,
                Entry::Vault(user, record) => {
                    self.vault.put(user.as_str(), record)?;
                    self.vault_cache.evict(user);
                }
                Entry::OperatorKey(record) => self.operator_key.put(OPERATOR_KEY_KEY, record)?,
                Entry::Grant(g) => {
                    self.grants.put(g.id.as_str(), g)?;
                    let index = pair_key(g.user_id.as_str(), g.id.as_str());
                    self.grants_by_user.tree().insert(index.as_slice(), &[])?;
                    self.grant_owners.tree().insert(index, &[])?;
                    self.grant_cache.evict(&g.id);
                }
                Entry::GrantOwner(user, grant) => {
                    let index = pair_key(user.as_str(), grant.as_str());
                    self.grant_owners.tree().insert(index, &[])?;
                }
                Entry::Passkey(pk) => {
                    self.passkeys.put(pk.id.as_str(), pk)?;
                    let index = pair_key(pk.user_id.as_str(), pk.id.as_str());
                    self.passkeys_by_user.tree().insert(index, &[])?;
                    self.credential_ids
                        .tree()
                        .insert(pk.credential_id.as_bytes(), pk.id.as_str().as_bytes())?;
                }
                Entry::Session(hash, s) => {
                    max_seq = max_seq.max(s.seq);
                    self.sessions.put(hash, s)?;
                    let index = pair_key(s.user_id.as_str(), hash);
                    self.sessions_by_user.tree().insert(index, &[])?;
                }
                Entry::Ceremony(id, c) => self.ceremonies.put(id, c)?,
                Entry::Code(hash, c) => self.connect_codes.put(hash, c)?,
                Entry::Usage(row) => self.set_usage(row)?,
                Entry::AdminKey(k) => self.admin_keys.put(k.id.as_str(), k)?,
                Entry::Audit(record) => {
                    max_seq = max_seq.max(record.seq);
                    self.put_audit(record)?;
                }
            }
        }
        self.raise_id_floor(max_seq.saturating_add(1))?;
        self.db.flush()?;
        Ok(())
    }
}

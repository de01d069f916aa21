//! Passkeys, sessions and ceremonies, and deleting a person with everything of theirs.
//!
//! Every write that spans trees is one sled transaction. sled cannot scan inside a
//! transaction (and a plain scan there would deadlock on its global lock), so each
//! write first takes a snapshot of the keys it needs outside, then re-reads every one
//! of them by key inside the transaction, where reads and writes are serialised with
//! all other writers. What the transaction decides (is this the last passkey? which
//! sessions are the oldest?) therefore rests only on reads made inside it. A key added
//! by someone else between the snapshot and the transaction is not seen; each such
//! case below errs on the safe side and says so.

use keygate_core::ids::{PasskeyId, UserId};
use keygate_core::time::UnixTime;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionResult, TransactionalTree,
};
use sled::{Transactional, Tree};

use crate::StoreError;
use crate::records::{CeremonyRecord, CodeRecord, PasskeyRecord, SessionRecord, UserRecord};
use crate::store::SledStore;
use crate::table::pair_key;

/// What [`SledStore::insert_passkey`] and [`SledStore::insert_user_with_passkey`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum PasskeyInsert {
    Inserted,
    /// The WebAuthn credential id is already registered (to anyone): nothing written.
    CredentialTaken,
    /// The person was deleted meanwhile (adding only): nothing written.
    NoSuchUser,
}

/// What [`SledStore::delete_passkey_unless_last`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePasskey {
    Deleted,
    Last,
    /// Already removed (a concurrent removal won).
    Gone,
}

/// What [`SledStore::insert_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum SessionInsert {
    /// Stored; `ended` of the person's oldest sessions were ended to stay under the cap.
    Inserted { ended: usize },
    /// The person was deleted meanwhile: nothing written.
    NoSuchUser,
}

impl SledStore {
    // --- passkeys ----------------------------------------------------------------

    /// Registers a new person with their first passkey, atomically: either both exist
    /// afterwards, or — when the credential id is already registered to anyone —
    /// neither does.
    pub fn insert_user_with_passkey(
        &self,
        user: &UserRecord,
        pk: &PasskeyRecord,
    ) -> Result<PasskeyInsert, StoreError> {
        let user_bytes = self.users.encode(user)?;
        let pk_bytes = self.passkeys.encode(pk)?;
        let index = pair_key(pk.user_id.as_str(), pk.id.as_str());
        let _w = self.gate.write();
        let result = (
            self.users.tree(),
            self.passkeys.tree(),
            self.passkeys_by_user.tree(),
            self.credential_ids.tree(),
        )
            .transaction(|(users, p, idx, cred)| {
                if cred.get(pk.credential_id.as_bytes())?.is_some() {
                    return abort(PasskeyInsert::CredentialTaken);
                }
                users.insert(user.id.as_str(), user_bytes.clone())?;
                write_passkey(p, idx, cred, pk, &pk_bytes, &index)?;
                Ok(())
            });
        outcome(result, PasskeyInsert::Inserted)
    }

    /// Adds a passkey to an existing person. The credential id index is a
    /// compare-and-swap inside the transaction: a credential id registered to anyone
    /// (this person included) is refused, so no one can take over another person's
    /// credential id ("squatting") and lock them out.
    pub fn insert_passkey(&self, pk: &PasskeyRecord) -> Result<PasskeyInsert, StoreError> {
        let pk_bytes = self.passkeys.encode(pk)?;
        let index = pair_key(pk.user_id.as_str(), pk.id.as_str());
        let _w = self.gate.write();
        let result = (
            self.users.tree(),
            self.passkeys.tree(),
            self.passkeys_by_user.tree(),
            self.credential_ids.tree(),
        )
            .transaction(|(users, p, idx, cred)| {
                if users.get(pk.user_id.as_str())?.is_none() {
                    return abort(PasskeyInsert::NoSuchUser);
                }
                if cred.get(pk.credential_id.as_bytes())?.is_some() {
                    return abort(PasskeyInsert::CredentialTaken);
                }
                write_passkey(p, idx, cred, pk, &pk_bytes, &index)?;
                Ok(())
            });
        outcome(result, PasskeyInsert::Inserted)
    }

    /// Replaces a passkey record (same id and credential): counters, name, last use.
    /// A passkey removed meanwhile (alone, or with its person) stays removed: a sign-in
    /// or step-up finishing during the removal never writes the record back without
    /// its index entries. (The record and its indexes are removed in one transaction,
    /// so "the record is still there" is the same as "the passkey still exists".)
    pub fn put_passkey(&self, pk: &PasskeyRecord) -> Result<(), StoreError> {
        self.passkeys.put_existing(pk.id.as_str(), pk)
    }

    pub fn passkey(&self, id: &PasskeyId) -> Result<Option<PasskeyRecord>, StoreError> {
        self.passkeys.get(id.as_str())
    }

    pub fn passkey_by_credential(
        &self,
        credential_id_b64: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError> {
        let Some(id) = self
            .credential_ids
            .lookup(credential_id_b64, |s| PasskeyId::parse(s).ok())?
        else {
            return Ok(None);
        };
        // The index and the record must agree; a record naming another credential is
        // not this credential's passkey.
        Ok(self
            .passkey(&id)?
            .filter(|pk| pk.credential_id == credential_id_b64))
    }

    /// A person's passkeys, oldest first.
    pub fn passkeys_for_user(&self, user: &UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        let mut out = Vec::new();
        for id in self
            .passkeys_by_user
            .ids_for(user, |s| PasskeyId::parse(s).ok())?
        {
            if let Some(pk) = self.passkey(&id)? {
                out.push(pk);
            }
        }
        out.sort_by_key(|p| (p.created_at, p.id.clone()));
        Ok(out)
    }

    /// Removes a passkey unless it is the person's last one. The count of the person's
    /// other passkeys is taken inside the same transaction as the removal, so two
    /// concurrent removals cannot leave a person without any passkey. (A passkey added
    /// after the snapshot of the person's index is not counted: at worst a removal is
    /// refused as "last" when it need not be, never the other way round.)
    pub fn delete_passkey_unless_last(
        &self,
        pk: &PasskeyRecord,
    ) -> Result<DeletePasskey, StoreError> {
        let own = pair_key(pk.user_id.as_str(), pk.id.as_str());
        let others: Vec<_> = self
            .passkeys_by_user
            .keys_for(&pk.user_id)?
            .into_iter()
            .filter(|k| *k != own)
            .collect();
        let _w = self.gate.write();
        let result = (
            self.passkeys.tree(),
            self.passkeys_by_user.tree(),
            self.credential_ids.tree(),
        )
            .transaction(|(p, idx, cred)| {
                if idx.get(own.as_slice())?.is_none() {
                    return abort(DeletePasskey::Gone);
                }
                let mut remaining = 0;
                for key in &others {
                    if idx.get(key)?.is_some() {
                        remaining += 1;
                    }
                }
                if remaining == 0 {
                    return abort(DeletePasskey::Last);
                }
                p.remove(pk.id.as_str())?;
                idx.remove(own.as_slice())?;
                remove_if_owned(cred, pk.credential_id.as_bytes(), pk.id.as_str())?;
                Ok(())
            });
        outcome(result, DeletePasskey::Deleted)
    }

    // --- sessions ----------------------------------------------------------------

    /// Stores a new session for a person, ending their oldest sessions so that at most
    /// `cap` remain (the new one included). The oldest are chosen, and the count made,
    /// inside the transaction from the sessions that still exist. (A session created
    /// concurrently after the snapshot is not counted: the person may briefly hold one
    /// more than `cap`, until their next sign-in.)
    pub fn insert_session(
        &self,
        hash: &str,
        s: &SessionRecord,
        cap: usize,
    ) -> Result<SessionInsert, StoreError> {
        let mut record = s.clone();
        record.seq = self.next_id()?;
        let bytes = self.sessions.encode(&record)?;
        let index = pair_key(s.user_id.as_str(), hash);
        let existing: Vec<String> = self
            .sessions_for_user(&s.user_id)?
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        let _w = self.gate.write();
        let result = (
            self.users.tree(),
            self.sessions.tree(),
            self.sessions_by_user.tree(),
        )
            .transaction(|(users, sessions, idx)| {
                if users.get(s.user_id.as_str())?.is_none() {
                    return abort(SessionInsert::NoSuchUser);
                }
                let mut live = Vec::new();
                for h in &existing {
                    if sessions.get(h.as_str())?.is_some() {
                        live.push(h);
                    }
                }
                let excess = (live.len() + 1).saturating_sub(cap.max(1));
                for h in live.iter().take(excess) {
                    sessions.remove(h.as_str())?;
                    idx.remove(pair_key(s.user_id.as_str(), h))?;
                }
                sessions.insert(hash, bytes.clone())?;
                idx.insert(index.as_slice(), &[])?;
                Ok(SessionInsert::Inserted { ended: excess })
            });
        match result {
            Ok(done) => Ok(done),
            Err(TransactionError::Abort(e)) => Ok(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    pub fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.sessions.get(hash)
    }

    /// Replaces a session record (freshness, last seen). A session ended meanwhile
    /// stays ended: this never brings one back.
    pub fn put_session(&self, hash: &str, s: &SessionRecord) -> Result<(), StoreError> {
        self.sessions.put_existing(hash, s)
    }

    /// A person's sessions with their store keys, oldest first (creation time, then
    /// creation order).
    pub fn sessions_for_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let mut out = Vec::new();
        for h in self.session_hashes(user)? {
            if let Some(rec) = self.session(&h)? {
                out.push((h, rec));
            }
        }
        out.sort_by(|a, b| (a.1.created_at, a.1.seq, &a.0).cmp(&(b.1.created_at, b.1.seq, &b.0)));
        Ok(out)
    }

    pub fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        let user = self.session(hash)?.map(|s| s.user_id);
        let _w = self.gate.write();
        let result: TransactionResult<(), ()> =
            (self.sessions.tree(), self.sessions_by_user.tree()).transaction(|(sessions, idx)| {
                sessions.remove(hash)?;
                if let Some(user) = &user {
                    idx.remove(pair_key(user.as_str(), hash))?;
                }
                Ok(())
            });
        outcome(result, ())
    }

    /// Ends every session of a person except `keep` (a session hash); returns how many.
    pub fn delete_sessions_for_user(
        &self,
        user: &UserId,
        keep: Option<&str>,
    ) -> Result<usize, StoreError> {
        let hashes: Vec<String> = self
            .session_hashes(user)?
            .into_iter()
            .filter(|h| Some(h.as_str()) != keep)
            .collect();
        let _w = self.gate.write();
        let result: TransactionResult<usize, ()> =
            (self.sessions.tree(), self.sessions_by_user.tree()).transaction(|(sessions, idx)| {
                let mut n = 0;
                for h in &hashes {
                    if sessions.remove(h.as_str())?.is_some() {
                        n += 1;
                    }
                    idx.remove(pair_key(user.as_str(), h))?;
                }
                Ok(n)
            });
        match result {
            Ok(n) => Ok(n),
            Err(TransactionError::Abort(())) => Ok(0),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Drops sessions that expired (idle or absolute); returns how many.
    pub fn sweep_sessions(
        &self,
        now: UnixTime,
        idle: u64,
        absolute: u64,
    ) -> Result<usize, StoreError> {
        let mut expired = Vec::new();
        let mut unreadable = Vec::new();
        for item in self.sessions.tree().iter() {
            let (k, v) = item?;
            match self.sessions.decode(&v) {
                Ok(s) => {
                    if now >= s.last_seen_at.saturating_add(idle)
                        || now >= s.created_at.saturating_add(absolute)
                    {
                        expired.push(String::from_utf8_lossy(&k).into_owned());
                    }
                }
                // An unreadable session signs nobody in; left in place it would make
                // every sweep (ceremonies and codes too) fail.
                Err(e) => {
                    tracing::warn!(error = %e, "removing an unreadable session record");
                    unreadable.push(k);
                }
            }
        }
        for hash in &expired {
            self.delete_session(hash)?;
        }
        for key in &unreadable {
            self.sessions.remove(key)?;
        }
        Ok(expired.len() + unreadable.len())
    }

    fn session_hashes(&self, user: &UserId) -> Result<Vec<String>, StoreError> {
        self.sessions_by_user.ids_for(user, |s| Some(s.to_owned()))
    }

    // --- ceremonies --------------------------------------------------------------

    /// Stores a ceremony under `id`, replacing any ceremony already there.
    ///
    /// Two kinds of id share the tree. An anonymous ceremony (sign-up, sign-in) has a
    /// random id. A signed-in ceremony has [`person_ceremony_id`]: one key per person,
    /// kind and *session*, so a new start replaces only that same session's previous
    /// live ceremony of the same kind; another session of the same person (a second
    /// tab, or a stolen cookie) has its own key and cannot displace it. A live session
    /// therefore holds at most one live ceremony per kind whatever it sends — the bound
    /// is the key itself, not a count that could drift.
    pub fn put_ceremony(&self, id: &str, c: &CeremonyRecord) -> Result<(), StoreError> {
        self.ceremonies.put(id, c)
    }

    /// Anonymous ceremonies in the store (live or expired-but-not-yet-swept): the ones
    /// the live-ceremony cap counts. A full scan of the keys; callers limit how often.
    /// A key that cannot be read counts (an over-estimate, never under).
    pub fn anonymous_ceremony_count(&self) -> Result<usize, StoreError> {
        Ok(self
            .ceremonies
            .tree()
            .iter()
            .keys()
            .filter(|k| k.as_ref().map_or(true, |k| !is_person_ceremony_key(k)))
            .count())
    }

    /// Removes and returns a ceremony: whatever happens next, it cannot be used twice.
    pub fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError> {
        self.ceremonies.take(id)
    }

    pub fn sweep_ceremonies(&self, now: UnixTime) -> Result<usize, StoreError> {
        self.ceremonies.sweep(|c| c.expires_at <= now)
    }

    // --- connect codes -----------------------------------------------------------

    pub fn put_code(&self, hash: &str, c: &CodeRecord) -> Result<(), StoreError> {
        self.connect_codes.put(hash, c)
    }

    /// Removes and returns a code: a code is spent by any exchange attempt.
    pub fn take_code(&self, hash: &str) -> Result<Option<CodeRecord>, StoreError> {
        self.connect_codes.take(hash)
    }

    pub fn sweep_codes(&self, now: UnixTime) -> Result<usize, StoreError> {
        self.connect_codes.sweep(|c| c.expires_at <= now)
    }

    // --- account deletion --------------------------------------------------------

    /// Deletes a person and everything of theirs in one transaction: the person, their
    /// sessions (signed out everywhere), grants (refused from the next request), the
    /// sealed key, passkeys, the credential-id entries that are still theirs, and their
    /// pending connect codes and WebAuthn ceremonies. Returns whether the person existed.
    ///
    /// Inserting a passkey, session or grant checks, in its own transaction, that the
    /// person exists; so once the person is gone nothing new can be attached, and
    /// anything attached between the snapshot and the transaction is found by a second
    /// pass.
    pub fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        let existed = self.users.contains(user.as_str())?;
        for _ in 0..4 {
            let plan = self.deletion_plan(user)?;
            let done = plan.is_empty();
            let applied = self.apply(&plan);
            // Its grants and sealed key are gone (or, on an error, may be): none may be
            // served from a cache.
            self.grant_cache.clear();
            self.vault_cache.evict(user);
            applied?;
            if done {
                break;
            }
        }
        Ok(existed)
    }

    /// Every key that deleting `user` removes, as (tree, key, remove only if the value
    /// is this). Reads only; the caller applies it in one transaction.
    fn deletion_plan(&self, user: &UserId) -> Result<Vec<Removal>, StoreError> {
        let mut plan = Vec::new();
        let u = user.as_str();
        if self.users.contains(u)? {
            plan.push(Removal::new(self.users.name(), u.as_bytes()));
        }
        if self.vault.contains(u)? {
            plan.push(Removal::new(self.vault.name(), u.as_bytes()));
        }
        for key in self.sessions_by_user.keys_for(user)? {
            plan.push(Removal::new(self.sessions.name(), &key[u.len()..]));
            plan.push(Removal::new(self.sessions_by_user.name(), &key));
        }
        for key in self.grants_by_user.keys_for(user)? {
            plan.push(Removal::new(self.grants.name(), &key[u.len()..]));
            plan.push(Removal::new(self.grants_by_user.name(), &key));
        }
        for key in self.passkeys_by_user.keys_for(user)? {
            let id = &key[u.len()..];
            if let Some(pk) = self.passkeys.get(id)? {
                // Only this person's passkey's entry: never another person's.
                plan.push(Removal {
                    tree: self.credential_ids.name(),
                    key: pk.credential_id.into_bytes(),
                    only_if: Some(id.to_vec()),
                });
            }
            plan.push(Removal::new(self.passkeys.name(), id));
            plan.push(Removal::new(self.passkeys_by_user.name(), &key));
        }
        // Ceremonies and codes carry the person's id; they are few and short-lived, so a
        // scan is cheaper than keeping an index in step with their sweeps.
        for key in self
            .ceremonies
            .keys_where(|c| c.user_id.as_ref() == Some(user))?
        {
            plan.push(Removal::new(self.ceremonies.name(), &key));
        }
        for key in self.connect_codes.keys_where(|c| &c.user_id == user)? {
            plan.push(Removal::new(self.connect_codes.name(), &key));
        }
        Ok(plan)
    }

    /// Applies removals atomically.
    fn apply(&self, plan: &[Removal]) -> Result<(), StoreError> {
        if plan.is_empty() {
            return Ok(());
        }
        let trees: [(&'static str, &Tree); 11] = [
            (self.users.name(), self.users.tree()),
            (self.vault.name(), self.vault.tree()),
            (self.sessions.name(), self.sessions.tree()),
            (self.sessions_by_user.name(), self.sessions_by_user.tree()),
            (self.grants.name(), self.grants.tree()),
            (self.grants_by_user.name(), self.grants_by_user.tree()),
            (self.passkeys.name(), self.passkeys.tree()),
            (self.passkeys_by_user.name(), self.passkeys_by_user.tree()),
            (self.credential_ids.name(), self.credential_ids.tree()),
            (self.ceremonies.name(), self.ceremonies.tree()),
            (self.connect_codes.name(), self.connect_codes.tree()),
        ];
        let (names, trees): (Vec<&'static str>, Vec<&Tree>) = trees.into_iter().unzip();
        let _w = self.gate.write();
        let result: TransactionResult<(), ()> = trees[..].transaction(|view| {
            for r in plan {
                let Some(tree) = names
                    .iter()
                    .position(|n| *n == r.tree)
                    .and_then(|i| view.get(i))
                else {
                    continue;
                };
                match &r.only_if {
                    None => {
                        tree.remove(r.key.as_slice())?;
                    }
                    Some(expected) => {
                        if tree.get(r.key.as_slice())?.as_deref() == Some(expected.as_slice()) {
                            tree.remove(r.key.as_slice())?;
                        }
                    }
                }
            }
            Ok(())
        });
        outcome(result, ())
    }
}

/// The store id of a signed-in person's ceremony of `kind` (step-up, adding a passkey,
/// approving a connection) started by their session with public id `session`:
/// `<user id>~<kind>~<session public id>`, one per person, kind and session (see
/// [`SledStore::put_ceremony`]). It is not a secret: only the session that started it can
/// finish it (the server rebuilds the id from the calling session before taking the
/// ceremony and refuses any other).
pub fn person_ceremony_id(user: &UserId, kind: &str, session: &str) -> String {
    format!(
        "{}{PERSON_SEPARATOR}{kind}{PERSON_SEPARATOR}{session}",
        user.as_str()
    )
}

/// The prefix every [`person_ceremony_id`] of `user` starts with: `<user id>~`.
pub fn person_ceremony_prefix(user: &UserId) -> String {
    format!("{}{PERSON_SEPARATOR}", user.as_str())
}

/// Whether `id` is a [`person_ceremony_id`] (random anonymous ids never contain the
/// separator: they are base64url).
pub fn is_person_ceremony_id(id: &str) -> bool {
    is_person_ceremony_key(id.as_bytes())
}

const PERSON_SEPARATOR: char = '~';

fn is_person_ceremony_key(key: &[u8]) -> bool {
    key.contains(&(PERSON_SEPARATOR as u8))
}

/// One key that deleting a person removes: from the tree named `tree`, and when
/// `only_if` is set, only while its value is still that.
struct Removal {
    tree: &'static str,
    key: Vec<u8>,
    only_if: Option<Vec<u8>>,
}

impl Removal {
    fn new(tree: &'static str, key: &[u8]) -> Self {
        Self {
            tree,
            key: key.to_vec(),
            only_if: None,
        }
    }
}

fn write_passkey(
    p: &TransactionalTree,
    idx: &TransactionalTree,
    cred: &TransactionalTree,
    pk: &PasskeyRecord,
    pk_bytes: &[u8],
    index: &[u8],
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    p.insert(pk.id.as_str(), pk_bytes)?;
    idx.insert(index, &[])?;
    cred.insert(pk.credential_id.as_bytes(), pk.id.as_str().as_bytes())?;
    Ok(())
}

/// Removes a credential-id entry only while it still names this passkey.
fn remove_if_owned(
    cred: &TransactionalTree,
    credential_id: &[u8],
    passkey_id: &str,
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    if cred.get(credential_id)?.as_deref() == Some(passkey_id.as_bytes()) {
        cred.remove(credential_id)?;
    }
    Ok(())
}

fn abort<T, E>(e: E) -> Result<T, ConflictableTransactionError<E>> {
    Err(ConflictableTransactionError::Abort(e))
}

/// A transaction's result: `done` when it committed, its abort reason otherwise.
fn outcome<E>(result: TransactionResult<(), E>, done: E) -> Result<E, StoreError> {
    match result {
        Ok(()) => Ok(done),
        Err(TransactionError::Abort(e)) => Ok(e),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

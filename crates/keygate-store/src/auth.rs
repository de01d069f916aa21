//! Passkeys, sessions and ceremonies, and deleting a person with everything of theirs.

use keygate_core::ids::{PasskeyId, UserId};
use keygate_core::time::UnixTime;

use crate::StoreError;
use crate::records::{
    CeremonyRecord, CodeRecord, PasskeyRecord, SessionRecord, StoredCeremony, StoredCode,
    StoredPasskey, StoredSession,
};
use crate::store::{Store, decode, get, index_ids, pair_key, put};

impl Store {
    // --- passkeys ----------------------------------------------------------------

    pub fn insert_passkey(&self, pk: &PasskeyRecord) -> Result<(), StoreError> {
        put(
            &self.passkeys,
            pk.id.as_str(),
            &StoredPasskey::V1(pk.clone()),
        )?;
        self.passkeys_by_user
            .insert(pair_key(pk.user_id.as_str(), pk.id.as_str()), &[])?;
        self.credential_ids
            .insert(pk.credential_id.as_bytes(), pk.id.as_str().as_bytes())?;
        Ok(())
    }

    /// Replaces a passkey record (same id and credential).
    pub fn put_passkey(&self, pk: &PasskeyRecord) -> Result<(), StoreError> {
        put(
            &self.passkeys,
            pk.id.as_str(),
            &StoredPasskey::V1(pk.clone()),
        )
    }

    pub fn passkey(&self, id: &PasskeyId) -> Result<Option<PasskeyRecord>, StoreError> {
        Ok(get::<StoredPasskey>(&self.passkeys, "passkeys", id.as_str())?.map(Into::into))
    }

    pub fn passkey_by_credential(
        &self,
        credential_id_b64: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError> {
        let Some(id) = self.credential_ids.get(credential_id_b64.as_bytes())? else {
            return Ok(None);
        };
        let id = std::str::from_utf8(&id)
            .ok()
            .and_then(|s| PasskeyId::parse(s).ok())
            .ok_or_else(|| StoreError::Corrupt {
                tree: "credential_ids",
                reason: "bad passkey id".into(),
            })?;
        self.passkey(&id)
    }

    /// A person's passkeys, oldest first.
    pub fn passkeys_for_user(&self, user: &UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        let mut out = Vec::new();
        for id in index_ids(&self.passkeys_by_user, "passkeys_by_user", user, |s| {
            PasskeyId::parse(s).ok()
        })? {
            if let Some(pk) = self.passkey(&id)? {
                out.push(pk);
            }
        }
        out.sort_by_key(|p| (p.created_at, p.id.clone()));
        Ok(out)
    }

    /// Removes a passkey unless it is the person's last one; returns whether it existed.
    /// The check and the removal happen in one transaction, so two concurrent removals
    /// cannot leave a person without any passkey.
    pub fn delete_passkey_unless_last(
        &self,
        pk: &PasskeyRecord,
    ) -> Result<DeletePasskey, StoreError> {
        use sled::Transactional;
        let prefix = pk.user_id.as_str().to_owned();
        let count = self.passkeys_by_user.scan_prefix(&prefix).count();
        if count <= 1 {
            return Ok(DeletePasskey::Last);
        }
        let index = pair_key(pk.user_id.as_str(), pk.id.as_str());
        let result: Result<(), sled::transaction::TransactionError<()>> =
            (&self.passkeys, &self.passkeys_by_user, &self.credential_ids).transaction(
                |(p, idx, cred)| {
                    p.remove(pk.id.as_str())?;
                    idx.remove(index.as_slice())?;
                    cred.remove(pk.credential_id.as_bytes())?;
                    Ok(())
                },
            );
        result.map_err(|e| StoreError::Transaction(format!("{e:?}")))?;
        // Re-check: if a concurrent delete raced us below one, put this one back.
        if self.passkeys_by_user.scan_prefix(&prefix).count() == 0 {
            self.insert_passkey(pk)?;
            return Ok(DeletePasskey::Last);
        }
        Ok(DeletePasskey::Deleted)
    }

    // --- sessions ----------------------------------------------------------------

    pub fn insert_session(&self, hash: &str, s: &SessionRecord) -> Result<(), StoreError> {
        put(&self.sessions, hash, &StoredSession::V1(s.clone()))?;
        self.sessions_by_user
            .insert(pair_key(s.user_id.as_str(), hash), &[])?;
        Ok(())
    }

    pub fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(get::<StoredSession>(&self.sessions, "sessions", hash)?.map(Into::into))
    }

    pub fn put_session(&self, hash: &str, s: &SessionRecord) -> Result<(), StoreError> {
        put(&self.sessions, hash, &StoredSession::V1(s.clone()))
    }

    pub fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        if let Some(s) = self.session(hash)? {
            self.sessions_by_user
                .remove(pair_key(s.user_id.as_str(), hash))?;
        }
        self.sessions.remove(hash)?;
        Ok(())
    }

    pub fn delete_sessions_for_user(&self, user: &UserId) -> Result<usize, StoreError> {
        let mut n = 0;
        for key in self.sessions_by_user.scan_prefix(user.as_str()).keys() {
            let key = key?;
            if let Some(hash) = key.get(user.as_str().len()..) {
                self.sessions.remove(hash)?;
                n += 1;
            }
            self.sessions_by_user.remove(key)?;
        }
        Ok(n)
    }

    /// Drops sessions that expired (idle or absolute); returns how many.
    pub fn sweep_sessions(
        &self,
        now: UnixTime,
        idle: u64,
        absolute: u64,
    ) -> Result<usize, StoreError> {
        let mut expired = Vec::new();
        for item in self.sessions.iter() {
            let (k, v) = item?;
            let s: SessionRecord = decode::<StoredSession>("sessions", &v)?.into();
            if now >= s.last_seen_at.saturating_add(idle)
                || now >= s.created_at.saturating_add(absolute)
            {
                expired.push(String::from_utf8_lossy(&k).into_owned());
            }
        }
        for hash in &expired {
            self.delete_session(hash)?;
        }
        Ok(expired.len())
    }

    // --- ceremonies --------------------------------------------------------------

    pub fn put_ceremony(&self, id: &str, c: &CeremonyRecord) -> Result<(), StoreError> {
        put(&self.ceremonies, id, &StoredCeremony::V1(c.clone()))
    }

    /// Removes and returns a ceremony: whatever happens next, it cannot be used twice.
    pub fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError> {
        self.ceremonies
            .remove(id)?
            .map(|v| Ok(decode::<StoredCeremony>("ceremonies", &v)?.into()))
            .transpose()
    }

    pub fn sweep_ceremonies(&self, now: UnixTime) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.ceremonies.iter() {
            let (k, v) = item?;
            let expired = decode::<StoredCeremony>("ceremonies", &v)
                .map(|c| CeremonyRecord::from(c).expires_at <= now)
                .unwrap_or(true);
            if expired {
                self.ceremonies.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // --- connect codes -----------------------------------------------------------

    pub fn put_code(&self, hash: &str, c: &CodeRecord) -> Result<(), StoreError> {
        put(&self.connect_codes, hash, &StoredCode::V1(c.clone()))
    }

    /// Removes and returns a code: a code is spent by any exchange attempt.
    pub fn take_code(&self, hash: &str) -> Result<Option<CodeRecord>, StoreError> {
        self.connect_codes
            .remove(hash)?
            .map(|v| Ok(decode::<StoredCode>("connect_codes", &v)?.into()))
            .transpose()
    }

    pub fn sweep_codes(&self, now: UnixTime) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.connect_codes.iter() {
            let (k, v) = item?;
            let expired = decode::<StoredCode>("connect_codes", &v)
                .map(|c| CodeRecord::from(c).expires_at <= now)
                .unwrap_or(true);
            if expired {
                self.connect_codes.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // --- account deletion --------------------------------------------------------

    /// Deletes a person and everything of theirs: sessions first (signed out), then
    /// grants (refused from the next request), the sealed key, passkeys, the person.
    pub fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        self.delete_sessions_for_user(user)?;
        for grant in self.grants_for_user(user)? {
            self.delete_grant(&grant)?;
        }
        self.delete_vault(user)?;
        for pk in self.passkeys_for_user(user)? {
            self.passkeys.remove(pk.id.as_str())?;
            self.passkeys_by_user
                .remove(pair_key(user.as_str(), pk.id.as_str()))?;
            self.credential_ids.remove(pk.credential_id.as_bytes())?;
        }
        self.delete_user_record(user)
    }
}

/// What [`Store::delete_passkey_unless_last`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePasskey {
    Deleted,
    Last,
}

//! Bounded growth: counts of the short-lived trees and one sweep of everything that
//! expires (sessions, ceremonies, connect codes), run by the server's background task.

use keygate_core::time::UnixTime;

use crate::StoreError;
use crate::store::SledStore;

/// What one [`SledStore::sweep_expired`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub sessions: usize,
    pub ceremonies: usize,
    pub codes: usize,
}

impl SledStore {
    /// WebAuthn ceremonies in the store, live or expired-but-not-yet-swept. A full scan
    /// of one small tree (sled keeps no count); callers limit how often they ask.
    pub fn ceremony_count(&self) -> Result<usize, StoreError> {
        Ok(self.ceremonies.count())
    }

    /// Connect codes waiting to be exchanged (or to be swept).
    pub fn code_count(&self) -> Result<usize, StoreError> {
        Ok(self.connect_codes.count())
    }

    /// Removes every session, ceremony and connect code that has expired at `now`.
    /// Sessions expire `idle` seconds after last use or `absolute` after sign-in.
    pub fn sweep_expired(
        &self,
        now: UnixTime,
        idle: u64,
        absolute: u64,
    ) -> Result<Swept, StoreError> {
        Ok(Swept {
            sessions: self.sweep_sessions(now, idle, absolute)?,
            ceremonies: self.sweep_ceremonies(now)?,
            codes: self.sweep_codes(now)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::records::{CeremonyRecord, CodeRecord};
    use crate::store::StoreOptions;

    fn code(expires_at: UnixTime) -> CodeRecord {
        // Built from JSON so fields added later with defaults need no change here.
        serde_json::from_value(serde_json::json!({
            "user_id": "aaaaaaaaaaaaaaaa",
            "redirect_uri": "https://app.example/cb",
            "origin": "https://app.example",
            "code_challenge": "x",
            "app_name": "app",
            "models": null,
            "plan": null,
            "reuse_grant_id": null,
            "expires_at": expires_at,
        }))
        .unwrap()
    }

    fn ceremony(expires_at: UnixTime) -> CeremonyRecord {
        serde_json::from_value(serde_json::json!({
            "kind": "login",
            "state": "{}",
            "user_id": null,
            "name": null,
            "expires_at": expires_at,
        }))
        .unwrap()
    }

    #[test]
    fn expired_codes_and_ceremonies_are_swept_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        store.put_code("old", &code(100)).unwrap();
        store.put_code("new", &code(300)).unwrap();
        store.put_ceremony("old", &ceremony(100)).unwrap();
        store.put_ceremony("new", &ceremony(300)).unwrap();
        assert_eq!(
            (store.code_count().unwrap(), store.ceremony_count().unwrap()),
            (2, 2)
        );

        let swept = store.sweep_expired(200, 3600, 3600).unwrap();
        assert_eq!((swept.codes, swept.ceremonies), (1, 1));
        assert_eq!(
            (store.code_count().unwrap(), store.ceremony_count().unwrap()),
            (1, 1)
        );
        assert!(store.take_code("new").unwrap().is_some());
        assert!(store.take_ceremony("new").unwrap().is_some());
    }

    #[test]
    fn an_unreadable_session_is_swept_and_does_not_stop_the_other_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        store
            .sessions
            .tree()
            .insert("garbled", b"{not json")
            .unwrap();
        store.put_code("old", &code(100)).unwrap();
        store.put_ceremony("old", &ceremony(100)).unwrap();

        let swept = store.sweep_expired(200, 3600, 3600).unwrap();
        assert_eq!((swept.sessions, swept.codes, swept.ceremonies), (1, 1, 1));
        assert!(store.session("garbled").unwrap().is_none());
    }
}

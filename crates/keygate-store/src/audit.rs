//! The audit log: entries appended in time order (tree `audit`, keyed nanoseconds ‖
//! sequence) and, for entries that concern a person, a copy under that person (tree
//! `audit_by_user`, keyed user id ‖ nanoseconds ‖ sequence), so "this person's
//! entries" is one range scan too. Nothing here changes or removes an entry, except
//! [`SledStore::sweep_audit_before`], which a configured retention runs.

use keygate_core::audit::Action;
use keygate_core::ids::UserId;
use sled::Transactional;
use sled::transaction::TransactionResult;

use crate::StoreError;
use crate::records::AuditRecord;
use crate::store::SledStore;

/// Which entries a page of the log holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries that concern this person.
    pub user: Option<UserId>,
    pub action: Option<Action>,
    /// From this time on (nanoseconds, inclusive).
    pub from_ns: Option<u64>,
    /// Before this time (nanoseconds, exclusive).
    pub until_ns: Option<u64>,
}

/// Above every key of the log (keys are 16 bytes).
const END: [u8; 17] = [0xff; 17];

impl SledStore {
    /// Appends an entry (and its copy under the person it concerns) in one
    /// transaction; the store numbers it (`seq`, increasing across restarts). Returns
    /// the entry as stored. Not flushed: the caller flushes before answering.
    pub fn append_audit(&self, mut record: AuditRecord) -> Result<AuditRecord, StoreError> {
        record.seq = self.next_id()?;
        let key = record.key();
        let bytes = self.audit.encode(&record)?;
        let copy = record.user.as_ref().map(|u| user_key(u, &key));
        let _w = self.gate.write();
        let result: TransactionResult<(), ()> = (self.audit.tree(), self.audit_by_user.tree())
            .transaction(|(log, by_user)| {
                log.insert(&key[..], bytes.clone())?;
                if let Some(k) = &copy {
                    by_user.insert(k.as_slice(), bytes.clone())?;
                }
                Ok(())
            });
        result.map_err(|e| StoreError::Transaction(format!("{e:?}")))?;
        Ok(record)
    }

    /// Writes an entry exactly as given (`seq` included) with its per-person copy: an
    /// import, where the entry was numbered by the store it came from.
    pub(crate) fn put_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let key = record.key();
        let bytes = self.audit.encode(record)?;
        self.audit.tree().insert(&key[..], bytes.clone())?;
        if let Some(user) = &record.user {
            self.audit_by_user
                .tree()
                .insert(user_key(user, &key), bytes)?;
        }
        Ok(())
    }

    /// One page of the log, newest first, starting before the store key `after` (a
    /// cursor this function gave out for the same `user`; any other reaches nothing).
    pub fn audit_page(
        &self,
        q: &AuditQuery,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, Option<Vec<u8>>), StoreError> {
        let from = q.from_ns.unwrap_or(0).to_be_bytes();
        let until = q.until_ns.map(u64::to_be_bytes);
        let high: &[u8] = until.as_ref().map_or(&END[..], |u| &u[..]);
        let keep = |r: &AuditRecord| q.action.is_none_or(|a| a == r.action);
        match &q.user {
            None => self.audit.page_desc(&from, high, after, limit, keep),
            Some(user) => self.audit_by_user.page_desc(
                &user_key(user, &from),
                &user_key(user, high),
                after,
                limit,
                keep,
            ),
        }
    }

    /// Removes every entry from before `cutoff_ns` (and its per-person copy): the
    /// retention sweep. Returns how many entries it removed.
    pub fn sweep_audit_before(&self, cutoff_ns: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.audit.tree().range(..cutoff_ns.to_be_bytes()) {
            let (key, value) = item?;
            // An entry that does not read back is swept all the same (its copy, if
            // any, cannot be found without it and stays).
            let owner = self.audit.decode(&value).map(|r| r.user);
            let _w = self.gate.write();
            if let Ok(Some(user)) = owner {
                self.audit_by_user.tree().remove(user_key(&user, &key))?;
            }
            self.audit.tree().remove(key)?;
            n += 1;
        }
        Ok(n)
    }
}

/// `user id ‖ rest`: a key (or range bound) of the per-person copy.
fn user_key(user: &UserId, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + rest.len());
    k.extend_from_slice(user.as_str().as_bytes());
    k.extend_from_slice(rest);
    k
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use keygate_core::audit::Actor;

    use super::*;
    use crate::records::AuditTarget;
    use crate::store::StoreOptions;

    const S: u64 = 1_000_000_000;

    fn entry(at_s: u64, action: Action, user: Option<&UserId>) -> AuditRecord {
        AuditRecord {
            at_ns: at_s * S,
            seq: 0,
            action,
            actor: user.map_or(Actor::System, |u| Actor::Person(u.clone())),
            user: user.cloned(),
            target: Some(AuditTarget {
                kind: "grant".into(),
                id: "g".into(),
            }),
            source_ip: Some("203.0.113.9".into()),
            request_id: Some("req".into()),
            detail: serde_json::Map::new(),
        }
    }

    fn actions(v: &[AuditRecord]) -> Vec<(u64, Action)> {
        v.iter().map(|r| (r.at_ns / S, r.action)).collect()
    }

    #[test]
    fn the_log_pages_newest_first_per_person_and_by_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
        let (ann, bob) = (UserId::generate(), UserId::generate());
        let mut seqs = Vec::new();
        for (at, action, user) in [
            (10, Action::UserSignedUp, Some(&ann)),
            (10, Action::GrantCreated, Some(&ann)),
            (20, Action::UserSignedUp, Some(&bob)),
            (30, Action::AdminKeyCreated, None),
            (40, Action::GrantRevoked, Some(&ann)),
        ] {
            seqs.push(store.append_audit(entry(at, action, user)).unwrap().seq);
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

        let all = AuditQuery::default();
        let (page, next) = store.audit_page(&all, None, 2).unwrap();
        assert_eq!(
            actions(&page),
            [(40, Action::GrantRevoked), (30, Action::AdminKeyCreated)]
        );
        let (page, next) = store.audit_page(&all, next.as_deref(), 2).unwrap();
        assert_eq!(
            actions(&page),
            [(20, Action::UserSignedUp), (10, Action::GrantCreated)]
        );
        let (page, next) = store.audit_page(&all, next.as_deref(), 2).unwrap();
        assert_eq!(
            (actions(&page), next),
            (vec![(10, Action::UserSignedUp)], None)
        );

        // One person's entries; another person's cursor reaches nothing.
        let ann_q = AuditQuery {
            user: Some(ann.clone()),
            ..Default::default()
        };
        let (page, next) = store.audit_page(&ann_q, None, 2).unwrap();
        assert_eq!(
            actions(&page),
            [(40, Action::GrantRevoked), (10, Action::GrantCreated)]
        );
        let bob_q = AuditQuery {
            user: Some(bob.clone()),
            ..Default::default()
        };
        assert!(
            store
                .audit_page(&bob_q, next.as_deref(), 10)
                .unwrap()
                .0
                .is_empty()
        );
        // A cursor of the whole log does not reach into a person's copy either.
        let (_, whole_next) = store.audit_page(&all, None, 1).unwrap();
        assert!(
            store
                .audit_page(&ann_q, whole_next.as_deref(), 10)
                .unwrap()
                .0
                .is_empty()
        );

        // Time window (from inclusive, until exclusive) and action.
        let window = AuditQuery {
            from_ns: Some(10 * S),
            until_ns: Some(40 * S),
            ..Default::default()
        };
        assert_eq!(store.audit_page(&window, None, 10).unwrap().0.len(), 4);
        let signups = AuditQuery {
            action: Some(Action::UserSignedUp),
            from_ns: Some(11 * S),
            ..Default::default()
        };
        assert_eq!(
            actions(&store.audit_page(&signups, None, 10).unwrap().0),
            [(20, Action::UserSignedUp)]
        );
        let ann_window = AuditQuery {
            user: Some(ann.clone()),
            until_ns: Some(40 * S),
            ..Default::default()
        };
        assert_eq!(store.audit_page(&ann_window, None, 10).unwrap().0.len(), 2);

        // Retention: everything before 25 s goes, copies included.
        assert_eq!(store.sweep_audit_before(25 * S).unwrap(), 3);
        assert_eq!(store.audit_page(&all, None, 10).unwrap().0.len(), 2);
        assert_eq!(
            actions(&store.audit_page(&ann_q, None, 10).unwrap().0),
            [(40, Action::GrantRevoked)]
        );
        assert!(store.audit_page(&bob_q, None, 10).unwrap().0.is_empty());
    }

    #[test]
    fn entries_and_their_order_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let user = UserId::generate();
        let first = {
            let store = SledStore::open(dir.path(), &StoreOptions::default()).unwrap();
            store
                .append_audit(entry(5, Action::UserSignedUp, Some(&user)))
                .unwrap()
        };
        // sled's background flusher can hold the directory lock for a moment after the
        // drop (as in tests/store.rs).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match SledStore::open(dir.path(), &StoreOptions::default()) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other.unwrap(),
            }
        };
        let second = store
            .append_audit(entry(5, Action::UserSignedIn, Some(&user)))
            .unwrap();
        assert!(second.seq > first.seq);
        let (page, _) = store.audit_page(&AuditQuery::default(), None, 10).unwrap();
        assert_eq!(page, vec![second.clone(), first.clone()]);
        assert_eq!(first.id().len(), 32);
        assert!(second.id() > first.id());
    }
}

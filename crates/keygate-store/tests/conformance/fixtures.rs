//! Records to store, and a way to race tasks.

use std::future::Future;
use std::sync::Arc;

use keygate_core::audit::{Action, Actor};
use keygate_core::ids::{AdminKeyId, GrantId, KeyId, PasskeyId, UserId};
use keygate_core::scope::Scope;
use keygate_store::{
    AdminKeyRecord, AuditRecord, AuditTarget, CeremonyRecord, CodeRecord, GrantRecord, GrantState,
    OperatorKeyRecord, PasskeyInsert, PasskeyRecord, SessionRecord, Store, UsageCounts, UsageDelta,
    UserRecord, VaultRecord,
};

pub fn user_record() -> UserRecord {
    UserRecord {
        id: UserId::generate(),
        name: "Ada".into(),
        created_at: 10,
    }
}

/// A person, stored.
pub async fn user(store: &Store) -> UserRecord {
    let u = user_record();
    store.insert_user(&u).await.unwrap();
    u
}

pub fn grant_record(user: &UserId, created_at: u64) -> GrantRecord {
    GrantRecord {
        id: GrantId::generate(),
        user_id: user.clone(),
        name: "app".into(),
        origin: None,
        models: vec!["gpt-4o-mini".into()],
        state: GrantState::Active,
        secret_hash: "ab".repeat(32),
        created_at,
        last_used_at: None,
        revoked_at: None,
        expires_at: None,
        plan: None,
        scopes: vec![Scope::Inference, Scope::Files],
        limits: Default::default(),
        previous_secret_hash: None,
        previous_until: None,
    }
}

/// A grant of `user` (who must exist), stored.
pub async fn grant(store: &Store, user: &UserId, created_at: u64) -> GrantRecord {
    let g = grant_record(user, created_at);
    store.insert_grant(&g).await.unwrap();
    g
}

pub fn vault_record(user: &UserId, sealed: &str) -> VaultRecord {
    VaultRecord {
        user_id: user.clone(),
        key_id: KeyId::generate(),
        sealed: sealed.into(),
        kid: "mk-1".into(),
        last4: "WXYZ".into(),
        created_at: 11,
        last_validated_at: None,
        rejected_at: None,
    }
}

pub fn operator_key(sealed: &str, kid: &str) -> OperatorKeyRecord {
    OperatorKeyRecord {
        key_id: KeyId::generate(),
        sealed: sealed.into(),
        kid: kid.into(),
        updated_at: 7,
    }
}

pub fn admin_key(name: &str, created_at: u64) -> AdminKeyRecord {
    AdminKeyRecord {
        id: AdminKeyId::generate(),
        name: name.into(),
        scope: keygate_core::admin_scope::AdminScope::Write,
        secret_hash: "cd".repeat(32),
        created_at,
        expires_at: Some(99),
    }
}

pub fn passkey_record(user: &UserId, credential_id: &str) -> PasskeyRecord {
    PasskeyRecord {
        id: PasskeyId::generate(),
        user_id: user.clone(),
        name: "Passkey".into(),
        credential_id: credential_id.into(),
        passkey: "{}".into(),
        created_at: 1,
        last_used_at: None,
        sign_count: 0,
        backup_eligible: false,
        backup_state: false,
    }
}

/// A new person registered with a passkey of `credential_id`.
pub async fn registered(store: &Store, credential_id: &str) -> (UserRecord, PasskeyRecord) {
    let u = user_record();
    let pk = passkey_record(&u.id, credential_id);
    assert_eq!(
        store.insert_user_with_passkey(&u, &pk).await.unwrap(),
        PasskeyInsert::Inserted
    );
    (u, pk)
}

pub fn session_record(user: &UserId, created_at: u64) -> SessionRecord {
    SessionRecord {
        user_id: user.clone(),
        created_at,
        last_seen_at: created_at,
        fresh_until: created_at,
        public_id: format!("pub-{created_at}"),
        user_agent: Some("Firefox".into()),
        seq: 0,
    }
}

pub fn ceremony(user: Option<&UserId>, state: &str, expires_at: u64) -> CeremonyRecord {
    CeremonyRecord {
        kind: "reauth".into(),
        state: state.into(),
        user_id: user.cloned(),
        name: None,
        expires_at,
    }
}

pub fn code(user: &UserId, expires_at: u64) -> CodeRecord {
    // Built from JSON so fields added later with defaults need no change here.
    serde_json::from_value(serde_json::json!({
        "user_id": user, "redirect_uri": "https://app.example/cb",
        "origin": "https://app.example", "code_challenge": "x", "app_name": "app",
        "models": ["gpt-4o"], "plan": null, "reuse_grant_id": null, "expires_at": expires_at,
    }))
    .unwrap()
}

pub const S: u64 = 1_000_000_000;

/// An audit entry at `at_s` seconds (the store numbers it).
pub fn audit_entry(at_s: u64, action: Action, user: Option<&UserId>) -> AuditRecord {
    let mut detail = serde_json::Map::new();
    detail.insert("name".into(), serde_json::json!("app"));
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
        detail,
    }
}

pub fn delta(grant: &GrantId, day: u32, model: &str, n: u64) -> UsageDelta {
    UsageDelta {
        grant_id: grant.clone(),
        day,
        model: model.into(),
        counts: UsageCounts {
            requests: n,
            errors: n / 2,
            prompt_tokens: 10 * n,
            cached_tokens: n,
            completion_tokens: 20 * n,
            usd_nanos: 100 * n,
            estimated: n % 2,
        },
    }
}

/// Runs `n` tasks, released together by a barrier (each on the multi-threaded
/// runtime, so they really run at once), and returns their results in task order.
pub async fn race<T, F, Fut>(n: usize, task: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, work) = (barrier.clone(), task(i));
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

//! Issue 13, point 2: `GET /admin/backup` takes a point-in-time snapshot while keygate
//! serves; a restore into an empty directory holds every write acknowledged before the
//! snapshot, and a restore with the wrong master keyring is refused before anything is
//! written. (`keygate backup` / `keygate restore` themselves: crates/keygate/tests.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use keygate_core::ids::{GrantId, UserId};
use keygate_core::keyring::Keyring;
use keygate_server::services::backup::{self, RestoreError};
use keygate_store::{GrantState, Store, StoreOptions};
use keygate_testkit::{FAKE_OPENAI_KEY, TestApp, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_openai_error, chat, json_of};

/// A write the API acknowledged with a 2xx, and when.
#[derive(Clone, Debug)]
enum Ack {
    User(String),
    Key {
        user: String,
        key: String,
    },
    Grant {
        id: String,
        user: String,
        api_key: String,
    },
    Revoked(String),
}

async fn take_backup(app: &TestApp) -> Vec<u8> {
    let res = app
        .admin(Method::GET, "/admin/backup")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    assert!(res.headers().contains_key("x-keygate-backup-entries"));
    res.bytes().await.unwrap().to_vec()
}

/// One writer: people, their keys, grants, every third grant revoked; each 2xx noted
/// with the moment it arrived.
async fn writer(
    app: Arc<TestApp>,
    n: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(Instant, Ack)>>>,
) {
    let note = |a: Ack| acks.lock().unwrap().push((Instant::now(), a));
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let user = app.create_user(&format!("writer {n} #{i}")).await;
        note(Ack::User(user.clone()));
        let key = format!("sk-proj-backup-{n}-{i:06}-0123456789abcdefghijKEY{n}");
        assert_eq!(app.put_openai_key(&user, &key).await.status(), 204);
        note(Ack::Key {
            user: user.clone(),
            key,
        });
        let made = app.create_grant(&user, "app", None).await;
        let id = made["grant"]["id"].as_str().unwrap().to_owned();
        note(Ack::Grant {
            id: id.clone(),
            user: user.clone(),
            api_key: made["api_key"].as_str().unwrap().to_owned(),
        });
        if i % 3 == 0 {
            assert_eq!(app.revoke(&id).await.status(), 204);
            note(Ack::Revoked(id));
        }
    }
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_every_write_acked_before_it() {
    let app = Arc::new(spawn_app().await);
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|n| tokio::spawn(writer(app.clone(), n, stop.clone(), acks.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = Instant::now();
    let bytes = take_backup(&app).await;
    // Writes go on after the backup: they may or may not be in it, and nothing breaks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // Nothing secret in it: no OpenAI key, no grant key, no master key.
    let acks = acks.lock().unwrap().clone();
    let master = std::fs::read_to_string(app.data_dir.path().join("master.keys")).unwrap();
    let master_b64 = master.lines().last().unwrap().split_once(':').unwrap().1;
    let haystack = String::from_utf8_lossy(&bytes);
    assert!(!haystack.contains(master_b64));
    for (_, a) in &acks {
        match a {
            Ack::Key { key, .. } => assert!(!haystack.contains(key.as_str())),
            Ack::Grant { api_key, .. } => {
                let secret = api_key.rsplit('_').next().unwrap();
                assert!(!haystack.contains(secret));
            }
            _ => {}
        }
    }

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("restored");
    let keyring = app.state.keyring.current();
    let restored = backup::restore(&bytes, &data, &keyring, true).unwrap();
    assert!(restored.key_file_written);
    let store = Store::open(&data.join("store"), &StoreOptions::default()).unwrap();

    // Every write acknowledged before the backup was asked for is there, as acked.
    let acked_before: Vec<&Ack> = acks
        .iter()
        .filter(|(at, _)| *at < before)
        .map(|(_, a)| a)
        .collect();
    assert!(
        acked_before.len() >= 20,
        "only {} writes before the backup",
        acked_before.len()
    );
    let revoked_before: Vec<&String> = acked_before
        .iter()
        .filter_map(|a| match a {
            Ack::Revoked(id) => Some(id),
            _ => None,
        })
        .collect();
    for a in &acked_before {
        match a {
            Ack::User(id) => {
                assert!(
                    store
                        .user(&UserId::parse(id).unwrap())
                        .await
                        .unwrap()
                        .is_some(),
                    "{a:?}"
                );
            }
            Ack::Key { user, key } => {
                let user = UserId::parse(user).unwrap();
                let record = store.vault(&user).await.unwrap().expect("key restored");
                let opened =
                    keygate_server::services::vault::open_record(&keyring, &user, &record).unwrap();
                assert_eq!(opened.key.expose_secret(), key);
            }
            Ack::Grant { id, user, .. } => {
                let g = store
                    .grant(&GrantId::parse(id).unwrap())
                    .await
                    .unwrap()
                    .expect("grant restored");
                assert_eq!(g.user_id.as_str(), user);
                let want = if revoked_before.contains(&id) {
                    GrantState::Revoked
                } else {
                    g.state
                };
                assert_eq!(g.state, want);
            }
            Ack::Revoked(id) => {
                let g = store
                    .grant(&GrantId::parse(id).unwrap())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    g.state,
                    GrantState::Revoked,
                    "a revoke acked before the backup"
                );
            }
        }
    }
    drop(store);

    // The restored directory serves: a grant acked before the backup proxies with its
    // person's key; one revoked before it stays revoked.
    // Live: never revoked at all (a revoke acked after `before` may still be in the
    // backup, which is taken a moment later).
    let revoked_ever: Vec<&String> = acks
        .iter()
        .filter_map(|(_, a)| match a {
            Ack::Revoked(id) => Some(id),
            _ => None,
        })
        .collect();
    let (live, dead) = pick_grants(&acked_before, &revoked_ever, &revoked_before);
    let again = spawn_app_with(|c| c.data_dir = Some(data.clone())).await;
    let res = again.chat_completions(&live.1, &chat("gpt-4o")).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let seen = again.mock.requests();
    assert_eq!(
        seen.last().unwrap().header("authorization"),
        Some(format!("Bearer {}", live.2).as_str())
    );
    if let Some(dead) = dead {
        assert_openai_error(
            again.chat_completions(&dead, &chat("gpt-4o")).await,
            401,
            "revoked_api_key",
        )
        .await;
    }
}

/// A grant acked (and not revoked) before the backup, as (grant id, api key, its
/// person's OpenAI key); and a revoked one's api key.
fn pick_grants(
    acked: &[&Ack],
    revoked_ever: &[&String],
    revoked_before: &[&String],
) -> ((String, String, String), Option<String>) {
    let key_of = |user: &str| {
        acked.iter().find_map(|a| match a {
            Ack::Key { user: u, key } if u == user => Some(key.clone()),
            _ => None,
        })
    };
    let mut live = None;
    let mut dead = None;
    for a in acked {
        if let Ack::Grant { id, user, api_key } = a {
            if revoked_before.contains(&id) {
                dead = Some(api_key.clone());
            } else if revoked_ever.contains(&id) {
                continue;
            } else if let Some(key) = key_of(user) {
                live = Some((id.clone(), api_key.clone(), key));
            }
        }
    }
    (live.expect("a live grant before the backup"), dead)
}

#[tokio::test]
async fn a_restore_with_the_wrong_keyring_says_why_and_writes_nothing() {
    let app = spawn_app().await;
    app.enrolled_grant(None).await;
    let res = app
        .admin(Method::PUT, "/admin/operator-key")
        .json(&json!({"api_key": "sk-proj-operator-key-for-backup-0123456789OPRK"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let bytes = take_backup(&app).await;
    let kid = app.state.keyring.current().active_kid().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new");

    // Another keyring: the kid is not in it.
    let err = backup::restore(&bytes, &target, &Keyring::generate().unwrap(), true).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            RestoreError::WrongKeyring {
                failed: 2,
                total: 2,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("2 under {kid}: not in this keyring")),
        "{msg}"
    );
    assert!(msg.contains("nothing was written"), "{msg}");
    assert!(!msg.contains('\n'));
    assert!(!target.exists(), "nothing written");

    // A keyring with that kid but another key.
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
    let impostor = Keyring::parse(&format!("{kid}:{other}")).unwrap();
    let msg = backup::restore(&bytes, &target, &impostor, true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("a different key of that name"), "{msg}");
    assert!(!target.exists(), "nothing written");

    // A cut file, or a directory with something in it: refused, untouched.
    let cut = &bytes[..bytes.len() - 10];
    let keyring = app.state.keyring.current();
    assert!(
        backup::restore(cut, &target, &keyring, true)
            .unwrap_err()
            .to_string()
            .contains("damaged or incomplete")
    );
    assert!(!target.exists());
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("notes.txt"), "mine").unwrap();
    assert!(
        backup::restore(&bytes, &target, &keyring, true)
            .unwrap_err()
            .to_string()
            .contains("is not empty")
    );
    assert_eq!(
        std::fs::read_to_string(target.join("notes.txt")).unwrap(),
        "mine"
    );

    // The right keyring, into an empty directory: both sealed keys open.
    let fresh = dir.path().join("fresh");
    let done = backup::restore(&bytes, &fresh, &keyring, true).unwrap();
    assert_eq!(done.sealed_records, 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fresh.join("master.keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn only_an_admin_scope_key_takes_backups_or_sees_master_keys() {
    let app = spawn_app().await;
    app.enrolled_grant(None).await;
    for scope in ["read", "write"] {
        let made = json_of(
            app.admin(Method::POST, "/admin/keys")
                .json(&json!({"name": scope, "scope": scope}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        let key = made["key"].as_str().unwrap();
        for (method, path) in [
            (Method::GET, "/admin/backup"),
            (Method::GET, "/admin/master-keys"),
            (Method::POST, "/admin/master-keys"),
            (Method::GET, "/admin/%62ackup"),
        ] {
            let res = app
                .client
                .request(method.clone(), app.url(path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_openai_error(res, 403, "insufficient_scope").await;
        }
    }
    let res = app
        .client
        .get(app.url("/admin/backup"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A backup is an audited action.
    take_backup(&app).await;
    let log = json_of(
        app.admin(Method::GET, "/admin/audit?action=store.backed_up")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert!(!log.to_string().contains(FAKE_OPENAI_KEY));
}

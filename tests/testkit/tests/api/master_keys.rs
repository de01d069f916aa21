//! Issue 13, point 3: master-key rotation while serving. `POST /admin/master-keys` adds
//! a new active key (key file first, then memory); the background re-seal moves every
//! record to it with progress in `/metrics`; `DELETE /admin/master-keys/{kid}` refuses
//! the active key and a key records still use (naming how many), and succeeds after.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keygate_core::ids::{KeyId, UserId};
use keygate_core::keyring::Keyring;
use keygate_core::vault::{self, Binding};
use keygate_store::{UserRecord, VaultRecord};
use keygate_testkit::{FAKE_OPENAI_KEY, TestApp, spawn_app};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{assert_openai_error, chat, chat_stream, json_of};

const CLIENTS: usize = 16;
/// People with a key sealed straight into the store besides the 16 clients', so the
/// re-seal pass is long enough to run while the streams do.
const EXTRA_RECORDS: usize = 400;

async fn keys_view(app: &TestApp) -> Value {
    json_of(
        app.admin(Method::GET, "/admin/master-keys")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

fn records_of(view: &Value, kid: &str) -> u64 {
    view["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .map_or(0, |k| k["records"].as_u64().unwrap())
}

/// A person whose key is sealed with `keyring` and written straight into the store.
async fn seal_straight_in(app: &TestApp, keyring: &Keyring, i: usize) -> UserId {
    let user = UserRecord {
        id: UserId::generate(),
        name: format!("extra {i}"),
        created_at: 1,
    };
    app.state.store.insert_user(&user).await.unwrap();
    let binding = Binding {
        user_id: user.id.clone(),
        key_id: KeyId::generate(),
    };
    let key = keygate_core::secret::OpenAiKey::parse(FAKE_OPENAI_KEY).unwrap();
    let sealed = vault::seal(keyring, &binding, &key, None, None, 1).unwrap();
    let record = VaultRecord {
        user_id: user.id.clone(),
        key_id: binding.key_id,
        kid: sealed.kid().to_owned(),
        sealed: sealed.as_compact().to_owned(),
        last4: "WXYZ".into(),
        created_at: 1,
        last_validated_at: None,
        rejected_at: None,
    };
    app.state.store.put_vault(&user.id, &record).await.unwrap();
    user.id
}

/// One streaming client: whole streams, one after another, until told to stop. A
/// failure is anything but a 200 stream that ends with `[DONE]`.
async fn client(
    app: Arc<TestApp>,
    api_key: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::Relaxed) {
        let res = app
            .v1(Method::POST, "/chat/completions", &api_key)
            .header("x-mock-delay-ms", "5")
            .json(&chat_stream("gpt-4o"))
            .send()
            .await
            .unwrap();
        if res.status() != 200 {
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut body = Vec::new();
        let mut stream = res.bytes_stream();
        let mut broken = false;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(_) => broken = true,
            }
        }
        if broken || !String::from_utf8_lossy(&body).contains("data: [DONE]") {
            failed.fetch_add(1, Ordering::Relaxed);
        } else {
            ok.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test]
async fn rotation_while_16_clients_stream_fails_no_request_and_moves_every_record() {
    let app = Arc::new(spawn_app().await);
    let mut grants = Vec::new();
    for _ in 0..CLIENTS {
        grants.push(app.enrolled_grant(None).await);
    }
    let old = app.state.keyring.current();
    let old_kid = old.active_kid().to_owned();
    for i in 0..EXTRA_RECORDS {
        seal_straight_in(&app, &old, i).await;
    }
    let total = (CLIENTS + EXTRA_RECORDS) as u64;
    let view = keys_view(&app).await;
    assert_eq!(records_of(&view, &old_kid), total);
    assert_eq!(view["reseal_remaining"], 0);
    // The active key is never retired.
    let res = app
        .admin(Method::DELETE, &format!("/admin/master-keys/{old_kid}"))
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 409, "master_key_active").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = grants
        .iter()
        .map(|g| {
            tokio::spawn(client(
                app.clone(),
                g.api_key.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            ))
        })
        .collect();
    // Streams are under way before the rotation.
    let warm = Instant::now();
    while ok.load(Ordering::Relaxed) < CLIENTS && warm.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = ok.load(Ordering::Relaxed);

    let rotated = json_of(
        app.admin(Method::POST, "/admin/master-keys")
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let new_kid = rotated["active"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(rotated["source"], "file");
    // On disk before it is used: the key file names the new key first.
    let file = std::fs::read_to_string(app.data_dir.path().join("master.keys")).unwrap();
    let kids: Vec<&str> = file
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);

    // The background re-seal finishes while the clients go on streaming.
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let view = keys_view(&app).await;
        if view["reseal_remaining"] == 0 {
            break view;
        }
        assert!(Instant::now() < deadline, "re-seal did not finish: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(records_of(&view, &new_kid), total, "{view}");
    assert_eq!(records_of(&view, &old_kid), 0, "{view}");
    // Streams kept completing during and after the rotation.
    let during = ok.load(Ordering::Relaxed);
    let settle = Instant::now();
    while ok.load(Ordering::Relaxed) < during + CLIENTS
        && settle.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Retiring the old key now succeeds; streams go on.
    let res = app
        .admin(Method::DELETE, &format!("/admin/master-keys/{old_kid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed requests of {}", ok + failed);
    assert!(
        ok > before + CLIENTS,
        "streams completed: {before} before, {ok} in all"
    );

    let view = keys_view(&app).await;
    assert_eq!(view["keys"].as_array().unwrap().len(), 1, "{view}");
    let file = std::fs::read_to_string(app.data_dir.path().join("master.keys")).unwrap();
    assert!(!file.contains(&format!("{old_kid}:")));
    // Every person's key still opens (the proxy uses each client's stored key).
    for g in &grants {
        let res = app.chat_completions(&g.api_key, &chat("gpt-4o")).await;
        assert_eq!(res.status(), 200);
    }
    let seen = app.mock.requests();
    assert_eq!(
        seen.last().unwrap().header("authorization"),
        Some(format!("Bearer {FAKE_OPENAI_KEY}").as_str())
    );

    // Progress was reported: a counter of re-sealed records and a gauge back at 0.
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(value("keygate_reseal_remaining"), 0.0);
    assert_eq!(value("keygate_resealed_records_total"), total as f64);
    println!(
        "rotation under load: {CLIENTS} clients, {ok} streams completed ({} during the re-seal of {total} records), 0 failed",
        during - before
    );
}

/// Rotates through the admin API and waits for the re-seal pass to finish; the new
/// active kid.
async fn rotate_and_reseal(app: &TestApp) -> String {
    let rotated = json_of(
        app.admin(Method::POST, "/admin/master-keys")
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while keys_view(app).await["reseal_remaining"] != 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rotated["active"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn retire_refuses_while_records_use_the_key_and_names_how_many() {
    let app = spawn_app().await;
    app.enrolled_grant(None).await;
    let first = app.state.keyring.current();
    let first_kid = first.active_kid().to_owned();
    let second_kid = rotate_and_reseal(&app).await;
    // Two keys sealed under the first kid after the pass (as a restore could bring
    // back): the first kid is in use again.
    seal_straight_in(&app, &first, 1).await;
    seal_straight_in(&app, &first, 2).await;
    let res = app
        .admin(Method::DELETE, &format!("/admin/master-keys/{first_kid}"))
        .send()
        .await
        .unwrap();
    let body = assert_openai_error(res, 409, "master_key_in_use").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "2 sealed records still use master key {first_kid}"
        )),
        "{message}"
    );
    assert_eq!(records_of(&keys_view(&app).await, &first_kid), 2);
    // Unknown kids: 404.
    let res = app
        .admin(Method::DELETE, "/admin/master-keys/mk-nosuch")
        .send()
        .await
        .unwrap();
    assert_openai_error(res, 404, "not_found").await;

    // The next rotation's pass takes them too; then both older keys retire.
    let third_kid = rotate_and_reseal(&app).await;
    for kid in [&first_kid, &second_kid] {
        let res = app
            .admin(Method::DELETE, &format!("/admin/master-keys/{kid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{kid}");
    }
    let view = keys_view(&app).await;
    assert_eq!(view["active"], third_kid.as_str());
    assert_eq!(records_of(&view, &third_kid), 3);
    // Audited, by kid (never a key).
    let log = json_of(
        app.admin(Method::GET, "/admin/audit?action=master_key.retired")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(log.as_array().unwrap().len(), 2, "{log}");
}

#[tokio::test]
async fn a_keyring_from_the_environment_is_not_rotated_through_the_api() {
    let ring = Keyring::generate().unwrap();
    let text = ring.to_text().to_string();
    let app = keygate_testkit::spawn_app_with(|c| c.master_keys = Some(text.clone().into())).await;
    let res = app
        .admin(Method::POST, "/admin/master-keys")
        .send()
        .await
        .unwrap();
    let body = assert_openai_error(res, 409, "keyring_from_environment").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("KEYGATE_MASTER_KEYS")
    );
    assert_eq!(keys_view(&app).await["source"], "environment");
}

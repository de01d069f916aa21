//! A person's sealed key (JWE) tampered with, truncated, or swapped with parts of
//! another person's in the live store: it never opens, nothing is sent upstream with
//! any key, the other people are served throughout, and the record put back works
//! again (docs/SECURITY.md, "Hostile input"). Whole records copied between people or
//! between the vault and the operator's tree: proxy_vault.rs, operator_key.rs.

use keygate_core::ids::UserId;
use keygate_testkit::spawn_app;

use crate::helpers::{assert_openai_error, chat};

const VICTIM_KEY: &str = "sk-victim-key-000000000000000000000000";

/// The compact JWE's five parts, changed one way each.
fn variants(mine: &str, theirs: &str) -> Vec<(&'static str, String)> {
    let parts: Vec<&str> = mine.split('.').collect();
    let other: Vec<&str> = theirs.split('.').collect();
    assert_eq!(parts.len(), 5, "compact JWE");
    let with = |i: usize, v: &str| {
        let mut p = parts.clone();
        p[i] = v;
        p.join(".")
    };
    let flip = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        let mid = b.len() / 2;
        b[mid] = if b[mid] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    vec![
        ("a changed header", with(0, &flip(parts[0]))),
        ("a changed wrapped key", with(1, &flip(parts[1]))),
        ("a changed iv", with(2, &flip(parts[2]))),
        ("a changed ciphertext", with(3, &flip(parts[3]))),
        ("a changed tag", with(4, &flip(parts[4]))),
        (
            "truncated by one character",
            mine[..mine.len() - 1].to_owned(),
        ),
        ("truncated to four parts", parts[..4].join(".")),
        ("only the header", parts[0].to_owned()),
        ("empty", String::new()),
        ("not base64url", with(3, "!!!!")),
        ("another person's header", with(0, other[0])),
        ("another person's wrapped key", with(1, other[1])),
        ("another person's ciphertext and tag", {
            let mut p = parts.clone();
            p[3] = other[3];
            p[4] = other[4];
            p.join(".")
        }),
        ("another person's whole JWE", theirs.to_owned()),
    ]
}

#[tokio::test]
async fn tampered_truncated_and_swapped_jwes_never_open_nor_reach_the_upstream() {
    let app = spawn_app().await;
    let victim = app.enrolled_grant(None).await;
    assert_eq!(
        app.put_openai_key(&victim.user_id, VICTIM_KEY)
            .await
            .status(),
        204
    );
    let other = app.enrolled_grant(None).await;
    let bystander = app.bystander().await;
    let store = &app.state.store;
    let victim_id = UserId::parse(&victim.user_id).unwrap();
    let other_id = UserId::parse(&other.user_id).unwrap();
    let original = store.vault(&victim_id).await.unwrap().unwrap();
    let theirs = store.vault(&other_id).await.unwrap().unwrap().sealed;
    for (name, sealed) in variants(&original.sealed, &theirs) {
        let mut record = original.clone();
        record.sealed = sealed;
        store.put_vault(&victim_id, &record).await.unwrap();
        let res = app
            .chat_completions(&victim.api_key, &chat("gpt-4o-mini"))
            .await;
        let err = assert_openai_error(res, 500, "internal_error").await;
        assert!(!err.to_string().contains("sk-"), "{name}: {err}");
        // The other person's grant is untouched.
        let res = app
            .chat_completions(&other.api_key, &chat("gpt-4o-mini"))
            .await;
        assert_eq!(res.status(), 200, "{name}");
    }
    let victims = |app: &keygate_testkit::TestApp| {
        app.mock
            .requests()
            .iter()
            .filter(|r| r.header("authorization") == Some(&format!("Bearer {VICTIM_KEY}")[..]))
            .count()
    };
    assert_eq!(victims(&app), 0, "a tampered record was opened and used");
    // Nothing lost: the record put back opens again.
    store.put_vault(&victim_id, &original).await.unwrap();
    let res = app
        .chat_completions(&victim.api_key, &chat("gpt-4o-mini"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(victims(&app), 1);
    bystander.finish(&app, 5).await;
}

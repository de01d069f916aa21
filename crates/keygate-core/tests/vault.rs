//! Seal/open and every tamper case the design names.

// Integration-test helpers are test code too; clippy only exempts #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::CoreError;
use keygate_core::ids::{KeyId, UserId};
use keygate_core::keyring::Keyring;
use keygate_core::secret::OpenAiKey;
use keygate_core::vault::{self, Binding, OPERATOR_SUBJECT, OperatorBinding, SealedKey};
use proptest::prelude::*;

fn binding() -> Binding {
    Binding {
        user_id: UserId::generate(),
        key_id: KeyId::generate(),
    }
}

fn key() -> OpenAiKey {
    OpenAiKey::parse("sk-proj-test-0123456789abcdefXYZW").unwrap()
}

/// Re-encodes the protected header with `edit` applied, keeping the other four parts.
fn with_header(
    compact: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> SealedKey {
    let parts: Vec<&str> = compact.split('.').collect();
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    edit(&mut header);
    let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    SealedKey::from_compact(format!(
        "{h}.{}.{}.{}.{}",
        parts[1], parts[2], parts[3], parts[4]
    ))
    .unwrap()
}

#[test]
fn round_trip_keeps_key_and_metadata() {
    let ring = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&ring, &b, &key(), Some("org-1"), None, 1_700_000_000).unwrap();
    assert_eq!(sealed.kid(), ring.active_kid());
    assert!(!sealed.as_compact().contains("sk-proj"));
    let again = SealedKey::from_compact(sealed.as_compact().to_owned()).unwrap();
    let open = vault::open(&ring, &again, &b).unwrap();
    assert_eq!(open.key.expose_secret(), key().expose_secret());
    assert_eq!(open.org.as_deref(), Some("org-1"));
    assert_eq!(open.project, None);
    assert_eq!(open.issued_at, 1_700_000_000);
    assert!(!format!("{sealed:?}").contains(sealed.as_compact()));
}

#[test]
fn header_is_what_the_design_says() {
    let ring = Keyring::generate().unwrap();
    let sealed = vault::seal(&ring, &binding(), &key(), None, None, 1).unwrap();
    let h: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(sealed.as_compact().split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(h["alg"], "A256GCMKW");
    assert_eq!(h["enc"], "A256GCM");
    assert_eq!(h["kid"], ring.active_kid());
    assert_eq!(h["typ"], "JWT");
}

#[test]
fn copied_to_another_record_fails() {
    let ring = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&ring, &b, &key(), None, None, 1).unwrap();
    let other_user = Binding {
        user_id: UserId::generate(),
        key_id: b.key_id.clone(),
    };
    let other_key = Binding {
        user_id: b.user_id.clone(),
        key_id: KeyId::generate(),
    };
    for wrong in [other_user, other_key] {
        assert!(matches!(
            vault::open(&ring, &sealed, &wrong),
            Err(CoreError::Unseal("sealed for another record"))
        ));
    }
}

/// The operator's key is bound to a subject no user id can spell: a person's record
/// never opens as the operator's, nor the operator's as any person's, even with the same
/// key id.
#[test]
fn operator_and_person_records_never_open_as_each_other() {
    assert!(UserId::parse(OPERATOR_SUBJECT).is_err());
    let ring = Keyring::generate().unwrap();
    let person = binding();
    let operator = OperatorBinding {
        key_id: person.key_id.clone(),
    };
    let sealed_op = vault::seal(&ring, &operator, &key(), None, None, 1).unwrap();
    let open = vault::open(&ring, &sealed_op, &operator).unwrap();
    assert_eq!(open.key.expose_secret(), key().expose_secret());
    assert!(matches!(
        vault::open(&ring, &sealed_op, &person),
        Err(CoreError::Unseal("sealed for another record"))
    ));
    let sealed_person = vault::seal(&ring, &person, &key(), None, None, 1).unwrap();
    assert!(matches!(
        vault::open(&ring, &sealed_person, &operator),
        Err(CoreError::Unseal("sealed for another record"))
    ));
    let other_key = OperatorBinding {
        key_id: KeyId::generate(),
    };
    assert!(vault::open(&ring, &sealed_op, &other_key).is_err());
}

#[test]
fn changed_header_fails() {
    let ring = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&ring, &b, &key(), None, None, 1).unwrap();
    let changed = with_header(sealed.as_compact(), |h| {
        h.insert("typ".into(), "JWE".into());
    });
    assert!(vault::open(&ring, &changed, &b).is_err());
}

#[test]
fn alg_none_dir_and_other_enc_fail() {
    let ring = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&ring, &b, &key(), None, None, 1).unwrap();
    for (name, value) in [
        ("alg", "none"),
        ("alg", "dir"),
        ("alg", "A128GCMKW"),
        ("enc", "A128GCM"),
    ] {
        let bad = with_header(sealed.as_compact(), |h| {
            h.insert(name.into(), value.into());
        });
        let err = vault::open(&ring, &bad, &b).unwrap_err();
        assert!(matches!(err, CoreError::Unseal(_)), "{name}={value}: {err}");
    }
}

#[test]
fn zip_is_refused() {
    let ring = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&ring, &b, &key(), None, None, 1).unwrap();
    let bad = with_header(sealed.as_compact(), |h| {
        h.insert("zip".into(), "DEF".into());
    });
    assert!(matches!(
        vault::open(&ring, &bad, &b),
        Err(CoreError::Unseal("compression (zip) is not allowed"))
    ));
}

#[test]
fn unknown_crit_is_refused() {
    let ring = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&ring, &b, &key(), None, None, 1).unwrap();
    let bad = with_header(sealed.as_compact(), |h| {
        h.insert("crit".into(), serde_json::json!(["exp"]));
        h.insert("exp".into(), 1.into());
    });
    assert!(matches!(
        vault::open(&ring, &bad, &b),
        Err(CoreError::Unseal(
            "critical header extensions are not supported"
        ))
    ));
}

#[test]
fn foreign_kid_fails() {
    let ring = Keyring::generate().unwrap();
    let foreign = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&foreign, &b, &key(), None, None, 1).unwrap();
    assert!(matches!(
        vault::open(&ring, &sealed, &b),
        Err(CoreError::UnknownKid(_))
    ));
    // Same kid name, different key material: the key-wrap tag fails.
    let text = foreign
        .to_text()
        .replace(foreign.active_kid(), ring.active_kid());
    let impostor = Keyring::parse(&text).unwrap();
    let sealed = vault::seal(&impostor, &b, &key(), None, None, 1).unwrap();
    assert!(vault::open(&ring, &sealed, &b).is_err());
}

#[test]
fn rotation_opens_old_records_and_flags_them() {
    let mut ring = Keyring::generate().unwrap();
    let b = binding();
    let old = vault::seal(&ring, &b, &key(), None, None, 1).unwrap();
    assert!(!old.needs_reseal(&ring));
    ring.add_generated().unwrap();
    assert!(old.needs_reseal(&ring));
    assert!(vault::open(&ring, &old, &b).is_ok());
    let new = vault::seal(&ring, &b, &key(), None, None, 2).unwrap();
    assert_eq!(new.kid(), ring.active_kid());
}

#[test]
fn garbage_is_refused_without_panicking() {
    for bad in ["", "a.b.c.d.e", "....", "not a jwe", "eyJ9.a.b.c.d"] {
        let _ = SealedKey::from_compact(bad.to_owned());
    }
}

/// Opens the JWE with RustCrypto's aes-gcm following RFC 7518 §4.7 and RFC 7516 §5.2:
/// proves the record is standard JWE that any implementation can read with the key.
#[test]
fn interoperates_with_an_independent_aes_gcm() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::{Aes256Gcm, Nonce};

    let ring = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&ring, &b, &key(), None, Some("proj_1"), 7).unwrap();
    let master = URL_SAFE_NO_PAD
        .decode(
            ring.to_text()
                .lines()
                .last()
                .unwrap()
                .split_once(':')
                .unwrap()
                .1,
        )
        .unwrap();
    let parts: Vec<&str> = sealed.as_compact().split('.').collect();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let d = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();

    // Unwrap the content-encryption key: AES-256-GCM under the master key, iv and tag
    // from the header, empty AAD.
    let kek = Aes256Gcm::new_from_slice(&master).unwrap();
    let mut wrapped = d(parts[1]);
    wrapped.extend(d(header["tag"].as_str().unwrap()));
    let iv = d(header["iv"].as_str().unwrap());
    let cek = kek
        .decrypt(
            &Nonce::try_from(iv.as_slice()).unwrap(),
            Payload {
                msg: &wrapped,
                aad: b"",
            },
        )
        .unwrap();

    // Decrypt the content: AAD is the ASCII of the encoded protected header.
    let content = Aes256Gcm::new_from_slice(&cek).unwrap();
    let mut ct = d(parts[3]);
    ct.extend(d(parts[4]));
    let iv = d(parts[2]);
    let plain = content
        .decrypt(
            &Nonce::try_from(iv.as_slice()).unwrap(),
            Payload {
                msg: &ct,
                aad: parts[0].as_bytes(),
            },
        )
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(claims["sub"], b.user_id.as_str());
    assert_eq!(claims["jti"], b.key_id.as_str());
    assert_eq!(claims["key"], key().expose_secret());
    assert_eq!(claims["project"], "proj_1");
    assert_eq!(claims["iat"], 7);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_printable_key_round_trips(raw in "[!-~]{1,200}") {
        let ring = Keyring::generate().unwrap();
        let b = binding();
        let k = OpenAiKey::parse(&raw).unwrap();
        let sealed = vault::seal(&ring, &b, &k, None, None, 3).unwrap();
        let open = vault::open(&ring, &sealed, &b).unwrap();
        prop_assert_eq!(open.key.expose_secret(), raw.as_str());
    }

    #[test]
    fn any_single_character_change_fails_to_open(pos_frac in 0.0f64..1.0, c in proptest::char::range('0', 'z')) {
        let ring = Keyring::generate().unwrap();
        let b = binding();
        let sealed = vault::seal(&ring, &b, &key(), None, None, 3).unwrap();
        let mut bytes = sealed.as_compact().as_bytes().to_vec();
        let pos = ((bytes.len() - 1) as f64 * pos_frac) as usize;
        prop_assume!(bytes[pos] != c as u8 && bytes[pos] != b'.');
        bytes[pos] = c as u8;
        let tampered = String::from_utf8(bytes).unwrap();
        let opened = SealedKey::from_compact(tampered).and_then(|s| vault::open(&ring, &s, &b));
        prop_assert!(opened.is_err());
    }
}

/// Found by the fuzz target `jwe` (tests/fuzz): OpenSSL's AES-GCM checks as many tag
/// bytes as it is given, so a JWE whose tag was cut to 12 or 6 bytes used to open —
/// and a short tag can be forged by trying (1 in 2^48 for 6 bytes, in fewer tries
/// the shorter it is). Every part now has its exact length before anything is decrypted.
#[test]
fn a_truncated_or_padded_part_fails_before_decrypting() {
    let ring = Keyring::generate().unwrap();
    let b = binding();
    let sealed = vault::seal(&ring, &b, &key(), None, None, 1).unwrap();
    let c = sealed.as_compact();
    let parts: Vec<&str> = c.split('.').collect();
    let with_part = |i: usize, part: &str| {
        let mut p = parts.clone();
        p[i] = part;
        SealedKey::from_compact(p.join(".")).unwrap()
    };
    // The content tag (16 bytes), cut to 12, 8, 6 and 4 bytes, or grown to 17.
    for n in [16usize, 11, 8, 6] {
        let cut = &parts[4][..n];
        let err = vault::open(&ring, &with_part(4, cut), &b).unwrap_err();
        assert!(matches!(err, CoreError::Unseal(_)), "{n}: {err:?}");
    }
    let longer = URL_SAFE_NO_PAD.encode([0u8; 17]);
    assert!(vault::open(&ring, &with_part(4, &longer), &b).is_err());
    // The content iv (12 bytes) and the wrapped key (32 bytes), cut or grown.
    for (i, len) in [(2usize, 12usize), (1, 32)] {
        for wrong in [len - 4, len + 4] {
            let part = URL_SAFE_NO_PAD.encode(vec![7u8; wrong]);
            assert!(vault::open(&ring, &with_part(i, &part), &b).is_err());
        }
    }
    // The key wrap's own iv and tag in the header.
    let h: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    for (name, cut) in [("tag", 16usize), ("tag", 8), ("iv", 8)] {
        let short = h[name].as_str().unwrap()[..cut].to_owned();
        let s = with_header(c, |m| {
            m.insert(name.into(), short.clone().into());
        });
        assert!(vault::open(&ring, &s, &b).is_err(), "{name} cut to {cut}");
    }
    // Untouched, it opens.
    assert!(vault::open(&ring, &sealed, &b).is_ok());
}

//! Opening a sealed vault record (`vault::open`), the path every proxied request takes.
//!
//! Seeds: one person's record sealed under the active master key, the same person's
//! key under an older key of the ring, another person's record, the operator's, and a
//! record sealed by a foreign keyring. A case edits one of them (characters, parts
//! swapped between records, truncation, a re-encoded header with an added, removed or
//! changed parameter) or is raw bytes.
//!
//! Invariants: nothing panics; `open` returns a key only for a JWE that is exactly one
//! the keyring sealed for that very record, and then the key sealed in it. Every other
//! input — tampered, truncated, re-encoded, swapped, sealed for another record or by
//! another keyring — is refused.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::ids::{KeyId, UserId};
use keygate_core::keyring::Keyring;
use keygate_core::secret::OpenAiKey;
use keygate_core::vault::{self, Binding, OperatorBinding, SealedKey};

use crate::Input;

const KEY: &str = "sk-proj-fuzz-0123456789abcdefghijklmnopqrstuvwxyzXYZW";

/// What `open` is tried with: a record's binding and the JWE it legitimately holds.
struct Seed {
    compact: String,
    binding: Which,
}

#[derive(Clone)]
enum Which {
    Person(Binding),
    Operator(OperatorBinding),
}

struct Fixture {
    ring: Keyring,
    seeds: Vec<Seed>,
    /// Sealed by a keyring this one does not hold (same kid names are irrelevant).
    foreign: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = OpenAiKey::parse(KEY).expect("a valid key");
        let mut ring = Keyring::generate().expect("keyring");
        let person = Binding {
            user_id: UserId::generate(),
            key_id: KeyId::generate(),
        };
        let other = Binding {
            user_id: UserId::generate(),
            key_id: KeyId::generate(),
        };
        let operator = OperatorBinding {
            key_id: KeyId::generate(),
        };
        let old = vault::seal(&ring, &person, &key, Some("org-1"), None, 1).expect("seal");
        ring.add_generated().expect("rotate");
        let seal = |b: &dyn Fn() -> Result<SealedKey, keygate_core::CoreError>| {
            b().expect("seal").as_compact().to_owned()
        };
        let seeds = vec![
            Seed {
                compact: seal(&|| vault::seal(&ring, &person, &key, None, Some("p"), 2)),
                binding: Which::Person(person.clone()),
            },
            Seed {
                compact: old.as_compact().to_owned(),
                binding: Which::Person(person.clone()),
            },
            Seed {
                compact: seal(&|| vault::seal(&ring, &other, &key, None, None, 3)),
                binding: Which::Person(other.clone()),
            },
            Seed {
                compact: seal(&|| vault::seal(&ring, &operator, &key, None, None, 4)),
                binding: Which::Operator(operator.clone()),
            },
        ];
        let stranger = Keyring::generate().expect("keyring");
        let foreign = vault::seal(&stranger, &person, &key, None, None, 5)
            .expect("seal")
            .as_compact()
            .to_owned();
        Fixture {
            ring,
            seeds,
            foreign,
        }
    })
}

/// One fuzz case.
pub fn check(data: &[u8]) {
    let f = fixture();
    let mut input = Input::new(data);
    let seed = &f.seeds[input.below(f.seeds.len())];
    // Which record the result is opened as: usually the seed's own.
    let as_record = if input.byte() < 200 {
        seed.binding.clone()
    } else {
        f.seeds[input.below(f.seeds.len())].binding.clone()
    };
    let candidate = match input.byte() % 8 {
        0 => String::from_utf8_lossy(input.rest()).into_owned(),
        1 => swap_parts(seed, f, &mut input),
        2 | 3 => edit_header(&seed.compact, &mut input),
        _ => edit_chars(&seed.compact, &mut input),
    };
    open_and_check(f, &candidate, &as_record);
}

fn open_and_check(f: &Fixture, compact: &str, as_record: &Which) {
    let Ok(sealed) = SealedKey::from_compact(compact.to_owned()) else {
        return;
    };
    let opened = match as_record {
        Which::Person(b) => vault::open(&f.ring, &sealed, b),
        Which::Operator(b) => vault::open(&f.ring, &sealed, b),
    };
    let Ok(opened) = opened else { return };
    let legit = f
        .seeds
        .iter()
        .any(|s| s.compact == compact && same(&s.binding, as_record));
    assert!(
        legit,
        "a JWE that is not one sealed for this record opened: {compact}"
    );
    assert_eq!(opened.key.expose_secret(), KEY);
}

fn same(a: &Which, b: &Which) -> bool {
    match (a, b) {
        (Which::Person(x), Which::Person(y)) => x == y,
        (Which::Operator(x), Which::Operator(y)) => x == y,
        _ => false,
    }
}

/// Replaces some of the seed's five parts with the same part of another record
/// (or the foreign keyring's), or reorders, drops or repeats parts.
fn swap_parts(seed: &Seed, f: &Fixture, input: &mut Input<'_>) -> String {
    let mut parts: Vec<String> = seed.compact.split('.').map(str::to_owned).collect();
    for _ in 0..1 + input.below(3) {
        let i = input.below(parts.len().max(1));
        match input.byte() % 4 {
            0 => {
                let donor = if input.bool() {
                    f.foreign.as_str()
                } else {
                    f.seeds[input.below(f.seeds.len())].compact.as_str()
                };
                if let (Some(slot), Some(part)) = (parts.get_mut(i), donor.split('.').nth(i)) {
                    *slot = part.to_owned();
                }
            }
            1 => {
                let j = input.below(parts.len().max(1));
                if i < parts.len() && j < parts.len() {
                    parts.swap(i, j);
                }
            }
            2 if i < parts.len() => {
                parts.remove(i);
            }
            _ if i < parts.len() => {
                let p = parts[i].clone();
                parts.insert(i, p);
            }
            _ => {}
        }
    }
    parts.join(".")
}

/// Decodes the protected header, changes it, and re-encodes it (valid base64url and,
/// mostly, valid JSON): what an attacker with write access to the store would try.
fn edit_header(compact: &str, input: &mut Input<'_>) -> String {
    let mut parts: Vec<&str> = compact.split('.').collect();
    let Some(Ok(raw)) = parts.first().map(|h| URL_SAFE_NO_PAD.decode(h)) else {
        return compact.to_owned();
    };
    let Ok(serde_json::Value::Object(mut header)) = serde_json::from_slice(&raw) else {
        return compact.to_owned();
    };
    const NAMES: [&str; 11] = [
        "alg", "enc", "kid", "typ", "iv", "tag", "zip", "crit", "jku", "x5u", "cty",
    ];
    const VALUES: [&str; 10] = [
        "A256GCMKW",
        "A256GCM",
        "none",
        "dir",
        "A128GCMKW",
        "DEF",
        "JWT",
        "",
        "A128GCM",
        "RSA-OAEP",
    ];
    let new_json = match input.byte() % 5 {
        // Raw bytes as the whole header.
        0 => input.bytes(200).to_vec(),
        1 => {
            header.remove(NAMES[input.below(NAMES.len())]);
            serde_json::to_vec(&header).unwrap_or_default()
        }
        2 => {
            let name = NAMES[input.below(NAMES.len())];
            let value = if input.bool() {
                serde_json::Value::String(VALUES[input.below(VALUES.len())].to_owned())
            } else {
                // Another kid of the ring, or the seed's own value re-typed.
                match input.byte() % 3 {
                    0 => serde_json::json!(["alg"]),
                    1 => serde_json::json!(1),
                    _ => serde_json::Value::Null,
                }
            };
            header.insert(name.to_owned(), value);
            serde_json::to_vec(&header).unwrap_or_default()
        }
        3 => {
            // The same header with its members in another order (another AAD).
            let mut members: Vec<_> = header.into_iter().collect();
            let n = members.len();
            if n > 1 {
                members.rotate_left(1 + input.below(n - 1));
            }
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::Value::String(k.clone()), v))
                .collect();
            format!("{{{}}}", body.join(",")).into_bytes()
        }
        _ => {
            // A duplicated member: which one a parser keeps is its choice.
            let mut text = String::from_utf8_lossy(&raw).into_owned();
            let name = NAMES[input.below(3)];
            let value = VALUES[input.below(VALUES.len())];
            if text.ends_with('}') {
                text.pop();
                text.push_str(&format!(",\"{name}\":\"{value}\"}}"));
            }
            text.into_bytes()
        }
    };
    let encoded = URL_SAFE_NO_PAD.encode(new_json);
    if let Some(h) = parts.first_mut() {
        *h = &encoded;
    }
    parts.join(".")
}

/// Up to four character edits anywhere in the compact form.
fn edit_chars(compact: &str, input: &mut Input<'_>) -> String {
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut t = compact.as_bytes().to_vec();
    for _ in 0..1 + input.below(4) {
        let at = input.below(t.len() + 1);
        match input.byte() % 6 {
            0 | 1 if at < t.len() => t[at] = B64URL[input.below(B64URL.len())],
            2 if at < t.len() => t[at] ^= 1 << (input.byte() % 8),
            3 => t.insert(at, B64URL[input.below(B64URL.len())]),
            4 if at < t.len() => {
                t.remove(at);
            }
            _ => t.truncate(at),
        }
    }
    String::from_utf8_lossy(&t).into_owned()
}

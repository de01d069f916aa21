//! How long it takes to open one vault record: the proxy does this on every request.

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_core::ids::{KeyId, UserId};
use keygate_core::keyring::Keyring;
use keygate_core::secret::OpenAiKey;
use keygate_core::vault::{self, Binding};
use std::hint::black_box;

fn unseal(c: &mut Criterion) {
    let Ok(ring) = Keyring::generate() else {
        return;
    };
    let binding = Binding {
        user_id: UserId::generate(),
        key_id: KeyId::generate(),
    };
    let Ok(key) =
        OpenAiKey::parse("sk-proj-bench-0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ")
    else {
        return;
    };
    let Ok(sealed) = vault::seal(&ring, &binding, &key, None, None, 1) else {
        return;
    };
    c.bench_function("unseal", |b| {
        b.iter(|| vault::open(black_box(&ring), black_box(&sealed), black_box(&binding)).is_ok())
    });
    c.bench_function("seal", |b| {
        b.iter(|| vault::seal(black_box(&ring), &binding, &key, None, None, 1).is_ok())
    });
}

criterion_group!(benches, unseal);
criterion_main!(benches);

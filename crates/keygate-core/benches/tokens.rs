//! How long the reservation's prompt count takes: the proxy runs it on every request
//! of a grant with a token or USD limit, before forwarding.

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_core::tokens;
use serde_json::{Value, json};
use std::hint::black_box;

fn small() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France? Answer in one word."},
    ], "max_tokens": 50})
}

/// About 10 KB of English prose over a few turns.
fn ten_kb() -> Value {
    let para = "The quick brown fox jumps over the lazy dog while the committee reviews \
                the quarterly numbers, and nobody can agree on what the figures mean. ";
    let turn = para.repeat(16); // ~2.5 KB
    let messages: Vec<Value> = (0..4)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": turn}))
        .collect();
    json!({"model": "gpt-4o", "messages": messages})
}

fn estimate(c: &mut Criterion) {
    tokens::preload();
    let s = small();
    let t = ten_kb();
    c.bench_function("estimate_prompt small chat", |b| {
        b.iter(|| tokens::estimate_prompt(black_box("gpt-4o-mini"), black_box(&s)))
    });
    c.bench_function("estimate_prompt 10 KB chat", |b| {
        b.iter(|| tokens::estimate_prompt(black_box("gpt-4o"), black_box(&t)))
    });
    c.bench_function("tokenizer load (o200k_base)", |b| {
        b.iter(|| tiktoken_rs::o200k_base().is_ok())
    });
}

criterion_group!(benches, estimate);
criterion_main!(benches);

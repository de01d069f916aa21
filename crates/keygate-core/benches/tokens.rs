//! How long the reservation's prompt count takes: the proxy runs it on every request
//! of a grant with a token or USD limit, before forwarding.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use keygate_core::tokens;
use keygate_core::usage::SseScanner;
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

/// A 200-chunk chat stream with `include_usage`, as OpenAI sends it.
fn chat_stream() -> Vec<Bytes> {
    let head = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
    let usage = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":200,"total_tokens":219}}"#;
    let mut events: Vec<Bytes> = (0..200)
        .map(|_| Bytes::from(format!("data: {head}\n\n")))
        .collect();
    events.push(Bytes::from(format!("data: {usage}\n\n")));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn scan(c: &mut Criterion) {
    let events = chat_stream();
    for (name, strip) in [
        ("sse 200 chunks pass-through", false),
        ("sse 200 chunks strip", true),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let mut s = SseScanner::new(strip);
                let n: usize = events.iter().map(|e| s.feed(e.clone()).len()).sum();
                black_box((n, s.finish(), s.usage()))
            })
        });
    }
}

criterion_group!(benches, estimate, scan);
criterion_main!(benches);

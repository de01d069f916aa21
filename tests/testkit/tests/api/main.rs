//! keygate's HTTP integration tests: one binary (zero2prod/kanidm style), each module
//! a part of the public interface, each test against the real server on a port with its
//! own sled directory and its own mock OpenAI upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod admin_keys;
mod anonymous;
mod audit;
mod backup;
mod byok;
mod cluster;
mod connect;
mod extractors;
mod grant_attacks;
mod grant_cache;
mod grant_lifecycle;
mod health;
mod helpers;
mod hostile_http;
mod hostile_slow;
mod hostile_upstream;
mod hostile_vault;
mod key_info;
mod limits;
mod master_keys;
mod metrics;
mod openapi;
mod operator_key;
mod passkeys;
mod plans;
mod proxy_auth;
mod proxy_forward;
mod proxy_limits;
mod proxy_stream;
mod proxy_vault;
mod reports;
mod scopes;
mod sessions;
mod usage;

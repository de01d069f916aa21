//! Test support for keygate: [`spawn_app`] boots the real application on port 0 with a
//! temp data dir and a [`mock_openai::MockOpenAi`] upstream that speaks OpenAI's wire
//! format (JSON and SSE, with knobs for delays, errors and broken streams).
// Test support: failing loudly on a broken fixture is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod app;
pub mod browser;
pub mod bystander;
pub mod clock_control;
pub mod cluster;
pub mod mock_openai;
pub mod raw;
pub mod soft_passkey;

pub use app::{
    ADMIN_KEY, FAKE_OPENAI_KEY, MOCK_FORWARD_HEADERS, TestApp, TestGrant, manual_clock,
    open_store_when_free, spawn_app, spawn_app_with, spawn_app_with_clock,
};

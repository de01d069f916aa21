//! Service functions: the logic behind routes, free of HTTP types. Each validates its
//! input into domain types, does its store work, and flushes security-relevant writes
//! before returning.

pub mod account;
pub mod admin;
pub mod connect;
pub mod error;
pub mod grants;
pub mod users;
pub mod vault;

//! Service functions: the logic behind routes, free of actix types. Each validates its
//! input into domain types, does its store work, and flushes security-relevant writes
//! before returning. What they refuse is a [`error::ServiceError`]; `crate::error`
//! alone turns it into a status and an OpenAI `code`.

pub mod account;
pub mod admin;
pub mod admin_keys;
pub mod audit;
pub mod backup;
pub mod connect;
pub mod error;
pub mod grants;
pub mod master_keys;
pub mod operator_key;
pub mod reports;
pub mod usage;
pub mod users;
pub mod vault;

//! keygate's pure core.
//!
//! Everything here is deterministic given its inputs (randomness and time are passed in
//! or drawn from the OS RNG only when minting fresh material) and does no I/O: no
//! actix, no sled, no reqwest. The server and the store build on these types.
//!
//! * [`keyring`] — the master keyring (key-encryption keys with a `kid`).
//! * [`vault`] — sealing a person's OpenAI key into a compact JWE bound to its record.
//! * [`token`] — the `kg_<grant>_<secret><checksum>` grant token format.
//! * [`ids`] — typed identifiers for users, grants and vault keys.
//! * [`secret`] — secret newtypes whose `Debug` never prints the secret.
//! * [`openai_error`] — errors in OpenAI's wire shape.
//! * [`scope`] — endpoint scopes: canonical `/v1` paths, what each endpoint needs, and
//!   which calls must name their model.
//! * [`content_type`] — a request's `Content-Type`, accepted only in a form every
//!   parser reads alike.
//! * [`key_verdict`] — what an upstream 401/403 says about the person's key.
//! * [`audit`] — the audit log's actions and actors.
//! * [`policy`] — may this call go ahead: rate buckets, concurrency, budget reservations.
//! * [`limits`], [`calendar`], [`money`], [`price`], [`usage`] — a grant's limits,
//!   budget periods on the UTC calendar, exact money, model prices, token usage.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod admin_scope;
pub mod audit;
pub mod calendar;
pub mod content_type;
pub mod error;
pub mod ids;
pub mod key_verdict;
pub mod keyring;
pub mod limits;
pub mod money;
pub mod openai_error;
pub mod origin;
pub mod policy;
pub mod price;
pub mod scope;
pub mod secret;
pub mod time;
pub mod token;
pub mod tokens;
pub mod usage;
pub mod vault;

pub use error::CoreError;

//! keygate's store: one async interface ([`StoreBackend`], `api.rs`) with two
//! backends — sled embedded in the data dir (the default) and PostgreSQL shared by
//! several nodes. The server holds a [`Store`] and never knows which one it has.
//!
//! The store never sees a plaintext OpenAI key or grant secret: vault records carry a
//! sealed JWE, grants the SHA-256 of their secret, in either backend.

mod api;
mod audit;
mod auth;
mod backup;
mod cache;
mod copy;
mod error;
mod export;
mod handle;
mod postgres;
pub mod records;
mod sled_backend;
mod store;
mod sweep;
mod table;
mod usage;

pub use api::{BackendKind, Entry, EntryCounts, GrantChange, Page, StoreBackend};
pub use audit::AuditQuery;
pub use auth::{
    DeletePasskey, PasskeyInsert, SessionInsert, is_person_ceremony_id, person_ceremony_id,
    person_ceremony_prefix,
};
pub use backup::{BackupError, Snapshot, SnapshotSummary};
pub use copy::{CopyError, CopyReport, copy};
pub use error::StoreError;
pub use handle::Store;
/// The limiter's windows in PostgreSQL (issue 14): one statement to acquire, one to
/// settle, atomic per grant across nodes.
pub use postgres::limits::{
    LeaseId, LimitAsk, LimitLease, LimitRefusal, ModelAsk, RateState, acquire as pg_limits_acquire,
    forget as pg_limits_forget, heartbeat as pg_limits_heartbeat, settle as pg_limits_settle,
};
pub use postgres::{PG_BACKUP, postgres_pending_migrations};
pub use records::{
    AdminKeyRecord, AuditRecord, AuditTarget, CeremonyRecord, CodeRecord, GrantRecord, GrantState,
    OperatorKeyRecord, PasskeyRecord, SessionRecord, UserRecord, VaultRecord,
};
pub use store::{GrantFilter, SledStore, StoreOptions, sled_pending_migrations};
pub use sweep::Swept;
pub use usage::{UsageCounts, UsageDelta, UsageRow};

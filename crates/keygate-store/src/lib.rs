//! keygate's embedded store on sled.
//!
//! Typed trees hold versioned records ([`records`]); opening the store runs the
//! migrations in `keygate-migrations`. The store never sees a plaintext OpenAI key or
//! grant secret: vault records carry a sealed JWE, grants the SHA-256 of their secret.

mod audit;
mod auth;
mod backup;
mod cache;
mod error;
pub mod records;
mod store;
mod sweep;
mod table;
mod usage;

pub use audit::AuditQuery;
pub use auth::{
    DeletePasskey, PasskeyInsert, SessionInsert, is_person_ceremony_id, person_ceremony_id,
    person_ceremony_prefix,
};
pub use backup::{BackupError, Snapshot, SnapshotSummary};
pub use error::StoreError;
pub use records::{
    AdminKeyRecord, AuditRecord, AuditTarget, CeremonyRecord, CodeRecord, GrantRecord, GrantState,
    OperatorKeyRecord, PasskeyRecord, SessionRecord, UserRecord, VaultRecord,
};
pub use store::{GrantFilter, Store, StoreOptions};
pub use sweep::Swept;
pub use usage::{UsageCounts, UsageDelta, UsageRow};

//! Applies `migrations/*.sql` (embedded in keygate-migrations' [`sql`] module) at
//! connect: one transaction that first takes a transaction-scoped advisory lock, so
//! of several nodes starting together one applies the pending files and the others,
//! waiting on the lock, then find nothing left to do. Each applied file is recorded in
//! `keygate_schema_migrations` with the SHA-256 of its text; a file that changed since
//! it was applied, or a database from a newer keygate, refuses the start.
//!
//! [`sql`]: keygate_migrations::sql

use deadpool_postgres::{GenericClient, Pool};
use keygate_migrations::MigrationError;
use keygate_migrations::sql::{MIGRATIONS, SqlMigration, latest};
use sha2::{Digest, Sha256};

use super::{pg_error, pool_error};
use crate::StoreError;

/// The advisory lock key every keygate node takes while migrating ("keygate" in ASCII).
const MIGRATION_LOCK: i64 = 0x006b_6579_6761_7465;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS keygate_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies every pending migration, in order, in one transaction. Returns the
/// schema version the database is at afterwards.
pub(super) async fn run(pool: &Pool) -> Result<u32, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(CREATE_TABLE).await.map_err(pg_error)?;
    let pending = check(&tx).await?;
    for m in &pending {
        tx.batch_execute(m.sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO keygate_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&version(m.version), &m.name, &checksum(m.sql)],
        )
        .await
        .map_err(pg_error)?;
        tracing::info!(version = m.version, name = m.name, "applied SQL migration");
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(latest())
}

/// The migrations [`run`] would apply, without applying anything.
pub(super) async fn pending(pool: &Pool) -> Result<Vec<(u32, String)>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('keygate_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    let pending = if exists {
        check(&client).await?
    } else {
        MIGRATIONS.iter().collect()
    };
    Ok(pending
        .into_iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect())
}

/// The migrations not yet applied; `ChangedSql` when an applied one's text differs
/// from this binary's file, `TooNew` when the database has versions this binary lacks.
async fn check(client: &impl GenericClient) -> Result<Vec<&'static SqlMigration>, StoreError> {
    let rows = client
        .query(
            "SELECT version, checksum FROM keygate_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let mut applied = Vec::with_capacity(rows.len());
    for row in rows {
        let v: i32 = row.try_get(0).map_err(pg_error)?;
        let sum: String = row.try_get(1).map_err(pg_error)?;
        applied.push((u32::try_from(v).unwrap_or(0), sum));
    }
    for (v, sum) in &applied {
        match MIGRATIONS.iter().find(|m| m.version == *v) {
            Some(m) if checksum(m.sql) == *sum => {}
            Some(m) => {
                return Err(MigrationError::ChangedSql {
                    version: m.version,
                    name: m.name.to_owned(),
                }
                .into());
            }
            None => {
                return Err(MigrationError::TooNew {
                    found: *v,
                    latest: latest(),
                }
                .into());
            }
        }
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .collect())
}

/// The SHA-256 (hex) of a migration's text, as recorded when it was applied.
pub(super) fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn version(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

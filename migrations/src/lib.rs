//! keygate's ordered schema and data migrations for the sled store, and the
//! PostgreSQL store's SQL files ([`sql`]).
//!
//! Each step lives in its own file (`m0001_initial.rs`, ...), is applied at most once,
//! and records the schema version it reaches in the `meta` tree. A store written by a
//! newer keygate (a version above [`LATEST`]) is refused rather than misread.

use thiserror::Error;

mod m0001_initial;
mod m0002_passkeys_sessions;
mod m0003_connect_codes;
mod m0004_usage;
mod m0005_admin_keys;
mod m0006_audit;
mod m0007_grant_owners;
mod m0008_operator_key;
pub mod sql;
pub mod trees;

/// The `meta` tree and the key under which the schema version (u32, big endian) lives.
pub const META_TREE: &str = trees::META;
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// One migration step.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    apply: fn(&sled::Db) -> Result<(), MigrationError>,
}

#[derive(Debug, Error)]
pub enum MigrationError {
    #[error("MG0001 store error during migration: {0}")]
    Sled(#[from] sled::Error),
    #[error(
        "MG0002 the store is at schema version {found}, newer than this keygate understands \
         ({latest}); upgrade keygate or restore a backup"
    )]
    TooNew { found: u32, latest: u32 },
    #[error("MG0003 the schema version record is corrupt")]
    CorruptVersion,
    /// A SQL migration file differs from the one applied to the database: files are
    /// never edited once released, so this database or this binary is not what it seems.
    #[error(
        "MG0004 SQL migration {version} ({name}) differs from the one applied to this \
         database; refusing to start"
    )]
    ChangedSql { version: u32, name: String },
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        apply: m0001_initial::apply,
    },
    Migration {
        version: 2,
        name: "passkeys_sessions",
        apply: m0002_passkeys_sessions::apply,
    },
    Migration {
        version: 3,
        name: "connect_codes",
        apply: m0003_connect_codes::apply,
    },
    Migration {
        version: 4,
        name: "usage",
        apply: m0004_usage::apply,
    },
    Migration {
        version: 5,
        name: "admin_keys",
        apply: m0005_admin_keys::apply,
    },
    Migration {
        version: 6,
        name: "audit",
        apply: m0006_audit::apply,
    },
    Migration {
        version: 7,
        name: "grant_owners",
        apply: m0007_grant_owners::apply,
    },
    Migration {
        version: 8,
        name: "operator_key",
        apply: m0008_operator_key::apply,
    },
];

/// The schema version a fully migrated store has.
pub const LATEST: u32 = 8;

/// All known steps, in order.
pub fn all() -> &'static [Migration] {
    MIGRATIONS
}

/// The store's current schema version (0 for a new, empty store).
pub fn current_version(db: &sled::Db) -> Result<u32, MigrationError> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(SCHEMA_VERSION_KEY)? {
        None => Ok(0),
        Some(v) => {
            let bytes: [u8; 4] = v
                .as_ref()
                .try_into()
                .map_err(|_| MigrationError::CorruptVersion)?;
            Ok(u32::from_be_bytes(bytes))
        }
    }
}

/// Applies every pending step in order and flushes; returns the version reached.
pub fn run(db: &sled::Db) -> Result<u32, MigrationError> {
    let mut version = current_version(db)?;
    if version > LATEST {
        return Err(MigrationError::TooNew {
            found: version,
            latest: LATEST,
        });
    }
    let start = version;
    for m in MIGRATIONS.iter().filter(|m| m.version > start) {
        tracing::info!(
            version = m.version,
            name = m.name,
            "applying store migration"
        );
        (m.apply)(db)?;
        set_version(db, m.version)?;
        db.flush()?;
        version = m.version;
    }
    Ok(version)
}

fn set_version(db: &sled::Db, version: u32) -> Result<(), MigrationError> {
    db.open_tree(META_TREE)?
        .insert(SCHEMA_VERSION_KEY, &version.to_be_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &std::path::Path) -> sled::Db {
        sled::Config::new().path(dir).open().unwrap()
    }

    #[test]
    fn steps_are_ordered_and_end_at_latest() {
        let versions: Vec<u32> = all().iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(versions.last().copied(), Some(LATEST));
    }

    #[test]
    fn fresh_store_reaches_latest_and_rerun_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = db(dir.path());
            assert_eq!(current_version(&db).unwrap(), 0);
            assert_eq!(run(&db).unwrap(), LATEST);
            assert_eq!(run(&db).unwrap(), LATEST);
        }
        // Survives a reopen.
        let db = db(dir.path());
        assert_eq!(current_version(&db).unwrap(), LATEST);
        let names = db.tree_names();
        for tree in m0001_initial::TREES
            .iter()
            .chain(m0002_passkeys_sessions::TREES.iter())
            .chain(m0005_admin_keys::TREES.iter())
            .chain(m0006_audit::TREES.iter())
            .chain(m0007_grant_owners::TREES.iter())
            .chain(m0008_operator_key::TREES.iter())
        {
            assert!(
                names.iter().any(|n| n.as_ref() == tree.as_bytes()),
                "{tree}"
            );
        }
    }

    #[test]
    fn a_version_1_store_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        m0001_initial::apply(&db).unwrap();
        set_version(&db, 1).unwrap();
        db.open_tree("users").unwrap().insert("u", b"kept").unwrap();
        assert_eq!(run(&db).unwrap(), LATEST);
        assert_eq!(
            db.open_tree("users")
                .unwrap()
                .get("u")
                .unwrap()
                .unwrap()
                .as_ref(),
            b"kept"
        );
        assert!(db.tree_names().iter().any(|n| n.as_ref() == b"sessions"));
    }

    #[test]
    fn newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        set_version(&db, LATEST + 1).unwrap();
        assert!(matches!(run(&db), Err(MigrationError::TooNew { .. })));
    }

    #[test]
    fn corrupt_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        db.open_tree(META_TREE)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, b"x")
            .unwrap();
        assert!(matches!(run(&db), Err(MigrationError::CorruptVersion)));
    }
}

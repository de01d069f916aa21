//! The PostgreSQL store's schema: plain numbered `.sql` files directly in `migrations/`
//! (`0001_initial.sql`, ...), embedded here in order. keygate-store's runner
//! (`postgres/migrate.rs`) applies the pending ones in one transaction under an
//! advisory lock and refuses to start when a file applied before has changed: a
//! migration, once released, is never edited — a change is a new file.

/// One SQL migration file.
pub struct SqlMigration {
    pub version: u32,
    /// The file name without its number and extension (`initial`).
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every SQL migration, in the order they apply (versions 1, 2, 3, ... without gaps).
pub const MIGRATIONS: &[SqlMigration] = &[
    SqlMigration {
        version: 1,
        name: "initial",
        sql: include_str!("../0001_initial.sql"),
    },
    SqlMigration {
        version: 2,
        name: "limits",
        sql: include_str!("../0002_limits.sql"),
    },
];

/// The version the last file brings the database to.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty(), "{}", m.name);
        }
        assert_eq!(latest() as usize, MIGRATIONS.len());
    }

    /// A file added to `migrations/` and not listed here would never be applied.
    #[test]
    fn every_sql_file_in_migrations_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, listed);
    }
}

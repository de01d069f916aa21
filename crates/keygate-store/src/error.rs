use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("ST0001 sled error: {0}")]
    Sled(#[from] sled::Error),
    #[error("ST0002 migration failed: {0}")]
    Migration(#[from] keygate_migrations::MigrationError),
    #[error("ST0003 record in tree {tree} could not be decoded: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    #[error("ST0004 record could not be encoded: {0}")]
    Encode(String),
    #[error(
        "ST0005 the store at {path} is locked by another process (is keygate already running?)"
    )]
    Locked { path: String },
    #[error("ST0006 {what} not found")]
    NotFound { what: &'static str },
    #[error("ST0007 store transaction failed: {0}")]
    Transaction(String),
    /// A PostgreSQL error, as text that never holds a parameter's value (statements
    /// carry records only as bind parameters, and the text is the server's message).
    #[error("ST0008 PostgreSQL error: {0}")]
    Postgres(String),
    #[error("ST0009 {0} is not available on this backend")]
    Unsupported(&'static str),
}

//! The PostgreSQL backend: several keygate nodes share one database. Every method is
//! one statement or one transaction, committed before its future resolves, and what
//! must not race across nodes is decided by PostgreSQL itself — row locks (`FOR
//! UPDATE` / `FOR SHARE` on the person's row), `DELETE … RETURNING` for single-use
//! records, a UNIQUE constraint for credential ids, `UPDATE … WHERE record = $old`
//! for compare-and-swap, `INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n` for
//! usage. Records are stored as `jsonb` in the same versioned shape sled stores
//! (`table.rs`), so both backends decode one way. Schema: `migrations/*.sql`, applied
//! by `migrate.rs` at connect.
//!
//! No cache: `grant_cached` and `vault_cached` read per call, so a revocation made on
//! any node is seen by every node on its next request (docs/DECISIONS.md).

mod backend;
mod migrate;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

pub(crate) mod limits;

use crate::{Store, StoreError, StoreOptions};

pub(crate) use backend::PgStore;

/// Connects to the database at `url`, applies pending SQL migrations (once across
/// nodes starting together), and returns the store over a pool of at most
/// `options.pg_pool_size` connections.
pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
    let pool = pool(url, options.pg_pool_size.max(1))?;
    migrate::run(&pool).await?;
    // The limits heartbeat's own connection: a node whose pool is busy (or a database
    // slow to hand out connections) must still say it is alive, or other nodes reclaim
    // the leases of its requests in flight.
    let beat = self::pool(url, 1)?;
    Ok(Store::from_backend(Arc::new(PgStore::new(pool, beat))))
}

/// The SQL migrations not yet applied to the database at `url`, as (version, name),
/// without applying them (`keygate migrate --check`). A file changed since it was
/// applied is an error, as at start.
pub async fn postgres_pending_migrations(url: &str) -> Result<Vec<(u32, String)>, StoreError> {
    let pool = pool(url, 1)?;
    migrate::pending(&pool).await
}

/// What `snapshot` answers on PostgreSQL, as `StoreError::Unsupported`: what to do
/// instead, for the operator who asked for a backup.
pub const PG_BACKUP: &str = "a backup through keygate (a PostgreSQL store is backed up and \
     restored with pg_dump and pg_restore, or your provider's snapshots, with the master \
     keyring kept beside it: the database never holds it)";

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a free connection when all are busy, before it fails
/// (the pool size is `StoreOptions::pg_pool_size`).
const POOL_WAIT: Duration = Duration::from_secs(30);

/// What a URL asks of TLS beyond what tokio-postgres reads itself: libpq's
/// `sslmode=verify-ca|verify-full` and `sslrootcert=FILE` (tokio-postgres knows
/// `disable|prefer|require` only, and refuses unknown options).
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsAsk {
    verify_chain: bool,
    verify_host: bool,
    root_cert: Option<String>,
}

/// Takes the libpq-only TLS options out of a `postgres://` URL's query string;
/// returns the URL tokio-postgres can parse and what was asked.
fn split_tls_options(url: &str) -> (String, TlsAsk) {
    let mut ask = TlsAsk::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), ask);
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", "verify-full")) => {
                (ask.verify_chain, ask.verify_host) = (true, true);
                kept.push("sslmode=require".to_owned());
            }
            Some(("sslmode", "verify-ca")) => {
                ask.verify_chain = true;
                kept.push("sslmode=require".to_owned());
            }
            Some(("sslrootcert", file)) => ask.root_cert = Some(file.to_owned()),
            _ => kept.push(pair.to_owned()),
        }
    }
    if kept.is_empty() {
        (base.to_owned(), ask)
    } else {
        (format!("{base}?{}", kept.join("&")), ask)
    }
}

/// The pool for `url`. TLS (openssl) as libpq does it: `prefer` (the default) uses it
/// when the server offers it, `require` insists, `disable` never tries. `prefer` and
/// `require` encrypt without checking the certificate (unless `sslrootcert` is given);
/// `verify-*` check it against `sslrootcert` (or the system's roots), `verify-full`
/// the host name too.
/// `sslrootcert` is a plain path (not percent-encoded).
fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let (url, ask) = split_tls_options(url);
    // The parse error never echoes the URL (it may hold a password).
    let mut config = tokio_postgres::Config::from_str(&url)
        .map_err(|e| StoreError::Postgres(format!("bad store URL: {e}")))?;
    // An unreachable database fails a start (or a request) in seconds, not after the
    // operating system's TCP timeout; a URL's own `connect_timeout` wins.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let mode = config.get_ssl_mode();
    if ask.verify_chain && mode != SslMode::Require {
        // `sslmode=verify-full&sslmode=disable` (or `prefer`): the last one would win
        // silently and turn off (or make optional) the verification the first asked for.
        return Err(StoreError::Postgres(
            "bad store URL: sslmode is given twice, and the last one turns TLS off".into(),
        ));
    }
    // `prefer` (the default, as libpq's) tries TLS and falls back to plain text only
    // when the server offers none; `disable` never tries.
    let tls = mode != SslMode::Disable;
    let manager = if tls {
        let tls = tls_connector(&ask)?;
        Manager::from_config(config, tls, manager_config)
    } else {
        Manager::from_config(config, NoTls, manager_config)
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .wait_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| StoreError::Postgres(format!("connection pool: {e}")))
}

fn tls_connector(ask: &TlsAsk) -> Result<MakeTlsConnector, StoreError> {
    let tls_err = |e: openssl::error::ErrorStack| StoreError::Postgres(format!("TLS setup: {e}"));
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls_err)?;
    if let Some(file) = &ask.root_cert {
        builder.set_ca_file(file).map_err(tls_err)?;
    }
    // As libpq: with a root certificate given, `require` verifies the chain too.
    builder.set_verify(if ask.verify_chain || ask.root_cert.is_some() {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });
    let mut connector = MakeTlsConnector::new(builder.build());
    let verify_host = ask.verify_host;
    connector.set_callback(move |config, _| {
        config.set_verify_hostname(verify_host);
        Ok(())
    });
    Ok(connector)
}

/// A tokio-postgres error as text that never holds a bound value: for a server error
/// its SQLSTATE and message (never its detail, hint or context, which may quote row
/// data), cut before `: "` — where PostgreSQL quotes an input value ("invalid input
/// syntax for type bigint: \"…\""); identifiers it quotes without the colon stay.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let message = db.message();
        let message = message.split(": \"").next().unwrap_or(message);
        return StoreError::Postgres(format!("{} {}", db.code().code(), message));
    }
    // Client-side failures (connection lost, closed, timeouts) carry no values, but
    // a conversion error might: name the parameter or column, not what was in it.
    let text = e.to_string();
    match text.split_once(':') {
        Some((head, _))
            if head.starts_with("error serializing parameter")
                || head.starts_with("error deserializing column") =>
        {
            StoreError::Postgres(head.to_owned())
        }
        _ => StoreError::Postgres(text),
    }
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => StoreError::Postgres(format!("connection pool: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_taken_out_of_the_url() {
        let (url, ask) = split_tls_options(
            "postgres://kg:pw@db.example:5432/kg?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=kg",
        );
        assert_eq!(
            url,
            "postgres://kg:pw@db.example:5432/kg?sslmode=require&application_name=kg"
        );
        assert_eq!(
            ask,
            TlsAsk {
                verify_chain: true,
                verify_host: true,
                root_cert: Some("/etc/ca.pem".into()),
            }
        );
        let (url, ask) = split_tls_options("postgres://db/kg?sslmode=verify-ca");
        assert_eq!(url, "postgres://db/kg?sslmode=require");
        assert!(ask.verify_chain && !ask.verify_host);
        let (url, ask) = split_tls_options("postgres://db/kg");
        assert_eq!((url.as_str(), ask), ("postgres://db/kg", TlsAsk::default()));
    }

    #[test]
    fn verification_asked_then_turned_off_is_refused() {
        let err = pool("postgres://db/kg?sslmode=verify-full&sslmode=disable", 1).unwrap_err();
        assert!(err.to_string().contains("sslmode is given twice"), "{err}");
        assert!(pool("postgres://db/kg?sslmode=verify-full", 1).is_ok());
        assert!(pool("postgres://db/kg?sslmode=disable", 1).is_ok());
    }

    #[test]
    fn a_bad_url_error_does_not_echo_the_password() {
        let err = pool("postgres://kg:s3cret-pw@db:notaport/kg", 1).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("ST0008"), "{text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
    }
}

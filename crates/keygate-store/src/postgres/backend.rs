//! [`PgStore`]: every [`StoreBackend`] method as SQL. Each keeps the contract sled's
//! code keeps (`store.rs`, `auth.rs`, `audit.rs`, `usage.rs`, `sweep.rs`, `export.rs`);
//! where sled needs a snapshot-then-transaction dance, PostgreSQL decides in one
//! transaction with row locks. Lock order, so two transactions never wait on each
//! other in a circle: the person's row first (`users`), then their other rows.
//!
//! Values only ever reach PostgreSQL as bind parameters; statements are constants.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Object, Pool};
use keygate_core::ids::{AdminKeyId, GrantId, PasskeyId, UserId};
use keygate_core::time::UnixTime;
use keygate_migrations::trees;
use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{pg_error, pool_error};
use crate::StoreError;
use crate::api::{BackendKind, Entry, GrantChange, Page, StoreBackend};
use crate::audit::AuditQuery;
use crate::auth::{DeletePasskey, PasskeyInsert, SessionInsert, is_person_ceremony_id};
use crate::backup::Snapshot;
use crate::records::{
    AdminKeyRecord, AuditRecord, CeremonyRecord, CodeRecord, GrantRecord, GrantState,
    OperatorKeyRecord, PasskeyRecord, SessionRecord, UserRecord, VaultRecord,
};
use crate::store::{GrantFilter, OPERATOR_KEY_KEY};
use crate::sweep::Swept;
use crate::table::{Versioned, decode_value, encode_value};
use crate::usage::{UsageCounts, UsageDelta, UsageRow};
use crate::{LimitAsk, LimitLease, LimitRefusal};
use keygate_core::policy::Spend;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The PostgreSQL store: a pool of connections, nothing else (no cache, no state a
/// second node could disagree with).
pub(crate) struct PgStore {
    pool: Pool,
    /// One connection for `limits_heartbeat`'s "alive" alone.
    beat: Pool,
    /// A reclaim of dead nodes' leases is running (at most one per node).
    reclaiming: Arc<std::sync::atomic::AtomicBool>,
    /// This handle's name in `limit_leases`/`limit_nodes` (the leases it takes are its
    /// own, reclaimed by other nodes should it stop calling `limits_heartbeat`) and the
    /// prefix of its usage batches' ids.
    /// Random per process start (a restarted node is a new one; its old leases are
    /// reclaimed like any dead node's). The pid is there for an operator reading the
    /// table.
    node: String,
}

impl PgStore {
    pub(crate) fn new(pool: Pool, beat: Pool) -> Self {
        Self {
            pool,
            beat,
            reclaiming: Arc::default(),
            node: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
        }
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Whether the usage batch `id` committed, for a writer that lost its COMMIT's
    /// answer. Inserting the id ourselves settles it for good: a transaction still
    /// deciding holds the id's index entry, so the insert waits for it (a few seconds at
    /// most) — a conflict then means it committed; an insert that goes through means it
    /// did not, and can no longer (its own insert of the id would now fail).
    async fn usage_batch_landed(&self, id: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        exec(&tx, "SET LOCAL lock_timeout = '5s'", &[]).await?;
        let inserted = exec(
            &tx,
            "INSERT INTO usage_batches (id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&id],
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(inserted == 0)
    }

    async fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        rows(&self.client().await?, sql, params).await
    }

    async fn exec(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        exec(&self.client().await?, sql, params).await
    }

    /// Every record the statement returns (first column).
    async fn records<R: Versioned>(
        &self,
        tree: &'static str,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<R>, StoreError> {
        self.rows(sql, params)
            .await?
            .iter()
            .map(|row| record(tree, row, 0))
            .collect()
    }

    /// The one record the statement returns, if any.
    async fn record<R: Versioned>(
        &self,
        tree: &'static str,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<R>, StoreError> {
        Ok(self.records(tree, sql, params).await?.into_iter().next())
    }

    async fn count(&self, sql: &str) -> Result<usize, StoreError> {
        let rows = self.rows(sql, &[]).await?;
        let n: i64 = match rows.first() {
            Some(row) => get(row, 0)?,
            None => 0,
        };
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// One page of records by text key, in key (byte) order, after the key `after`.
    /// A cursor that is not text PostgreSQL can hold (not UTF-8, or holding NUL) was
    /// never handed out: it reaches nothing.
    async fn text_key_page<R: Versioned>(
        &self,
        tree: &'static str,
        sql: &str,
        leading: &[&(dyn ToSql + Sync)],
        after: Option<&[u8]>,
        limit: usize,
        key: impl Fn(&R) -> String,
    ) -> Result<Page<R>, StoreError> {
        let after = match after.map(std::str::from_utf8) {
            None => None,
            Some(Ok(a)) if !a.contains('\0') => Some(a),
            Some(_) => return Ok((Vec::new(), None)),
        };
        let fetch = int(limit.saturating_add(1) as u64);
        let mut params: Vec<&(dyn ToSql + Sync)> = leading.to_vec();
        params.push(&after);
        params.push(&fetch);
        let mut items: Vec<R> = self.records(tree, sql, &params).await?;
        let next = page(&mut items, limit, |r| key(r).into_bytes());
        Ok((items, next))
    }
}

/// Truncates `items` (one more than `limit` when more follow) to a page and its
/// cursor: the key of its last item when more follow.
fn page<R>(items: &mut Vec<R>, limit: usize, key: impl Fn(&R) -> Vec<u8>) -> Option<Vec<u8>> {
    let more = items.len() > limit;
    items.truncate(limit);
    if more { items.last().map(key) } else { None }
}

async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let st = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.query(&st, params).await.map_err(pg_error)
}

async fn exec<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
    let st = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.execute(&st, params).await.map_err(pg_error)
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(pg_error)
}

fn record<R: Versioned>(tree: &'static str, row: &Row, i: usize) -> Result<R, StoreError> {
    decode_value(tree, get::<serde_json::Value>(row, i)?)
}

/// A u64 as PostgreSQL's bigint (values past its range, which keygate never
/// produces, stay at its top).
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A unit enum's serde name (`"revoked"`), the text a filter column holds.
fn enum_text<T: Serialize>(v: &T) -> Result<String, StoreError> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Err(StoreError::Encode(format!("not a name: {other}"))),
        Err(e) => Err(StoreError::Encode(e.to_string())),
    }
}

fn state_text(s: GrantState) -> Result<String, StoreError> {
    enum_text(&s)
}

fn parse_user(tree: &'static str, s: &str) -> Result<UserId, StoreError> {
    UserId::parse(s).map_err(|_| StoreError::Corrupt {
        tree,
        reason: "bad user id".into(),
    })
}

fn parse_grant(tree: &'static str, s: &str) -> Result<GrantId, StoreError> {
    GrantId::parse(s).map_err(|_| StoreError::Corrupt {
        tree,
        reason: "bad grant id".into(),
    })
}

const MAX_BIGINT: &str = "9223372036854775807";

const USAGE_COLUMNS: [&str; 7] = [
    "requests",
    "errors",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "usd_nanos",
    "estimated",
];

fn usage_values(c: &UsageCounts) -> [i64; 7] {
    [
        int(c.requests),
        int(c.errors),
        int(c.prompt_tokens),
        int(c.cached_tokens),
        int(c.completion_tokens),
        int(c.usd_nanos),
        int(c.estimated),
    ]
}

fn usage_counts(row: &Row, first: usize) -> Result<UsageCounts, StoreError> {
    Ok(UsageCounts {
        requests: uint(get(row, first)?),
        errors: uint(get(row, first + 1)?),
        prompt_tokens: uint(get(row, first + 2)?),
        cached_tokens: uint(get(row, first + 3)?),
        completion_tokens: uint(get(row, first + 4)?),
        usd_nanos: uint(get(row, first + 5)?),
        estimated: uint(get(row, first + 6)?),
    })
}

/// `INSERT` of one usage row; `add` adds to a row already there (saturating at the
/// top of bigint, as sled saturates), otherwise it is set (an import).
fn usage_upsert(add: bool) -> String {
    let sets: Vec<String> = USAGE_COLUMNS
        .iter()
        .map(|c| {
            if add {
                format!("{c} = LEAST(usage.{c}::numeric + excluded.{c}, {MAX_BIGINT})::bigint")
            } else {
                format!("{c} = excluded.{c}")
            }
        })
        .collect();
    format!(
        "INSERT INTO usage (grant_id, day, model, {}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (grant_id, day, model) DO UPDATE SET {}",
        USAGE_COLUMNS.join(", "),
        sets.join(", ")
    )
}

const USAGE_SUMS: &str = "SELECT \
    LEAST(COALESCE(SUM(requests), 0), 9223372036854775807)::bigint, \
    LEAST(COALESCE(SUM(errors), 0), 9223372036854775807)::bigint, \
    LEAST(COALESCE(SUM(prompt_tokens), 0), 9223372036854775807)::bigint, \
    LEAST(COALESCE(SUM(cached_tokens), 0), 9223372036854775807)::bigint, \
    LEAST(COALESCE(SUM(completion_tokens), 0), 9223372036854775807)::bigint, \
    LEAST(COALESCE(SUM(usd_nanos), 0), 9223372036854775807)::bigint, \
    LEAST(COALESCE(SUM(estimated), 0), 9223372036854775807)::bigint \
    FROM usage WHERE grant_id = $1 AND day >= $2::bigint AND day <= $3::bigint \
    AND ($4::text IS NULL OR model = $4)";

const UPSERT_USER: &str = "INSERT INTO users (id, record) VALUES ($1, $2) \
    ON CONFLICT (id) DO UPDATE SET record = excluded.record";
const UPSERT_VAULT: &str = "INSERT INTO vault (user_id, record) VALUES ($1, $2) \
    ON CONFLICT (user_id) DO UPDATE SET record = excluded.record";
const UPSERT_OPERATOR_KEY: &str = "INSERT INTO operator_key (id, record) VALUES ($1, $2) \
    ON CONFLICT (id) DO UPDATE SET record = excluded.record";
const UPSERT_GRANT: &str = "INSERT INTO grants (id, user_id, state, origin, record) \
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
    state = excluded.state, origin = excluded.origin, record = excluded.record";
const INSERT_OWNER: &str = "INSERT INTO grant_owners (user_id, grant_id) VALUES ($1, $2) \
    ON CONFLICT DO NOTHING";
const INSERT_PASSKEY: &str = "INSERT INTO passkeys (id, user_id, credential_id, record) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (credential_id) DO NOTHING";
const UPSERT_PASSKEY: &str = "INSERT INTO passkeys (id, user_id, credential_id, record) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
    credential_id = excluded.credential_id, record = excluded.record";
const UPSERT_SESSION: &str = "INSERT INTO sessions \
    (hash, user_id, seq, created_at, last_seen_at, record) VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (hash) DO UPDATE SET user_id = excluded.user_id, seq = excluded.seq, \
    created_at = excluded.created_at, last_seen_at = excluded.last_seen_at, \
    record = excluded.record";
const UPSERT_CEREMONY: &str = "INSERT INTO ceremonies \
    (id, user_id, person, expires_at, record) VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, person = excluded.person, \
    expires_at = excluded.expires_at, record = excluded.record";
const UPSERT_CODE: &str = "INSERT INTO connect_codes (hash, user_id, expires_at, record) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO UPDATE SET user_id = excluded.user_id, \
    expires_at = excluded.expires_at, record = excluded.record";
const UPSERT_ADMIN_KEY: &str = "INSERT INTO admin_keys (id, record) VALUES ($1, $2) \
    ON CONFLICT (id) DO UPDATE SET record = excluded.record";
const UPSERT_AUDIT: &str = "INSERT INTO audit (at_ns, seq, user_id, action, record) \
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (at_ns, seq) DO UPDATE SET \
    user_id = excluded.user_id, action = excluded.action, record = excluded.record";
/// Locks the person's row for the rest of the transaction (shared: other inserts for
/// the same person go on; a deletion waits, and then sees what they inserted).
const LOCK_USER_SHARED: &str = "SELECT 1 FROM users WHERE id = $1 FOR SHARE";

/// Writers of one kind of record, shared by the methods and `import`.
async fn write_grant<C: GenericClient>(c: &C, g: &GrantRecord) -> Result<(), StoreError> {
    let record = encode_value(g)?;
    let state = state_text(g.state)?;
    exec(
        c,
        UPSERT_GRANT,
        &[
            &g.id.as_str(),
            &g.user_id.as_str(),
            &state,
            &g.origin,
            &record,
        ],
    )
    .await?;
    exec(c, INSERT_OWNER, &[&g.user_id.as_str(), &g.id.as_str()]).await?;
    Ok(())
}

async fn write_session<C: GenericClient>(
    c: &C,
    hash: &str,
    s: &SessionRecord,
) -> Result<(), StoreError> {
    let record = encode_value(s)?;
    exec(
        c,
        UPSERT_SESSION,
        &[
            &hash,
            &s.user_id.as_str(),
            &int(s.seq),
            &int(s.created_at),
            &int(s.last_seen_at),
            &record,
        ],
    )
    .await?;
    Ok(())
}

async fn write_audit<C: GenericClient>(c: &C, r: &AuditRecord) -> Result<(), StoreError> {
    let record = encode_value(r)?;
    let action = enum_text(&r.action)?;
    let user = r.user.as_ref().map(|u| u.as_str());
    exec(
        c,
        UPSERT_AUDIT,
        &[&int(r.at_ns), &int(r.seq), &user, &action, &record],
    )
    .await?;
    Ok(())
}

async fn write_usage<C: GenericClient>(c: &C, sql: &str, d: &UsageDelta) -> Result<(), StoreError> {
    let v = usage_values(&d.counts);
    exec(
        c,
        sql,
        &[
            &d.grant_id.as_str(),
            &i64::from(d.day),
            &d.model,
            &v[0],
            &v[1],
            &v[2],
            &v[3],
            &v[4],
            &v[5],
            &v[6],
        ],
    )
    .await?;
    Ok(())
}

/// The audit log's page cursor, as sled makes it: the person's id (for a person's
/// page) then the entry's key (`at_ns ‖ seq`, big endian), read back exactly as sled
/// reads it — as bytes. A cursor outside the query's key range (another person's, or
/// outside the time range) reaches nothing; one inside it continues before it: the
/// answer is the exclusive bound `(at_ns, seq)` it stands for (`None`: nothing).
fn audit_cursor(q: &AuditQuery, after: &[u8]) -> Option<(u64, u64)> {
    let prefix = q.user.as_ref().map_or(&b""[..], |u| u.as_str().as_bytes());
    let low = [prefix, &q.from_ns.unwrap_or(0).to_be_bytes()].concat();
    let high = match q.until_ns {
        Some(u) => [prefix, &u.to_be_bytes()].concat(),
        None => [prefix, &[0xff; 17]].concat(),
    };
    if after < low.as_slice() || after >= high.as_slice() {
        return None;
    }
    // Inside the range, so it starts with the prefix. Keys are 16 bytes: one is below
    // a shorter cursor iff it is below the cursor padded with zeros, and below a
    // longer one iff it is at most the cursor's first 16 bytes.
    let rest = after.get(prefix.len()..)?;
    let mut key = [0u8; 16];
    let n = rest.len().min(16);
    key[..n].copy_from_slice(&rest[..n]);
    let mut bound = u128::from_be_bytes(key);
    if rest.len() > 16 {
        bound = bound.saturating_add(1);
    }
    Some(((bound >> 64) as u64, bound as u64))
}

fn audit_cursor_of(q: &AuditQuery, r: &AuditRecord) -> Vec<u8> {
    let mut k = q
        .user
        .as_ref()
        .map_or_else(Vec::new, |u| u.as_str().as_bytes().to_vec());
    k.extend_from_slice(&r.key());
    k
}

#[async_trait]
impl StoreBackend for PgStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    async fn schema_version(&self) -> Result<u32, StoreError> {
        let rows = self
            .rows(
                "SELECT COALESCE(max(version), 0) FROM keygate_schema_migrations",
                &[],
            )
            .await?;
        let v: i32 = match rows.first() {
            Some(row) => get(row, 0)?,
            None => 0,
        };
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// Every write is committed before its future resolves: nothing to flush.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.rows("SELECT 1", &[]).await.map(|_| ())
    }

    async fn snapshot(&self, _now: UnixTime) -> Result<Snapshot, StoreError> {
        Err(StoreError::Unsupported(super::PG_BACKUP))
    }

    async fn export(&self) -> Result<Vec<Entry>, StoreError> {
        // One repeatable-read transaction: every table as of one instant.
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let mut out = Vec::new();
        for row in rows(&tx, "SELECT record FROM users ORDER BY id", &[]).await? {
            out.push(Entry::User(record(trees::USERS, &row, 0)?));
        }
        for row in rows(
            &tx,
            "SELECT user_id, record FROM vault ORDER BY user_id",
            &[],
        )
        .await?
        {
            let user = parse_user(trees::VAULT, get(&row, 0)?)?;
            out.push(Entry::Vault(user, record(trees::VAULT, &row, 1)?));
        }
        for row in rows(&tx, "SELECT record FROM operator_key", &[]).await? {
            out.push(Entry::OperatorKey(record(trees::OPERATOR_KEY, &row, 0)?));
        }
        for row in rows(&tx, "SELECT record FROM grants ORDER BY id", &[]).await? {
            out.push(Entry::Grant(record(trees::GRANTS, &row, 0)?));
        }
        let owners = rows(
            &tx,
            "SELECT user_id, grant_id FROM grant_owners ORDER BY grant_id, user_id",
            &[],
        )
        .await?;
        for row in owners {
            let user = parse_user(trees::GRANT_OWNERS, get(&row, 0)?)?;
            let grant = parse_grant(trees::GRANT_OWNERS, get(&row, 1)?)?;
            out.push(Entry::GrantOwner(user, grant));
        }
        for row in rows(&tx, "SELECT record FROM passkeys ORDER BY id", &[]).await? {
            out.push(Entry::Passkey(record(trees::PASSKEYS, &row, 0)?));
        }
        for row in rows(&tx, "SELECT hash, record FROM sessions ORDER BY hash", &[]).await? {
            out.push(Entry::Session(
                get(&row, 0)?,
                record(trees::SESSIONS, &row, 1)?,
            ));
        }
        for row in rows(&tx, "SELECT id, record FROM ceremonies ORDER BY id", &[]).await? {
            out.push(Entry::Ceremony(
                get(&row, 0)?,
                record(trees::CEREMONIES, &row, 1)?,
            ));
        }
        let codes = rows(
            &tx,
            "SELECT hash, record FROM connect_codes ORDER BY hash",
            &[],
        )
        .await?;
        for row in codes {
            out.push(Entry::Code(
                get(&row, 0)?,
                record(trees::CONNECT_CODES, &row, 1)?,
            ));
        }
        let sql = format!(
            "SELECT grant_id, day, model, {} FROM usage ORDER BY grant_id, day, model",
            USAGE_COLUMNS.join(", ")
        );
        for row in rows(&tx, &sql, &[]).await? {
            out.push(Entry::Usage(UsageDelta {
                grant_id: parse_grant(trees::USAGE, get(&row, 0)?)?,
                day: u32::try_from(get::<i64>(&row, 1)?).unwrap_or(u32::MAX),
                model: get(&row, 2)?,
                counts: usage_counts(&row, 3)?,
            }));
        }
        for row in rows(&tx, "SELECT record FROM admin_keys ORDER BY id", &[]).await? {
            out.push(Entry::AdminKey(record(trees::ADMIN_KEYS, &row, 0)?));
        }
        for row in rows(&tx, "SELECT record FROM audit ORDER BY at_ns, seq", &[]).await? {
            out.push(Entry::Audit(record(trees::AUDIT, &row, 0)?));
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(out)
    }

    /// Every entry upserted in one transaction (all or nothing); usage rows are set,
    /// not added, so a second import changes nothing. The sequence is raised above
    /// every imported `seq`, so what this store numbers next sorts after them.
    async fn import(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let set_usage = usage_upsert(false);
        let mut max_seq = 0u64;
        for entry in entries {
            match entry {
                Entry::User(u) => {
                    exec(&tx, UPSERT_USER, &[&u.id.as_str(), &encode_value(u)?]).await?;
                }
                Entry::Vault(user, r) => {
                    exec(&tx, UPSERT_VAULT, &[&user.as_str(), &encode_value(r)?]).await?;
                }
                Entry::OperatorKey(r) => {
                    exec(
                        &tx,
                        UPSERT_OPERATOR_KEY,
                        &[&OPERATOR_KEY_KEY, &encode_value(r)?],
                    )
                    .await?;
                }
                Entry::Grant(g) => write_grant(&tx, g).await?,
                Entry::GrantOwner(user, grant) => {
                    exec(&tx, INSERT_OWNER, &[&user.as_str(), &grant.as_str()]).await?;
                }
                Entry::Passkey(pk) => {
                    let record = encode_value(pk)?;
                    let params: Params<'_> = &[
                        &pk.id.as_str(),
                        &pk.user_id.as_str(),
                        &pk.credential_id,
                        &record,
                    ];
                    exec(&tx, UPSERT_PASSKEY, params).await?;
                }
                Entry::Session(hash, s) => {
                    max_seq = max_seq.max(s.seq);
                    write_session(&tx, hash, s).await?;
                }
                Entry::Ceremony(id, c) => write_ceremony(&tx, id, c).await?,
                Entry::Code(hash, c) => write_code(&tx, hash, c).await?,
                Entry::Usage(row) => write_usage(&tx, &set_usage, row).await?,
                Entry::AdminKey(k) => {
                    exec(&tx, UPSERT_ADMIN_KEY, &[&k.id.as_str(), &encode_value(k)?]).await?;
                }
                Entry::Audit(r) => {
                    max_seq = max_seq.max(r.seq);
                    write_audit(&tx, r).await?;
                }
            }
        }
        if max_seq > 0 {
            exec(
                &tx,
                "SELECT setval('keygate_seq', GREATEST((SELECT last_value FROM keygate_seq), $1))",
                &[&int(max_seq)],
            )
            .await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    // --- admin keys --------------------------------------------------------------

    async fn insert_admin_key(&self, key: &AdminKeyRecord) -> Result<(), StoreError> {
        self.exec(UPSERT_ADMIN_KEY, &[&key.id.as_str(), &encode_value(key)?])
            .await
            .map(|_| ())
    }

    async fn admin_key(&self, id: &AdminKeyId) -> Result<Option<AdminKeyRecord>, StoreError> {
        self.record(
            trees::ADMIN_KEYS,
            "SELECT record FROM admin_keys WHERE id = $1",
            &[&id.as_str()],
        )
        .await
    }

    async fn admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError> {
        self.records(
            trees::ADMIN_KEYS,
            "SELECT record FROM admin_keys ORDER BY id",
            &[],
        )
        .await
    }

    /// Oldest first, ties by id, after the cursor `created_at (u64, big endian) ‖ id`
    /// — sled's cursor and sled's code: admin keys are few, all are read and sorted.
    async fn admin_keys_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AdminKeyRecord>, StoreError> {
        let mut keyed: Vec<(Vec<u8>, AdminKeyRecord)> = self
            .admin_keys()
            .await?
            .into_iter()
            .map(|k| {
                let mut at = k.created_at.to_be_bytes().to_vec();
                at.extend_from_slice(k.id.as_str().as_bytes());
                (at, k)
            })
            .filter(|(at, _)| after.is_none_or(|a| at.as_slice() > a))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let next = page(&mut keyed, limit, |(at, _)| at.clone());
        Ok((keyed.into_iter().map(|(_, k)| k).collect(), next))
    }

    async fn delete_admin_key(&self, id: &AdminKeyId) -> Result<bool, StoreError> {
        Ok(self
            .exec("DELETE FROM admin_keys WHERE id = $1", &[&id.as_str()])
            .await?
            > 0)
    }

    // --- people ------------------------------------------------------------------

    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.exec(UPSERT_USER, &[&user.id.as_str(), &encode_value(user)?])
            .await
            .map(|_| ())
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.record(
            trees::USERS,
            "SELECT record FROM users WHERE id = $1",
            &[&id.as_str()],
        )
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.records(trees::USERS, "SELECT record FROM users ORDER BY id", &[])
            .await
    }

    async fn users_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<UserRecord>, StoreError> {
        self.text_key_page(
            trees::USERS,
            "SELECT record FROM users WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
            &[],
            after,
            limit,
            |u: &UserRecord| u.id.as_str().to_owned(),
        )
        .await
    }

    /// The person's row goes first: inserts for them lock it (`FOR SHARE`), so one
    /// racing this either finished before (and its rows are removed here) or waits and
    /// then finds the person gone.
    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let id = user.as_str();
        let existed = exec(&tx, "DELETE FROM users WHERE id = $1", &[&id]).await? > 0;
        for sql in [
            "DELETE FROM vault WHERE user_id = $1",
            "DELETE FROM sessions WHERE user_id = $1",
            // Its grants' rows, then their windows, locked in the order every other
            // writer takes them (`update_grant`: the grant's row, then its windows;
            // the limits: migrations/0002's order) — a DELETE alone locks in scan
            // order, which can deadlock with an edit, a reclaim or an acquire.
            "SELECT 1 FROM grants WHERE user_id = $1 ORDER BY id FOR UPDATE",
            "SELECT keygate_limits_lock_grants(ARRAY(SELECT id FROM grants WHERE user_id = $1))",
            "DELETE FROM limit_windows WHERE grant_id IN \
             (SELECT id FROM grants WHERE user_id = $1)",
            "DELETE FROM limit_leases WHERE grant_id IN \
             (SELECT id FROM grants WHERE user_id = $1)",
            "DELETE FROM grants WHERE user_id = $1",
            "DELETE FROM passkeys WHERE user_id = $1",
            "DELETE FROM ceremonies WHERE user_id = $1",
            "DELETE FROM connect_codes WHERE user_id = $1",
        ] {
            exec(&tx, sql, &[&id]).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(existed)
    }

    // --- vault -------------------------------------------------------------------

    async fn put_vault(&self, user: &UserId, record: &VaultRecord) -> Result<(), StoreError> {
        self.exec(UPSERT_VAULT, &[&user.as_str(), &encode_value(record)?])
            .await
            .map(|_| ())
    }

    async fn vault(&self, user: &UserId) -> Result<Option<VaultRecord>, StoreError> {
        self.record(
            trees::VAULT,
            "SELECT record FROM vault WHERE user_id = $1",
            &[&user.as_str()],
        )
        .await
    }

    /// Read per call: no node may serve a sealed key another node replaced or deleted.
    async fn vault_cached(&self, user: &UserId) -> Result<Option<Arc<VaultRecord>>, StoreError> {
        Ok(self.vault(user).await?.map(Arc::new))
    }

    async fn replace_vault(
        &self,
        user: &UserId,
        old: &VaultRecord,
        new: &VaultRecord,
    ) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "UPDATE vault SET record = $3 WHERE user_id = $1 AND record = $2",
                &[&user.as_str(), &encode_value(old)?, &encode_value(new)?],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_vault(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self
            .exec("DELETE FROM vault WHERE user_id = $1", &[&user.as_str()])
            .await?
            > 0)
    }

    async fn vault_entries(&self) -> Result<Vec<(UserId, VaultRecord)>, StoreError> {
        self.rows("SELECT user_id, record FROM vault ORDER BY user_id", &[])
            .await?
            .iter()
            .map(|row| {
                Ok((
                    parse_user(trees::VAULT, get(row, 0)?)?,
                    record(trees::VAULT, row, 1)?,
                ))
            })
            .collect()
    }

    // --- the operator's key ------------------------------------------------------

    async fn put_operator_key(&self, record: &OperatorKeyRecord) -> Result<(), StoreError> {
        self.exec(
            UPSERT_OPERATOR_KEY,
            &[&OPERATOR_KEY_KEY, &encode_value(record)?],
        )
        .await
        .map(|_| ())
    }

    async fn operator_key(&self) -> Result<Option<OperatorKeyRecord>, StoreError> {
        self.record(
            trees::OPERATOR_KEY,
            "SELECT record FROM operator_key WHERE id = $1",
            &[&OPERATOR_KEY_KEY],
        )
        .await
    }

    async fn replace_operator_key(
        &self,
        old: &OperatorKeyRecord,
        new: &OperatorKeyRecord,
    ) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "UPDATE operator_key SET record = $3 WHERE id = $1 AND record = $2",
                &[&OPERATOR_KEY_KEY, &encode_value(old)?, &encode_value(new)?],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_operator_key(&self) -> Result<bool, StoreError> {
        Ok(self
            .exec(
                "DELETE FROM operator_key WHERE id = $1",
                &[&OPERATOR_KEY_KEY],
            )
            .await?
            > 0)
    }

    // --- grants ------------------------------------------------------------------

    async fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if rows(&tx, LOCK_USER_SHARED, &[&grant.user_id.as_str()])
            .await?
            .is_empty()
        {
            return Err(StoreError::NotFound { what: "user" });
        }
        write_grant(&tx, grant).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<GrantRecord>, StoreError> {
        self.record(
            trees::GRANTS,
            "SELECT record FROM grants WHERE id = $1",
            &[&id.as_str()],
        )
        .await
    }

    /// Read per call: a revocation on any node is seen by every node's next request.
    async fn grant_cached(&self, id: &GrantId) -> Result<Option<Arc<GrantRecord>>, StoreError> {
        Ok(self.grant(id).await?.map(Arc::new))
    }

    /// Grants in id order that `filter` picks, after the grant id `after` (sled's
    /// cursor). The filter is part of the statement: a cursor only says where to start.
    async fn grants_page(
        &self,
        filter: &GrantFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, StoreError> {
        let user = filter.user.as_ref().map(|u| u.as_str());
        let state = filter.state.map(state_text).transpose()?;
        self.text_key_page(
            trees::GRANTS,
            "SELECT record FROM grants WHERE ($1::text IS NULL OR user_id = $1) \
             AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR origin = $3) \
             AND ($4::text IS NULL OR id > $4) ORDER BY id LIMIT $5",
            &[&user, &state, &filter.origin],
            after,
            limit,
            |g: &GrantRecord| g.id.as_str().to_owned(),
        )
        .await
    }

    async fn grant_ids_ever(&self, user: &UserId) -> Result<Vec<GrantId>, StoreError> {
        self.rows(
            "SELECT grant_id FROM grant_owners WHERE user_id = $1 ORDER BY grant_id",
            &[&user.as_str()],
        )
        .await?
        .iter()
        .map(|row| parse_grant(trees::GRANT_OWNERS, get(row, 0)?))
        .collect()
    }

    async fn grant_owners(&self) -> Result<HashMap<GrantId, UserId>, StoreError> {
        self.rows("SELECT user_id, grant_id FROM grant_owners", &[])
            .await?
            .iter()
            .map(|row| {
                Ok((
                    parse_grant(trees::GRANT_OWNERS, get(row, 1)?)?,
                    parse_user(trees::GRANT_OWNERS, get(row, 0)?)?,
                ))
            })
            .collect()
    }

    async fn grants_for_user(&self, user: &UserId) -> Result<Vec<GrantRecord>, StoreError> {
        let mut out: Vec<GrantRecord> = self
            .records(
                trees::GRANTS,
                "SELECT record FROM grants WHERE user_id = $1",
                &[&user.as_str()],
            )
            .await?;
        out.sort_by_key(|g| (g.created_at, g.id.clone()));
        Ok(out)
    }

    /// The row is locked (`FOR UPDATE`) from the read to the write: concurrent
    /// changes, on any node, apply one after the other and none is lost.
    async fn update_grant(
        &self,
        id: &GrantId,
        change: GrantChange<'_>,
    ) -> Result<Option<GrantRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let found = rows(
            &tx,
            "SELECT record FROM grants WHERE id = $1 FOR UPDATE",
            &[&id.as_str()],
        )
        .await?;
        let Some(row) = found.first() else {
            return Ok(None);
        };
        let mut grant: GrantRecord = record(trees::GRANTS, row, 0)?;
        let limits_before = grant.limits.clone();
        change(&mut grant);
        if grant.limits != limits_before {
            // Spend made while a budget was absent was in no window: the windows
            // reload it from the usage rows at the next request (they keep what is in
            // flight).
            exec(&tx, "SELECT keygate_limits_forget($1)", &[&id.as_str()]).await?;
        }
        let state = state_text(grant.state)?;
        exec(
            &tx,
            "UPDATE grants SET user_id = $2, state = $3, origin = $4, record = $5 WHERE id = $1",
            &[
                &id.as_str(),
                &grant.user_id.as_str(),
                &state,
                &grant.origin,
                &encode_value(&grant)?,
            ],
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Some(grant))
    }

    async fn revoke_grant(
        &self,
        id: &GrantId,
        now: UnixTime,
    ) -> Result<Option<GrantRecord>, StoreError> {
        self.update_grant(id, &|g: &mut GrantRecord| {
            if g.state != GrantState::Revoked {
                g.state = GrantState::Revoked;
                g.revoked_at = Some(now);
            }
            g.previous_secret_hash = None;
            g.previous_until = None;
        })
        .await
    }

    async fn delete_grant(&self, id: &GrantId) -> Result<bool, StoreError> {
        // Its limit windows and leases go with it (a removed grant serves no request;
        // the settle of one still in flight finds its lease gone and does nothing).
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        for sql in [
            // The grant's row, then its windows: the order `update_grant` and the
            // limits (migrations/0002) take them, not the DELETEs' scan order.
            "SELECT 1 FROM grants WHERE id = $1 FOR UPDATE",
            "SELECT keygate_limits_lock_grants(ARRAY[$1])",
            "DELETE FROM limit_windows WHERE grant_id = $1",
            "DELETE FROM limit_leases WHERE grant_id = $1",
        ] {
            exec(&tx, sql, &[&id.as_str()]).await?;
        }
        let existed = exec(&tx, "DELETE FROM grants WHERE id = $1", &[&id.as_str()]).await? > 0;
        tx.commit().await.map_err(pg_error)?;
        Ok(existed)
    }

    async fn touch_grants(&self, used: &[(GrantId, UnixTime)]) -> Result<(), StoreError> {
        for (id, at) in used {
            let at = *at;
            self.update_grant(id, &move |g: &mut GrantRecord| {
                if g.last_used_at.is_none_or(|prev| prev < at) {
                    g.last_used_at = Some(at);
                }
            })
            .await?;
        }
        Ok(())
    }

    // --- passkeys ----------------------------------------------------------------

    /// The credential id's UNIQUE constraint decides: of two registrations racing on
    /// one credential id, the second's insert does nothing and nothing of it is kept.
    async fn insert_user_with_passkey(
        &self,
        user: &UserRecord,
        pk: &PasskeyRecord,
    ) -> Result<PasskeyInsert, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if insert_passkey(&tx, pk).await? == 0 {
            return Ok(PasskeyInsert::CredentialTaken);
        }
        exec(&tx, UPSERT_USER, &[&user.id.as_str(), &encode_value(user)?]).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(PasskeyInsert::Inserted)
    }

    async fn insert_passkey(&self, pk: &PasskeyRecord) -> Result<PasskeyInsert, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if rows(&tx, LOCK_USER_SHARED, &[&pk.user_id.as_str()])
            .await?
            .is_empty()
        {
            return Ok(PasskeyInsert::NoSuchUser);
        }
        if insert_passkey(&tx, pk).await? == 0 {
            return Ok(PasskeyInsert::CredentialTaken);
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(PasskeyInsert::Inserted)
    }

    /// Only the record changes, and only while the row exists: never a resurrection.
    async fn put_passkey(&self, pk: &PasskeyRecord) -> Result<(), StoreError> {
        self.exec(
            "UPDATE passkeys SET record = $2 WHERE id = $1",
            &[&pk.id.as_str(), &encode_value(pk)?],
        )
        .await
        .map(|_| ())
    }

    async fn passkey(&self, id: &PasskeyId) -> Result<Option<PasskeyRecord>, StoreError> {
        self.record(
            trees::PASSKEYS,
            "SELECT record FROM passkeys WHERE id = $1",
            &[&id.as_str()],
        )
        .await
    }

    async fn passkey_by_credential(
        &self,
        credential_id_b64: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError> {
        let found: Option<PasskeyRecord> = self
            .record(
                trees::PASSKEYS,
                "SELECT record FROM passkeys WHERE credential_id = $1",
                &[&credential_id_b64],
            )
            .await?;
        // As on sled: a record naming another credential is not this credential's.
        Ok(found.filter(|pk| pk.credential_id == credential_id_b64))
    }

    async fn passkeys_for_user(&self, user: &UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        let mut out: Vec<PasskeyRecord> = self
            .records(
                trees::PASSKEYS,
                "SELECT record FROM passkeys WHERE user_id = $1",
                &[&user.as_str()],
            )
            .await?;
        out.sort_by_key(|p| (p.created_at, p.id.clone()));
        Ok(out)
    }

    /// Locks every passkey of the person, then counts them: a concurrent removal waits
    /// for this one and then no longer sees the row removed here, so two removals can
    /// never take the last two.
    async fn delete_passkey_unless_last(
        &self,
        pk: &PasskeyRecord,
    ) -> Result<DeletePasskey, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let ids: Vec<String> = rows(
            &tx,
            "SELECT id FROM passkeys WHERE user_id = $1 ORDER BY id FOR UPDATE",
            &[&pk.user_id.as_str()],
        )
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect::<Result<_, _>>()?;
        if !ids.iter().any(|id| id == pk.id.as_str()) {
            return Ok(DeletePasskey::Gone);
        }
        if ids.len() < 2 {
            return Ok(DeletePasskey::Last);
        }
        exec(
            &tx,
            "DELETE FROM passkeys WHERE id = $1",
            &[&pk.id.as_str()],
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(DeletePasskey::Deleted)
    }

    // --- sessions ----------------------------------------------------------------

    /// The person's row is locked exclusively, so a person's sign-ins are counted
    /// against the cap one after the other, on any node (stricter than sled, where two
    /// racing sign-ins may briefly leave one over).
    async fn insert_session(
        &self,
        hash: &str,
        s: &SessionRecord,
        cap: usize,
    ) -> Result<SessionInsert, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let user = s.user_id.as_str();
        if rows(
            &tx,
            "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
            &[&user],
        )
        .await?
        .is_empty()
        {
            return Ok(SessionInsert::NoSuchUser);
        }
        let seq: i64 = match rows(&tx, "SELECT nextval('keygate_seq')", &[])
            .await?
            .first()
        {
            Some(row) => get(row, 0)?,
            None => return Err(StoreError::Postgres("nextval returned nothing".into())),
        };
        let live: Vec<String> = rows(
            &tx,
            "SELECT hash FROM sessions WHERE user_id = $1 AND hash <> $2 \
             ORDER BY created_at, seq, hash FOR UPDATE",
            &[&user, &hash],
        )
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect::<Result<_, _>>()?;
        let excess = (live.len() + 1).saturating_sub(cap.max(1));
        let ended: Vec<&String> = live.iter().take(excess).collect();
        if !ended.is_empty() {
            exec(&tx, "DELETE FROM sessions WHERE hash = ANY($1)", &[&ended]).await?;
        }
        let mut record = s.clone();
        record.seq = uint(seq);
        write_session(&tx, hash, &record).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(SessionInsert::Inserted { ended: excess })
    }

    async fn session(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.record(
            trees::SESSIONS,
            "SELECT record FROM sessions WHERE hash = $1",
            &[&hash],
        )
        .await
    }

    /// Only while the session exists: an ended session stays ended.
    async fn put_session(&self, hash: &str, s: &SessionRecord) -> Result<(), StoreError> {
        self.exec(
            "UPDATE sessions SET seq = $2, created_at = $3, last_seen_at = $4, record = $5 \
             WHERE hash = $1",
            &[
                &hash,
                &int(s.seq),
                &int(s.created_at),
                &int(s.last_seen_at),
                &encode_value(s)?,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn sessions_for_user(
        &self,
        user: &UserId,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let mut out = self
            .rows(
                "SELECT hash, record FROM sessions WHERE user_id = $1",
                &[&user.as_str()],
            )
            .await?
            .iter()
            .map(|row| Ok((get(row, 0)?, record(trees::SESSIONS, row, 1)?)))
            .collect::<Result<Vec<(String, SessionRecord)>, StoreError>>()?;
        out.sort_by(|a, b| (a.1.created_at, a.1.seq, &a.0).cmp(&(b.1.created_at, b.1.seq, &b.0)));
        Ok(out)
    }

    async fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM sessions WHERE hash = $1", &[&hash])
            .await
            .map(|_| ())
    }

    async fn delete_sessions_for_user(
        &self,
        user: &UserId,
        keep: Option<&str>,
    ) -> Result<usize, StoreError> {
        let n = self
            .exec(
                "DELETE FROM sessions WHERE user_id = $1 AND ($2::text IS NULL OR hash <> $2)",
                &[&user.as_str(), &keep],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    // --- ceremonies and connect codes --------------------------------------------

    async fn put_ceremony(&self, id: &str, c: &CeremonyRecord) -> Result<(), StoreError> {
        write_ceremony(&self.client().await?, id, c).await
    }

    async fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError> {
        self.record(
            trees::CEREMONIES,
            "DELETE FROM ceremonies WHERE id = $1 RETURNING record",
            &[&id],
        )
        .await
    }

    async fn anonymous_ceremony_count(&self) -> Result<usize, StoreError> {
        self.count("SELECT count(*) FROM ceremonies WHERE NOT person")
            .await
    }

    async fn ceremony_count(&self) -> Result<usize, StoreError> {
        self.count("SELECT count(*) FROM ceremonies").await
    }

    async fn put_code(&self, hash: &str, c: &CodeRecord) -> Result<(), StoreError> {
        write_code(&self.client().await?, hash, c).await
    }

    async fn take_code(&self, hash: &str) -> Result<Option<CodeRecord>, StoreError> {
        self.record(
            trees::CONNECT_CODES,
            "DELETE FROM connect_codes WHERE hash = $1 RETURNING record",
            &[&hash],
        )
        .await
    }

    async fn code_count(&self) -> Result<usize, StoreError> {
        self.count("SELECT count(*) FROM connect_codes").await
    }

    /// A session expires when `now >= last_seen_at + idle` or `now >= created_at +
    /// absolute`, i.e. `last_seen_at <= now - idle` (never, while `now < idle`).
    async fn sweep_expired(
        &self,
        now: UnixTime,
        idle: u64,
        absolute: u64,
    ) -> Result<Swept, StoreError> {
        let idle_cut = now.checked_sub(idle).map(int);
        let absolute_cut = now.checked_sub(absolute).map(int);
        let sessions = self
            .exec(
                "DELETE FROM sessions WHERE last_seen_at <= $1 OR created_at <= $2",
                &[&idle_cut, &absolute_cut],
            )
            .await?;
        let now = int(now);
        let ceremonies = self
            .exec("DELETE FROM ceremonies WHERE expires_at <= $1", &[&now])
            .await?;
        let codes = self
            .exec("DELETE FROM connect_codes WHERE expires_at <= $1", &[&now])
            .await?;
        // No node asks about a batch a day old.
        self.exec(
            "DELETE FROM usage_batches WHERE written_at < now() - interval '1 day'",
            &[],
        )
        .await?;
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Ok(Swept {
            sessions: n(sessions),
            ceremonies: n(ceremonies),
            codes: n(codes),
        })
    }

    // --- usage -------------------------------------------------------------------

    /// One upsert per row, the batch in one transaction. Rows are written in key order
    /// so two batches touching the same rows lock them in the same order (no deadlock).
    async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&UsageDelta> = deltas.iter().collect();
        sorted.sort_by(|a, b| {
            (a.grant_id.as_str(), a.day, a.model.as_bytes()).cmp(&(
                b.grant_id.as_str(),
                b.day,
                b.model.as_bytes(),
            ))
        });
        let add = usage_upsert(true);
        let batch = format!("{}-{:016x}", self.node, rand::random::<u64>());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        exec(&tx, "INSERT INTO usage_batches (id) VALUES ($1)", &[&batch]).await?;
        for d in sorted {
            write_usage(&tx, &add, d).await?;
        }
        let Err(e) = tx.commit().await else {
            return Ok(());
        };
        // The COMMIT's answer is lost (the connection broke): the batch may have landed.
        // Answering an error would have the caller write it again (counted twice),
        // answering Ok would drop it when it did not: ask.
        drop(client);
        if self.usage_batch_landed(&batch).await? {
            tracing::warn!("a usage batch's commit answer was lost; it had landed");
            return Ok(());
        }
        Err(pg_error(e))
    }

    async fn usage_rows(
        &self,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let sql = format!(
            "SELECT day, model, {} FROM usage WHERE grant_id = $1 \
             AND day >= $2::bigint AND day <= $3::bigint ORDER BY day, model",
            USAGE_COLUMNS.join(", ")
        );
        self.rows(
            &sql,
            &[&grant.as_str(), &i64::from(from_day), &i64::from(to_day)],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(UsageRow {
                day: u32::try_from(get::<i64>(row, 0)?).unwrap_or(u32::MAX),
                model: get(row, 1)?,
                counts: usage_counts(row, 2)?,
            })
        })
        .collect()
    }

    async fn usage_rows_all(
        &self,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<(GrantId, UsageRow)>, StoreError> {
        let sql = format!(
            "SELECT grant_id, day, model, {} FROM usage WHERE day >= $1::bigint \
             AND day <= $2::bigint ORDER BY grant_id, day, model",
            USAGE_COLUMNS.join(", ")
        );
        self.rows(&sql, &[&i64::from(from_day), &i64::from(to_day)])
            .await?
            .iter()
            .map(|row| {
                Ok((
                    parse_grant(trees::USAGE, get(row, 0)?)?,
                    UsageRow {
                        day: u32::try_from(get::<i64>(row, 1)?).unwrap_or(u32::MAX),
                        model: get(row, 2)?,
                        counts: usage_counts(row, 3)?,
                    },
                ))
            })
            .collect()
    }

    async fn usage_total(
        &self,
        grant: &GrantId,
        from_day: u32,
        to_day: u32,
        model: Option<&str>,
    ) -> Result<UsageCounts, StoreError> {
        let rows = self
            .rows(
                USAGE_SUMS,
                &[
                    &grant.as_str(),
                    &i64::from(from_day),
                    &i64::from(to_day),
                    &model,
                ],
            )
            .await?;
        match rows.first() {
            Some(row) => usage_counts(row, 0),
            None => Ok(UsageCounts::default()),
        }
    }

    // --- audit -------------------------------------------------------------------

    async fn append_audit(&self, mut record: AuditRecord) -> Result<AuditRecord, StoreError> {
        let client = self.client().await?;
        let seq: i64 = match rows(&client, "SELECT nextval('keygate_seq')", &[])
            .await?
            .first()
        {
            Some(row) => get(row, 0)?,
            None => return Err(StoreError::Postgres("nextval returned nothing".into())),
        };
        record.seq = uint(seq);
        write_audit(&client, &record).await?;
        Ok(record)
    }

    async fn audit_page(
        &self,
        q: &AuditQuery,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let before = match after {
            None => None,
            Some(a) => match audit_cursor(q, a) {
                Some(c) => Some(c),
                None => return Ok((Vec::new(), None)),
            },
        };
        let user = q.user.as_ref().map(|u| u.as_str());
        let action = q.action.as_ref().map(enum_text).transpose()?;
        let from = int(q.from_ns.unwrap_or(0));
        let until = q.until_ns.map(int);
        let (before_at, before_seq) = (before.map(|b| int(b.0)), before.map(|b| int(b.1)));
        let fetch = int(limit.saturating_add(1) as u64);
        let mut items: Vec<AuditRecord> = self
            .records(
                trees::AUDIT,
                "SELECT record FROM audit WHERE ($1::text IS NULL OR user_id = $1) \
                 AND ($2::text IS NULL OR action = $2) AND at_ns >= $3 \
                 AND ($4::bigint IS NULL OR at_ns < $4) \
                 AND ($5::bigint IS NULL OR (at_ns, seq) < ($5, $6::bigint)) \
                 ORDER BY at_ns DESC, seq DESC LIMIT $7",
                &[
                    &user,
                    &action,
                    &from,
                    &until,
                    &before_at,
                    &before_seq,
                    &fetch,
                ],
            )
            .await?;
        let next = page(&mut items, limit, |r| audit_cursor_of(q, r));
        Ok((items, next))
    }

    async fn sweep_audit_before(&self, cutoff_ns: u64) -> Result<usize, StoreError> {
        let n = self
            .exec("DELETE FROM audit WHERE at_ns < $1", &[&int(cutoff_ns)])
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn limits_acquire(
        &self,
        ask: &LimitAsk<'_>,
    ) -> Result<Result<LimitLease, LimitRefusal>, StoreError> {
        if !ask.has_limits() {
            // No statement, no pooled connection: a grant without limits costs nothing.
            return super::limits::acquire_unlimited(ask);
        }
        super::limits::acquire(&**self.client().await?, &self.node, ask).await
    }

    async fn limits_settle(
        &self,
        lease: &LimitLease,
        actual: Spend,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if !lease.is_held() {
            return Ok(());
        }
        super::limits::settle(&**self.client().await?, lease, actual, now_ms)
            .await
            .map(drop)
    }

    async fn limits_heartbeat(&self, ttl: std::time::Duration) -> Result<(), StoreError> {
        // "Alive" bounded well within the TTL, on its own connection, which is thrown
        // away (not pooled) when it times out: one hanging without closing (a failover
        // without a reset) would hold every later beat behind it.
        let bound = (ttl / 5).max(std::time::Duration::from_millis(100));
        let timed_out = || StoreError::Postgres("timed out".into());
        let beat = tokio::time::timeout(bound, self.beat.get())
            .await
            .map_err(|_| timed_out())?
            .map_err(pool_error)?;
        match tokio::time::timeout(bound, super::limits::alive(&**beat, &self.node, ttl)).await {
            Ok(alive) => alive?,
            Err(_) => {
                drop(Object::take(beat));
                return Err(timed_out());
            }
        }
        drop(beat);
        // The reclaim runs beside the beats, on the main pool, one at a time: however
        // long it waits (a busy pool, an overdue lease's window), no beat waits for it.
        if self
            .reclaiming
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let (pool, reclaiming) = (self.pool.clone(), self.reclaiming.clone());
        tokio::spawn(async move {
            let outcome = async {
                let client = pool.get().await.map_err(pool_error)?;
                match tokio::time::timeout(ttl, super::limits::reclaim(&**client, ttl)).await {
                    Ok(reclaimed) => reclaimed,
                    Err(_) => {
                        drop(Object::take(client));
                        Err(timed_out())
                    }
                }
            };
            match outcome.await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    reclaimed = n,
                    "reclaimed the shared-limit leases of a node that stopped with requests \
                     in flight (each counted as having spent its reservation)"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "reclaiming dead nodes' leases failed; next beat retries");
                }
            }
            reclaiming.store(false, std::sync::atomic::Ordering::SeqCst);
        });
        Ok(())
    }

    async fn limits_held(&self, grant: &GrantId) -> Result<(u32, Spend), StoreError> {
        let rows = self
            .rows(
                "SELECT in_flight, reserved_usd::bigint, reserved_tokens::bigint \
                 FROM limit_windows WHERE grant_id = $1 AND scope = ''",
                &[&grant.as_str()],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok((0, Spend::default()));
        };
        let get = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = row.try_get(i).map_err(pg_error)?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        Ok((
            u32::try_from(get(0)?).unwrap_or(u32::MAX),
            Spend {
                usd: keygate_core::money::Usd::from_nanos(get(1)?),
                tokens: get(2)?,
            },
        ))
    }
}

/// Inserts a passkey unless its credential id is taken; how many rows it wrote.
async fn insert_passkey<C: GenericClient>(c: &C, pk: &PasskeyRecord) -> Result<u64, StoreError> {
    let record = encode_value(pk)?;
    exec(
        c,
        INSERT_PASSKEY,
        &[
            &pk.id.as_str(),
            &pk.user_id.as_str(),
            &pk.credential_id,
            &record,
        ],
    )
    .await
}

async fn write_ceremony<C: GenericClient>(
    c: &C,
    id: &str,
    r: &CeremonyRecord,
) -> Result<(), StoreError> {
    let record = encode_value(r)?;
    let user = r.user_id.as_ref().map(|u| u.as_str());
    exec(
        c,
        UPSERT_CEREMONY,
        &[
            &id,
            &user,
            &is_person_ceremony_id(id),
            &int(r.expires_at),
            &record,
        ],
    )
    .await
    .map(|_| ())
}

async fn write_code<C: GenericClient>(c: &C, hash: &str, r: &CodeRecord) -> Result<(), StoreError> {
    let record = encode_value(r)?;
    exec(
        c,
        UPSERT_CODE,
        &[&hash, &r.user_id.as_str(), &int(r.expires_at), &record],
    )
    .await
    .map(|_| ())
}

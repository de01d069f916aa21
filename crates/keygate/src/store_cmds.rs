//! `keygate backup`, `keygate restore`, and `keygate keys rotate|retire`: each works on
//! the data directory's store when no keygate holds it, and through the running
//! keygate's admin API when one does (sled lets one process open a store).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use keygate_core::audit::Action;
use keygate_server::Config;
use keygate_server::keyfile;
use keygate_server::services::audit::{Audit, Target};
use keygate_server::services::backup;
use keygate_server::services::master_keys::{self, KeyringView, Progress};
use keygate_store::{Snapshot, Store, StoreError, StoreOptions};
use reqwest::Method;

use crate::admin::client::Client;

/// How to reach a running keygate, for the commands that go through it when one holds
/// the store.
#[derive(Args, Clone, Debug)]
pub struct Online {
    /// The running keygate (default: KEYGATE_URL, else the address it listens on from
    /// the configuration, on loopback when it listens on every address).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Read the admin key (scope `admin`) from this file instead of KEYGATE_ADMIN_KEY.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

impl Online {
    fn client(&self, config: Option<&Config>) -> anyhow::Result<Client> {
        let url = match (&self.url, std::env::var("KEYGATE_URL").ok()) {
            (Some(u), _) => u.clone(),
            (None, Some(u)) if !u.is_empty() => u,
            _ => {
                let mut at = config.map_or_else(
                    || std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
                    |c| c.listen,
                );
                if at.ip().is_unspecified() {
                    at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{at}")
            }
        };
        let key = crate::admin::admin_key(self.key_file.as_deref())?;
        Client::new(&url, key)
    }
}

/// The data directory's store as a command finds it.
enum StoreAt {
    /// Opened here: no keygate runs on it.
    Free(Box<Store>),
    /// A running keygate holds it (sled's lock).
    Held,
    /// There is none yet (`keygate init` made only the key file): nothing is sealed.
    Missing,
}

fn open_store(config: &Config) -> anyhow::Result<StoreAt> {
    if let Some(url) = &config.store_url {
        bail!(
            "unsupported_on_this_store: this command works on the sled store in the data \
             directory, and this keygate's store is PostgreSQL ({}). {}",
            url.redacted(),
            POSTGRES_INSTEAD
        );
    }
    let dir = keyfile::store_path(&config.data_dir);
    if !dir.exists() {
        return Ok(StoreAt::Missing);
    }
    match Store::open(&dir, &StoreOptions::default()) {
        Ok(store) => Ok(StoreAt::Free(Box::new(store))),
        Err(StoreError::Locked { .. }) => Ok(StoreAt::Held),
        Err(e) => Err(e.into()),
    }
}

/// What to do instead of the sled-only commands on a PostgreSQL store.
const POSTGRES_INSTEAD: &str = "Back it up and restore it with PostgreSQL's own tools (pg_dump \
     and pg_restore, or your provider's snapshots) and keep the master keyring (key file or \
     KEYGATE_MASTER_KEYS) beside it; every node must hold the same keyring, so master keys \
     are rotated by giving every node the new keyring (docs/OPERATIONS.md).";

fn no_store(config: &Config) -> anyhow::Error {
    anyhow::anyhow!(
        "no store in {} (set KEYGATE_DATA_DIR to the data directory)",
        config.data_dir.display()
    )
}

fn say(line: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

// --- backup ------------------------------------------------------------------------

/// `keygate backup FILE`: through the running keygate (`GET /admin/backup`), or with
/// `--offline` from the data directory's store when no keygate runs.
pub fn backup(file: &Path, config: &Config, offline: bool, online: &Online) -> anyhow::Result<()> {
    if file.exists() {
        bail!(
            "{} already exists; a backup never overwrites a file",
            file.display()
        );
    }
    let bytes = match offline {
        true => {
            let store = match open_store(config)? {
                StoreAt::Free(store) => store,
                StoreAt::Missing => return Err(no_store(config)),
                StoreAt::Held => bail!(
                    "a running keygate holds the store in {}; back up through it: \
                     `keygate backup FILE` without --offline (admin key of scope admin)",
                    config.data_dir.display()
                ),
            };
            let snapshot = crate::block_on(store.snapshot(keygate_core::time::now()))?;
            let bytes = snapshot.to_bytes()?;
            actix_web::rt::System::new().block_on(async {
                let audit = Audit::system(keygate_core::time::Clock::system());
                audit
                    .record(
                        &store,
                        Action::StoreBackedUp,
                        None,
                        None,
                        serde_json::json!({"entries": snapshot.summary().entries(), "bytes": bytes.len()}),
                    )
                    .await
            })?;
            bytes
        }
        false => {
            online
                .client(Some(config))?
                .send(Method::GET, "/admin/backup", &[], None)?
                .body
        }
    };
    // Checked whole before it is kept: a cut download is not a backup.
    let summary = Snapshot::from_bytes(&bytes)
        .context("the backup received does not read back")?
        .summary();
    write_private(file, &bytes)?;
    say(&format!(
        "backup written to {} ({} bytes; {} entries in {} trees; store schema {}). \
         Sealed keys stay sealed in it and the master keyring is not in it: keep master.keys \
         (or KEYGATE_MASTER_KEYS) backed up apart from it.",
        file.display(),
        bytes.len(),
        summary.entries(),
        summary.trees.len(),
        summary.schema_version
    ))
}

/// Writes `bytes` to `file`, created 0600 (never chmod-ed after) beside it under a
/// temporary name, synced, then renamed into place.
fn write_private(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", file.display()));
    }
    Ok(())
}

// --- restore -----------------------------------------------------------------------

/// `keygate restore FILE --data-dir DIR`: the keyring from `--master-keys FILE` (copied
/// into DIR) or `KEYGATE_MASTER_KEYS` (not written anywhere).
pub fn restore(
    file: &Path,
    data_dir: &Path,
    master_keys: Option<&Path>,
    config: &Config,
) -> anyhow::Result<()> {
    if let Some(url) = &config.store_url {
        bail!(
            "unsupported_on_this_store: a backup restores into a sled store in a new data \
             directory, and this keygate's store is PostgreSQL ({}). {}",
            url.redacted(),
            POSTGRES_INSTEAD
        );
    }
    let (keyring, from_file) = match (master_keys, &config.master_keys) {
        (Some(_), Some(_)) => bail!(
            "both --master-keys and KEYGATE_MASTER_KEYS are set: keep the one keygate will \
             be started with"
        ),
        (Some(path), None) => (keyfile::read(path)?, true),
        (None, Some(_)) => (keyfile::load_existing(config)?, false),
        (None, None) => bail!(
            "restore needs the master keyring the backup was sealed with: --master-keys FILE \
             (your copy of master.keys) or KEYGATE_MASTER_KEYS"
        ),
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let restored = backup::restore(&bytes, data_dir, &keyring, from_file)?;
    say(&format!(
        "restored {} entries (store schema {}, backup of {}) into {}; the keyring opened all {} sealed keys{}. \
         Start it with KEYGATE_DATA_DIR={}.",
        restored.summary.entries(),
        restored.summary.schema_version,
        keygate_core::calendar::to_rfc3339(restored.summary.created_at),
        data_dir.display(),
        restored.sealed_records,
        if restored.key_file_written {
            format!(
                "; master keyring written to {}",
                keyfile::key_file_path(data_dir).display()
            )
        } else {
            String::new()
        },
        data_dir.display()
    ))
}

// --- keys rotate / retire / status ------------------------------------------------------

/// `keygate keys rotate`: through the running keygate when one holds the store
/// (`POST /admin/master-keys`; it re-seals in the background), else the key file and a
/// re-seal pass right now.
pub fn rotate(config: &Config, online: &Online) -> anyhow::Result<()> {
    if config.master_keys.is_some() {
        bail!(
            "KEYGATE_MASTER_KEYS is set: rotate by putting a new `kid:key` first in that variable \
             and restarting keygate (the re-seal runs at start)"
        );
    }
    let store = match open_store(config)? {
        StoreAt::Free(store) => Some(*store),
        StoreAt::Missing => None,
        StoreAt::Held => {
            let reply =
                online
                    .client(Some(config))?
                    .send(Method::POST, "/admin/master-keys", &[], None)?;
            let view = parse_view(&reply.body)?;
            return say(&format!(
                "new active master key {} (in the running keygate and its key file); {} sealed \
                 records are being re-sealed in the background (`keygate keys status`)",
                view.active, view.reseal_remaining
            ));
        }
    };
    let file = keyfile::key_file_path(&config.data_dir);
    let ring = keyfile::read(&file)?;
    let next = master_keys::rotated(&file, &ring)?;
    let kid = next.active_kid().to_owned();
    say(&format!(
        "new active master key {kid}; older keys are kept so existing records still open"
    ))?;
    let Some(store) = store else {
        return Ok(());
    };
    actix_web::rt::System::new().block_on(async {
        let report = |p: Progress| {
            if p.total > 0 {
                note(&format!(
                    "re-sealed {} of {} records ({} remaining)",
                    p.done, p.total, p.remaining
                ));
            }
        };
        master_keys::reseal_pass(&store, &next, &report).await?;
        Audit::system(keygate_core::time::Clock::system())
            .record(
                &store,
                Action::MasterKeyRotated,
                None,
                Some(Target::MasterKey(&kid)),
                serde_json::json!({"kid": kid, "previous": ring.active_kid()}),
            )
            .await?;
        anyhow::Ok(())
    })
}

/// `keygate keys retire KID`.
pub fn retire(config: &Config, kid: &str, online: &Online) -> anyhow::Result<()> {
    if config.master_keys.is_some() {
        bail!("KEYGATE_MASTER_KEYS is set: retire a key by removing its entry from that variable");
    }
    let store = match open_store(config)? {
        StoreAt::Free(store) => store,
        StoreAt::Missing => return Err(no_store(config)),
        StoreAt::Held => {
            let path = format!("/admin/master-keys/{}", kid_segment(kid)?);
            online
                .client(Some(config))?
                .send(Method::DELETE, &path, &[], None)?;
            return say(&format!("master key {kid} retired"));
        }
    };
    let file = keyfile::key_file_path(&config.data_dir);
    let ring = keyfile::read(&file)?;
    crate::block_on(master_keys::retired(&file, &store, &ring, kid)).map_err(explain)?;
    actix_web::rt::System::new().block_on(
        Audit::system(keygate_core::time::Clock::system()).record(
            &store,
            Action::MasterKeyRetired,
            None,
            Some(Target::MasterKey(kid)),
            serde_json::json!({"kid": kid}),
        ),
    )?;
    say(&format!("master key {kid} retired"))
}

/// `keygate keys status`: kids, records per kid, what the re-seal has left.
pub fn status(config: &Config, online: &Online) -> anyhow::Result<()> {
    let view = match open_store(config)? {
        StoreAt::Free(store) => {
            let ring = keyfile::load_existing(config)?;
            crate::block_on(master_keys::view(
                &store,
                &ring,
                config.master_keys.is_none(),
            ))?
        }
        StoreAt::Missing => return Err(no_store(config)),
        StoreAt::Held => parse_view(
            &online
                .client(Some(config))?
                .send(Method::GET, "/admin/master-keys", &[], None)?
                .body,
        )?,
    };
    for k in &view.keys {
        let mark = if k.active { " (active)" } else { "" };
        say(&format!("{}{mark}  {} sealed records", k.kid, k.records))?;
    }
    say(&format!(
        "{} records wait for the re-seal",
        view.reseal_remaining
    ))
}

fn parse_view(body: &[u8]) -> anyhow::Result<KeyringView> {
    serde_json::from_slice(body).context("the answer was not the keyring view")
}

/// A kid as a path segment (kids are letters, digits, `-`, `.`, `_`).
fn kid_segment(kid: &str) -> anyhow::Result<&str> {
    let ok = !kid.is_empty()
        && kid != "."
        && kid != ".."
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        bail!("{kid:?} is not a master key id (see `keygate keys list`)");
    }
    Ok(kid)
}

/// A refusal the server would answer as 409/404, said in the same words offline.
fn explain(e: keygate_server::error::ServerError) -> anyhow::Error {
    let wire = e.to_openai();
    anyhow::anyhow!("{}: {}", wire.code.unwrap_or("error"), wire.message)
}

// --- store copy ----------------------------------------------------------------------

/// One side of `keygate store copy`.
#[derive(Clone, Debug)]
pub enum Location {
    /// A data directory; its sled store is `DIR/store`.
    Sled(PathBuf),
    /// A PostgreSQL database (the URL may hold a password: shown redacted).
    Postgres(keygate_server::config::StoreUrl),
}

impl Location {
    /// `sled:DIR`, `postgres://…` / `postgresql://…`, or `postgres` for the configured
    /// `store_url` (`KEYGATE_STORE_URL`: keeps a password off the command line).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(dir) = raw.strip_prefix("sled:") {
            if dir.is_empty() {
                return Err("sled: needs the data directory, e.g. sled:/var/lib/keygate".into());
            }
            return Ok(Self::Sled(PathBuf::from(dir)));
        }
        if raw == "postgres" {
            let url = std::env::var("KEYGATE_STORE_URL")
                .map_err(|_| "`postgres` takes the URL from KEYGATE_STORE_URL, which is unset")?;
            return keygate_server::config::StoreUrl::parse(&url)
                .map(Self::Postgres)
                .map_err(|e| format!("KEYGATE_STORE_URL {e}"));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return keygate_server::config::StoreUrl::parse(raw).map(Self::Postgres);
        }
        Err("must be sled:DIR, postgres://… or postgres (the URL in KEYGATE_STORE_URL)".into())
    }

    fn describe(&self) -> String {
        match self {
            Self::Sled(dir) => format!("sled:{}", dir.display()),
            Self::Postgres(url) => format!("postgres://{}", url.redacted()),
        }
    }

    /// Opens this side: the source must exist; a sled target is created if missing.
    async fn open(&self, create: bool) -> anyhow::Result<Store> {
        let options = StoreOptions::default();
        match self {
            Self::Sled(data_dir) => {
                let dir = if create {
                    keyfile::prepare_store_dir(data_dir)
                        .with_context(|| format!("data directory {}", data_dir.display()))?
                } else {
                    let dir = keyfile::store_path(data_dir);
                    if !dir.exists() {
                        bail!(
                            "no sled store in {} (no {})",
                            data_dir.display(),
                            dir.display()
                        );
                    }
                    dir
                };
                match Store::open(&dir, &options) {
                    Err(StoreError::Locked { .. }) => bail!(
                        "a keygate is running on {}: stop it first (the copy must see a store \
                         nobody changes)",
                        data_dir.display()
                    ),
                    other => Ok(other?),
                }
            }
            Self::Postgres(url) => Store::connect(url.expose(), &options)
                .await
                .with_context(|| format!("PostgreSQL store at {}", url.redacted())),
        }
    }
}

/// `keygate store copy --from A --to B`: every entry of A written into B, still
/// sealed, then B read back and checked (`keygate_store::copy`).
pub async fn copy(from: &Location, to: &Location) -> anyhow::Result<()> {
    if from.describe() == to.describe() {
        bail!("--from and --to are the same store");
    }
    let source = from.open(false).await?;
    let target = to.open(true).await?;
    let report = keygate_store::copy(&source, &target)
        .await
        .with_context(|| format!("copy {} → {}", from.describe(), to.describe()))?;
    for (kind, n) in &report.counts {
        say(&format!("{kind:>14} {n}"))?;
    }
    let total: u64 = report.counts.values().sum();
    say(&format!(
        "copied {total} entries from {} to {} ({} already there unchanged); the target \
         holds exactly the source's entries (verified). Start keygate on the target with \
         the same master keyring.",
        from.describe(),
        to.describe(),
        report.unchanged
    ))
}

/// `keygate migrate --check`: the migrations the configured store has not applied yet,
/// without applying any. `Ok(true)` when none are pending.
pub async fn migrations_pending(config: &Config) -> anyhow::Result<bool> {
    let pending: Vec<(u32, String)> = match &config.store_url {
        Some(url) => keygate_store::postgres_pending_migrations(url.expose())
            .await
            .with_context(|| format!("PostgreSQL store at {}", url.redacted()))?,
        None => {
            let dir = keyfile::store_path(&config.data_dir);
            if !dir.exists() {
                bail!(
                    "no store in {} yet (keygate creates it at its first start)",
                    dir.display()
                );
            }
            match keygate_store::sled_pending_migrations(&dir) {
                Err(StoreError::Locked { .. }) => bail!(
                    "a keygate is running on {}: it applied every migration it knows when it \
                     started",
                    config.data_dir.display()
                ),
                other => other?,
            }
        }
    };
    if pending.is_empty() {
        say("no pending migrations")?;
        return Ok(true);
    }
    for (version, name) in &pending {
        say(&format!("pending {version:04} {name}"))?;
    }
    Ok(false)
}

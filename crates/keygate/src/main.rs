//! The `keygate` binary: parses the command line, loads configuration, and hands over
//! to the library crates. Nothing else lives here.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod admin;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use keygate_server::config::RawConfig;
use keygate_server::keyfile::{KeyFileError, KeySource};
use keygate_server::{Application, keyfile};

mod secret_input;
mod store_cmds;

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "A passkey-protected vault for OpenAI keys and an OpenAI-compatible streaming proxy.",
    long_about = "A passkey-protected vault for OpenAI keys and an OpenAI-compatible streaming proxy.\n\n\
        Configuration comes from an optional TOML file (--config) and KEYGATE_* environment \
        variables, which win. See docs/CONFIG.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (creates the data directory and a master key file on first run).
    Serve {
        /// TOML configuration file; KEYGATE_* environment variables override it.
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create the data directory and a new master key file (mode 0600); never overwrites.
    Init {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Open the store and apply pending schema migrations, then exit. With --check,
    /// only list the pending ones (exit status 1 when there are any), applying nothing.
    #[command(after_help = "Examples:\n  \
        keygate migrate --check && echo up to date   # in a deploy pipeline\n  \
        KEYGATE_STORE_URL=postgres://keygate@db/keygate keygate migrate")]
    Migrate {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
        /// List pending migrations without applying them; exit 1 when there are any.
        #[arg(long)]
        check: bool,
    },
    /// Move a store between backends.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Serve the demo chat app on its own origin, next to a running keygate.
    Demo {
        /// The keygate to connect to (its public URL).
        #[arg(long, default_value = "http://localhost:8080")]
        vault: String,
        /// Where the demo listens; a different port is a different origin.
        #[arg(long, default_value = "127.0.0.1:5173")]
        listen: std::net::SocketAddr,
    },
    /// Manage a running keygate through its admin API: people, grants, admin keys,
    /// usage, the audit log and the operator key.
    Admin(Box<admin::AdminArgs>),
    /// Write a backup of the store to FILE (mode 0600): a consistent snapshot, taken
    /// through the running keygate (admin key of scope `admin`), or with --offline from
    /// the data directory when none runs. Sealed keys stay sealed; the master keyring is
    /// not in it.
    #[command(after_help = "Examples:\n  \
        KEYGATE_ADMIN_KEY=... keygate backup /backups/keygate-$(date +%F).kgbackup\n  \
        keygate backup --offline --config keygate.toml keygate.kgbackup")]
    Backup {
        /// Where to write the backup; never overwritten.
        file: PathBuf,
        /// Read the data directory's store directly (no keygate may be running on it).
        #[arg(long)]
        offline: bool,
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        online: store_cmds::Online,
    },
    /// Restore a backup into a new, empty data directory. The master keyring (from
    /// --master-keys FILE, copied into DIR, or KEYGATE_MASTER_KEYS) must open every
    /// sealed key of the backup, checked before anything is written.
    #[command(after_help = "Example:\n  \
        keygate restore keygate-2026-11-30.kgbackup --data-dir /var/lib/keygate-new --master-keys master.keys.backup")]
    Restore {
        /// The backup file (`keygate backup`).
        file: PathBuf,
        /// The new data directory: missing or empty.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The master key file the backup's keys were sealed with (your copy of
        /// master.keys); written to DIR/master.keys (0600).
        #[arg(long, value_name = "FILE")]
        master_keys: Option<PathBuf>,
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Inspect or rotate the master keyring.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Copy everything from one store into another (sled to PostgreSQL and back),
    /// still sealed, then check the target holds exactly the source's entries. Safe
    /// to run again: an interrupted or repeated copy ends the same. Stop the keygate
    /// using the source first; start the target's with the same master keyring.
    #[command(after_help = "Examples:\n  \
        keygate store copy --from sled:/var/lib/keygate --to postgres://keygate@db.internal/keygate\n  \
        KEYGATE_STORE_URL=postgres://… keygate store copy --from sled:/var/lib/keygate --to postgres\n  \
        keygate store copy --from postgres --to sled:/var/lib/keygate-back")]
    Copy {
        /// sled:DATA_DIR, postgres://…, or `postgres` (the URL in KEYGATE_STORE_URL,
        /// which keeps a password off the command line).
        /// (Parsed after clap, whose refusal would quote the value: a password.)
        #[arg(long)]
        from: String,
        /// Same forms; a sled target is created if missing.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// List the master key ids (kids); the active one is marked. Never prints keys.
    List {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Add a new active master key; older keys stay to open old records, which are
    /// re-sealed under the new one. With a keygate running on the data directory this
    /// goes through it (admin key of scope `admin`) and it re-seals in the background;
    /// otherwise the key file is changed and the records re-sealed now.
    #[command(after_help = "Examples:\n  \
        KEYGATE_ADMIN_KEY=... keygate keys rotate        # a keygate is running\n  \
        keygate keys rotate --config keygate.toml        # none is")]
    Rotate {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        online: store_cmds::Online,
    },
    /// Remove an old master key once no sealed record uses it (refused, naming how many
    /// still do); never the active key. Through the running keygate when there is one.
    #[command(after_help = "Example:\n  keygate keys status\n  keygate keys retire mk-abcde")]
    Retire {
        /// The key id (`keygate keys list`).
        kid: String,
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        online: store_cmds::Online,
    },
    /// How many sealed records use each master key, and how many wait for the re-seal.
    #[command(after_help = "Example:\n  keygate keys status")]
    Status {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        online: store_cmds::Online,
    },
    /// Set the operator's OpenAI key, which plans with `use_operator_key = true` lend to
    /// people who stored none. Read from standard input (not echoed on a terminal), never
    /// from the command line; sealed with the master keyring. Only while no keygate is
    /// running on this data directory (a running one: `PUT /admin/operator-key`).
    ///
    /// Example: `keygate keys set-operator < operator-key.txt`
    SetOperator {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Caught only to refuse it without repeating it: a key given here is already in
        /// the shell history and the process list. Every extra word is caught (clap
        /// would repeat one it does not expect).
        #[arg(hide = true, num_args = 0.., trailing_var_arg = true)]
        on_command_line: Vec<String>,
    },
    /// Delete the operator's OpenAI key (offline, like set-operator).
    ClearOperator {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // `serve --help` ends with every KEYGATE_* setting and its default, from the same
    // table the configuration is read with.
    let command = Cli::command().mut_subcommand("serve", |serve| {
        serve.after_help(keygate_server::config::env_help())
    });
    let cli = match command
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "keygate: {}", one_line(&e));
            if let Some(hint) = hint(&e) {
                let _ = writeln!(err, "hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A command line clap refused, said on one line like every other failure (with
/// clap's tip when it has one); help and version requests print as clap prints them.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let rendered = e.render().to_string();
    let text: Vec<&str> = rendered.lines().map(str::trim).collect();
    // The first paragraph is the error (with its context: the missing arguments, the
    // possible values); then any tip; the usage line names the command to ask for help.
    let mut line = text
        .iter()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(rest) = line.strip_prefix("error: ") {
        line = rest.to_owned();
    }
    for tip in text.iter().filter_map(|l| l.strip_prefix("tip: ")) {
        line.push_str("; ");
        line.push_str(tip);
    }
    let command = text
        .iter()
        .find_map(|l| l.strip_prefix("Usage: "))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .map(|c| format!("`{c} --help`"))
        .unwrap_or_else(|| "--help".into());
    let _ = writeln!(std::io::stderr(), "keygate: {line} (see {command})");
    std::process::exit(e.exit_code())
}

/// The error and its causes on one line, each said once: a cause whose text its
/// parent already includes (`{source}` in the parent's message) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

/// What to do about the most common start-up failures.
fn hint(e: &anyhow::Error) -> Option<String> {
    use keygate_server::app::StartError;
    for cause in e.chain() {
        if let Some(start) = cause.downcast_ref::<StartError>() {
            match start {
                StartError::Bind { addr, source }
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    return Some(format!(
                        "another program (perhaps another keygate) is listening on {addr}; \
                         stop it or choose another address with KEYGATE_LISTEN"
                    ));
                }
                StartError::Bind { addr, .. } => {
                    return Some(format!(
                        "choose an address this user may listen on with KEYGATE_LISTEN (now {addr})"
                    ));
                }
                StartError::KeyFile(KeyFileError::MissingForExistingStore { .. }) => {
                    return Some(
                        "if this is the wrong data directory, point KEYGATE_DATA_DIR at the right one"
                            .into(),
                    );
                }
                StartError::DataDir { .. } => {
                    return Some(
                        "set KEYGATE_DATA_DIR to a directory this user can write (default ./keygate-data)"
                            .into(),
                    );
                }
                _ => {}
            }
        }
        if let Some(KeyFileError::Io { source, .. }) = cause.downcast_ref::<KeyFileError>()
            && source.kind() == std::io::ErrorKind::NotFound
        {
            return Some(
                "run `keygate init` to create the data directory and its master key file, \
                 or set KEYGATE_DATA_DIR to the data directory that has one"
                    .into(),
            );
        }
        if let Some(keygate_store::StoreError::Locked { .. }) =
            cause.downcast_ref::<keygate_store::StoreError>()
        {
            return Some(
                "stop the other keygate, or give this one its own KEYGATE_DATA_DIR".into(),
            );
        }
        if cause
            .downcast_ref::<keygate_server::config::ConfigError>()
            .is_some()
        {
            return Some("`keygate serve --help` lists every setting and its default".into());
        }
    }
    None
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<keygate_server::Config> {
    let raw = RawConfig::load(config.map(PathBuf::as_path))?;
    Ok(raw.validate()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = load(config.as_ref())?;
            keygate_server::telemetry::init(
                config.log_format,
                std::io::stderr,
                std::io::stderr().is_terminal(),
            );
            serve(config)
        }
        Command::Init { config } => {
            let config = load(config.as_ref())?;
            if config.master_keys.is_some() {
                anyhow::bail!(
                    "KEYGATE_MASTER_KEYS is set; the keyring comes from it, no key file is needed"
                );
            }
            let (file, ring) = keyfile::init(&config.data_dir)?;
            out(&format!(
                "created {} with master key {} (mode 0600). Back this file up: without it the stored keys cannot be opened.",
                file.display(),
                ring.active_kid()
            ))
        }
        Command::Migrate {
            config,
            check: true,
        } => {
            let config = load(config.as_ref())?;
            if block_on(store_cmds::migrations_pending(&config))? {
                Ok(())
            } else {
                anyhow::bail!("migrations are pending (`keygate migrate` applies them)")
            }
        }
        Command::Store {
            action: StoreAction::Copy { from, to },
        } => {
            let side = |flag: &str, raw: &str| {
                store_cmds::Location::parse(raw).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
            };
            block_on(store_cmds::copy(
                &side("--from", &from)?,
                &side("--to", &to)?,
            ))
        }
        Command::Migrate {
            config,
            check: false,
        } => {
            let config = load(config.as_ref())?;
            keygate_server::telemetry::init(
                config.log_format,
                std::io::stderr,
                std::io::stderr().is_terminal(),
            );
            let options = keygate_store::StoreOptions::default();
            let store = match &config.store_url {
                // Connecting applies the pending SQL migrations (once across nodes).
                Some(url) => block_on(keygate_store::Store::connect(url.expose(), &options))
                    .with_context(|| format!("PostgreSQL store at {}", url.redacted()))?,
                None => {
                    let dir = keyfile::prepare_store_dir(&config.data_dir)
                        .with_context(|| format!("data directory {}", config.data_dir.display()))?;
                    keygate_store::Store::open(&dir, &options)?
                }
            };
            out(&format!(
                "store schema version {}",
                block_on(store.schema_version())?
            ))
        }
        Command::Demo { vault, listen } => {
            let vault =
                url::Url::parse(&vault).with_context(|| format!("--vault {vault} is not a URL"))?;
            actix_web::rt::System::new().block_on(async move {
                let (server, addr) =
                    keygate_server::demo::build(listen, &vault).context("demo could not start")?;
                out(&format!(
                    "demo app on http://{addr} (connecting to keygate at {vault})"
                ))?;
                server.await.context("demo server error")
            })
        }
        Command::Admin(args) => admin::run(*args),
        Command::Backup {
            file,
            offline,
            config,
            online,
        } => {
            let config = load(config.as_ref())?;
            store_cmds::backup(&file, &config, offline, &online)
        }
        Command::Restore {
            file,
            data_dir,
            master_keys,
            config,
        } => store_cmds::restore(
            &file,
            &data_dir,
            master_keys.as_deref(),
            &load(config.as_ref())?,
        ),
        Command::Keys { action } => match action {
            KeysAction::List { config } => {
                let config = load(config.as_ref())?;
                let ring = keyring(&config)?;
                for kid in ring.kids() {
                    let mark = if kid == ring.active_kid() {
                        " (active)"
                    } else {
                        ""
                    };
                    out(&format!("{kid}{mark}"))?;
                }
                Ok(())
            }
            KeysAction::Rotate { config, online } => {
                store_cmds::rotate(&load(config.as_ref())?, &online)
            }
            KeysAction::Retire {
                kid,
                config,
                online,
            } => store_cmds::retire(&load(config.as_ref())?, &kid, &online),
            KeysAction::Status { config, online } => {
                store_cmds::status(&load(config.as_ref())?, &online)
            }
            KeysAction::SetOperator {
                config,
                on_command_line,
            } => {
                use keygate_server::services::operator_key;
                if !on_command_line.is_empty() {
                    anyhow::bail!(
                        "the key is read from standard input, never from the command line \
                         (where the shell history and the process list keep it): \
                         `keygate keys set-operator < operator-key.txt`"
                    );
                }
                let config = load(config.as_ref())?;
                // The store first: a running server is said before anyone types a key.
                let store = operator_key::open_offline(&config)?;
                let key = secret_input::read_line(
                    "Operator's OpenAI key (not shown): ",
                    "keygate keys set-operator < operator-key.txt",
                )?;
                let now = keygate_core::time::now();
                let view = actix_web::rt::System::new().block_on(store.set(&key, now))?;
                out(&format!(
                    "operator OpenAI key sealed under master key {}",
                    view.kid.unwrap_or_default()
                ))
            }
            KeysAction::ClearOperator { config } => {
                let config = load(config.as_ref())?;
                let store = keygate_server::services::operator_key::open_offline(&config)?;
                let existed = actix_web::rt::System::new().block_on(store.clear())?;
                out(if existed {
                    "operator OpenAI key deleted"
                } else {
                    "no operator OpenAI key was set"
                })
            }
        },
    }
}

/// Runs a store call (or any future) to completion from the CLI's synchronous code.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    actix_web::rt::System::new().block_on(f)
}

fn keyring(config: &keygate_server::Config) -> anyhow::Result<keygate_core::keyring::Keyring> {
    Ok(keyfile::load_existing(config)?)
}

fn out(line: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

fn serve(config: keygate_server::Config) -> anyhow::Result<()> {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let app = Application::build(config)
            .await
            .context("keygate could not start")?;
        for line in startup_message(&app) {
            out(&line)?;
        }
        app.run_until_stopped().await.context("server error")
    })
}

/// What `keygate serve` tells the person who started it, on stdout: where to go, what
/// apps use as `baseURL`, where the data and the master key are, and what to back up.
fn startup_message(app: &Application) -> Vec<String> {
    let config = &app.state().config;
    let shown = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let public = config.public_url.as_str().trim_end_matches('/');
    let mut listening = config.listen;
    listening.set_port(app.port());
    let mut lines = vec![
        format!("keygate is listening on {listening}"),
        format!("  Open:       {public}/login"),
        format!("  baseURL:    {}", config.base_url()),
        match &config.store_url {
            // Host and database only: the URL may hold a password.
            Some(url) => format!(
                "  Data:       {} (store: PostgreSQL at {})",
                shown(&config.data_dir),
                url.redacted()
            ),
            None => format!(
                "  Data:       {} (store in {})",
                shown(&config.data_dir),
                shown(&keyfile::store_path(&config.data_dir))
            ),
        },
    ];
    match app.key_source() {
        KeySource::Env => lines.push("  Master key: from KEYGATE_MASTER_KEYS".into()),
        KeySource::File { path, created } => {
            lines.push(format!("  Master key: {}", shown(path)));
            if *created {
                lines.push(format!(
                    "  A new master key was generated. Back up {} now and keep it apart from \
                     the data: without it the stored OpenAI keys cannot be opened.",
                    shown(path)
                ));
            }
        }
        KeySource::Given => {}
    }
    if let Some(why) = app.state().passkeys.unavailable_reason() {
        lines.push(format!("  Passkeys are off: {why}"));
    }
    if !app.state().admin_enabled() {
        lines.push("  Admin API: off (set KEYGATE_ADMIN_KEY to turn it on)".into());
    }
    lines
}

//! The `keygate` binary: parses the command line, loads configuration, and hands over
//! to the library crates. Nothing else lives here.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keygate_server::config::RawConfig;
use keygate_server::{Application, keyfile};

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
    /// Open the store and apply pending schema migrations, then exit.
    Migrate {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
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
    /// Inspect or rotate the master keyring.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// List the master key ids (kids); the active one is marked. Never prints keys.
    List {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Add a new active master key to the key file; older keys stay to open old records.
    Rotate {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        Command::Migrate { config } => {
            let config = load(config.as_ref())?;
            keygate_server::telemetry::init(
                config.log_format,
                std::io::stderr,
                std::io::stderr().is_terminal(),
            );
            let store = keygate_store::Store::open(
                &keyfile::store_path(&config.data_dir),
                &keygate_store::StoreOptions::default(),
            )?;
            out(&format!("store schema version {}", store.schema_version()?))
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
            KeysAction::Rotate { config } => {
                let config = load(config.as_ref())?;
                if config.master_keys.is_some() {
                    anyhow::bail!(
                        "KEYGATE_MASTER_KEYS is set: rotate by putting a new `kid:key` first in that variable"
                    );
                }
                let file = keyfile::key_file_path(&config.data_dir);
                let mut ring = keyfile::read(&file)?;
                let kid = ring.add_generated()?.to_owned();
                let tmp = file.with_extension("keys.new");
                keyfile::write_new(&tmp, &ring)?;
                std::fs::rename(&tmp, &file)
                    .with_context(|| format!("replacing {}", file.display()))?;
                out(&format!(
                    "new active master key {kid}; older keys are kept so existing records still open"
                ))
            }
        },
    }
}

fn keyring(config: &keygate_server::Config) -> anyhow::Result<keygate_core::keyring::Keyring> {
    use secrecy::ExposeSecret;
    match &config.master_keys {
        Some(text) => Ok(keygate_core::keyring::Keyring::parse(text.expose_secret())?),
        None => Ok(keyfile::read(&keyfile::key_file_path(&config.data_dir))?),
    }
}

fn out(line: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

fn serve(config: keygate_server::Config) -> anyhow::Result<()> {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let app = Application::build(config).context("keygate could not start")?;
        app.run_until_stopped().await.context("server error")
    })
}

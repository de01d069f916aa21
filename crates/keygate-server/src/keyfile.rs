//! Where the master keyring comes from: `KEYGATE_MASTER_KEYS`, or the key file
//! `master.keys` in the data directory — never the store. The file is created (mode
//! 0600) by `keygate init`, or by the first `keygate serve` on a fresh data directory;
//! it is never silently re-created beside an existing store, whose records it could not
//! open.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use keygate_core::keyring::Keyring;
use secrecy::ExposeSecret;
use thiserror::Error;

use crate::config::Config;

pub const KEY_FILE: &str = "master.keys";
pub const STORE_DIR: &str = "store";

#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("KF0001 {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("KF0002 {path}: {source}")]
    Parse {
        path: String,
        source: keygate_core::CoreError,
    },
    #[error(
        "KF0003 the store in {store} exists but the master key file {file} is missing; \
         restore it from your backup or set KEYGATE_MASTER_KEYS (a new key could not open \
         the sealed keys already stored)"
    )]
    MissingForExistingStore { store: String, file: String },
    #[error("KF0004 {0} already exists; refusing to overwrite a master key file")]
    AlreadyExists(String),
    #[error("KF0005 KEYGATE_MASTER_KEYS: {0}")]
    Env(keygate_core::CoreError),
    #[error("KF0006 {0}")]
    Core(#[from] keygate_core::CoreError),
}

pub fn key_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_DIR)
}

/// Where the running keyring came from (the startup message says so).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `KEYGATE_MASTER_KEYS`.
    Env,
    /// The key file; `created` when this start generated it (it must be backed up).
    File { path: PathBuf, created: bool },
    /// Handed to the application by its caller.
    Given,
}

/// The keyring for the offline commands (`keys list|rotate|set-operator|…`): from the
/// environment, else the existing key file; never creates one.
pub fn load_existing(config: &Config) -> Result<Keyring, KeyFileError> {
    match &config.master_keys {
        Some(text) => Keyring::parse(text.expose_secret()).map_err(KeyFileError::Env),
        None => read(&key_file_path(&config.data_dir)),
    }
}

/// The keyring for `serve`: from the environment, the key file, or a new key file when
/// the data directory is fresh.
pub fn load_or_create(config: &Config) -> Result<(Keyring, KeySource), KeyFileError> {
    if let Some(text) = &config.master_keys {
        return Keyring::parse(text.expose_secret())
            .map(|ring| (ring, KeySource::Env))
            .map_err(KeyFileError::Env);
    }
    let file = key_file_path(&config.data_dir);
    if file.exists() {
        return Ok((
            read(&file)?,
            KeySource::File {
                path: file,
                created: false,
            },
        ));
    }
    let store = store_path(&config.data_dir);
    if store.exists() {
        return Err(KeyFileError::MissingForExistingStore {
            store: store.display().to_string(),
            file: file.display().to_string(),
        });
    }
    let ring = Keyring::generate()?;
    write_new(&file, &ring)?;
    tracing::info!(file = %file.display(), kid = ring.active_kid(), "generated a new master key file");
    Ok((
        ring,
        KeySource::File {
            path: file,
            created: true,
        },
    ))
}

/// `keygate init`: creates the data directory and a new key file; refuses to overwrite.
pub fn init(data_dir: &Path) -> Result<(PathBuf, Keyring), KeyFileError> {
    let file = key_file_path(data_dir);
    if file.exists() {
        return Err(KeyFileError::AlreadyExists(file.display().to_string()));
    }
    let ring = Keyring::generate()?;
    write_new(&file, &ring)?;
    Ok((file, ring))
}

pub fn read(file: &Path) -> Result<Keyring, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: file.display().to_string(),
        source,
    };
    warn_if_readable_by_others(file);
    let text = zeroize::Zeroizing::new(fs::read_to_string(file).map_err(io)?);
    Keyring::parse(&text).map_err(|source| KeyFileError::Parse {
        path: file.display().to_string(),
        source,
    })
}

/// Writes a new key file with mode 0600 (created that way, never chmod-ed after), and
/// syncs it before returning.
pub fn write_new(file: &Path, ring: &Keyring) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: file.display().to_string(),
        source,
    };
    if let Some(dir) = file.parent() {
        create_private_dir(dir).map_err(io)?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::AlreadyExists(file.display().to_string())
        } else {
            io(e)
        }
    })?;
    f.write_all(ring.to_text().as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// Replaces the key file with `ring`, atomically and durably: a new file (0600, synced)
/// beside it, renamed over it, and the directory synced, so a crash leaves either the
/// old keyring or the new one, never a mix or nothing. Used by rotation and retirement.
pub fn replace(file: &Path, ring: &Keyring) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: file.display().to_string(),
        source,
    };
    let tmp = file.with_extension("keys.new");
    // A leftover from a crash mid-rotation was never used: its key sealed nothing.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    write_new(&tmp, ring)?;
    fs::rename(&tmp, file).map_err(io)?;
    if let Some(dir) = file.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// The store's directory, private to its owner: created 0700 (with the data directory
/// when that is missing too) before sled opens it, and tightened to 0700 if an existing
/// one is open to group or others.
pub fn prepare_store_dir(data_dir: &Path) -> std::io::Result<PathBuf> {
    let dir = store_path(data_dir);
    create_private_dir(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
            tracing::info!(dir = %dir.display(), "store directory was open to group or others; now 0700");
        }
    }
    Ok(dir)
}

/// Creates a directory (and missing parents), private to its owner when we create it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn warn_if_readable_by_others(file: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(file)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %file.display(),
                "master key file is readable by group or others; run chmod 600 on it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (file, ring) = init(&data).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::metadata(&data).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        assert_eq!(read(&file).unwrap().active_kid(), ring.active_kid());
        assert!(matches!(init(&data), Err(KeyFileError::AlreadyExists(_))));
    }

    #[test]
    fn never_recreated_beside_an_existing_store() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(store_path(dir.path())).unwrap();
        let config = Config::for_tests(
            dir.path(),
            "http://127.0.0.1:1/v1",
            "admin-key-for-tests-0001-0123456789",
        )
        .unwrap();
        assert!(matches!(
            load_or_create(&config),
            Err(KeyFileError::MissingForExistingStore { .. })
        ));
    }

    #[test]
    fn first_serve_creates_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(
            dir.path(),
            "http://127.0.0.1:1/v1",
            "admin-key-for-tests-0001-0123456789",
        )
        .unwrap();
        let (a, first) = load_or_create(&config).unwrap();
        let (b, second) = load_or_create(&config).unwrap();
        assert_eq!(a.active_kid(), b.active_kid());
        let path = key_file_path(dir.path());
        assert_eq!(
            first,
            KeySource::File {
                path: path.clone(),
                created: true
            }
        );
        assert_eq!(
            second,
            KeySource::File {
                path,
                created: false
            }
        );
    }

    #[cfg(unix)]
    #[test]
    fn store_dir_is_private_even_inside_an_existing_data_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let store = prepare_store_dir(dir.path()).unwrap();
        assert_eq!(
            fs::metadata(&store).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
        prepare_store_dir(dir.path()).unwrap();
        assert_eq!(
            fs::metadata(&store).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}

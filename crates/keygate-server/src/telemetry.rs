//! Logging setup shared by the binary and the testkit.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs a global subscriber honouring `RUST_LOG` (default `info`). Returns false if
/// one was already installed (tests install once per process).
pub fn init<W>(format: LogFormat, writer: W, ansi: bool) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(std::env::var("RUST_LOG").ok().as_deref()))
        .with_writer(writer)
        .with_target(true)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init().is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
    }
}

/// Targets kept at `warn` unless `RUST_LOG` names them: webauthn-rs logs whole
/// credentials and ceremony states at debug and trace ("attested credential data is:
/// ..."), which have no place in an operator's `RUST_LOG=debug` logs.
const QUIET_TARGETS: [&str; 2] = ["webauthn_rs", "webauthn_rs_core"];

/// The filter for `RUST_LOG` (`info` when unset or unreadable), with the quiet targets
/// at `warn` unless it names them itself.
pub fn filter(rust_log: Option<&str>) -> EnvFilter {
    let base = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty() && EnvFilter::try_new(s).is_ok())
        .unwrap_or("info");
    let mut directives = base.to_owned();
    if !base.contains("webauthn") {
        for target in QUIET_TARGETS {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a webauthn-rs debug line and a keygate debug line leave in the log.
    fn logged(rust_log: Option<&str>) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(rust_log))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "webauthn_rs_core::core", "attested credential data is: CANARY-CRED");
            tracing::trace!(target: "webauthn_rs", "finish attested_resident_key -> CANARY-STATE");
            tracing::warn!(target: "webauthn_rs_core::core", "CANARY-WARN");
            tracing::debug!(target: "keygate_server::auth", "CANARY-OURS");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn webauthn_rs_credential_dumps_stay_out_of_debug_logs() {
        for rust_log in [Some("debug"), Some("trace"), Some("debug,actix_web=info")] {
            let log = logged(rust_log);
            assert!(log.contains("CANARY-OURS"), "{rust_log:?}: {log}");
            assert!(log.contains("CANARY-WARN"), "{rust_log:?}: {log}");
            assert!(!log.contains("CANARY-CRED"), "{rust_log:?}: {log}");
            assert!(!log.contains("CANARY-STATE"), "{rust_log:?}: {log}");
        }
        let log = logged(None);
        assert!(log.contains("CANARY-WARN") && !log.contains("CANARY-CRED"));
    }

    #[test]
    fn naming_webauthn_in_rust_log_turns_it_back_on() {
        let log = logged(Some("info,webauthn_rs_core=debug"));
        assert!(log.contains("CANARY-CRED"), "{log}");
        assert!(!log.contains("CANARY-OURS"), "{log}");
    }

    #[test]
    fn an_unreadable_rust_log_falls_back_to_info() {
        let log = logged(Some("=== not a filter"));
        assert!(log.contains("CANARY-WARN"), "{log}");
        assert!(
            !log.contains("CANARY-OURS") && !log.contains("CANARY-CRED"),
            "{log}"
        );
    }
}

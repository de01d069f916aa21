//! Logging setup shared by the binary and the testkit.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Targets kept at `info` even under `RUST_LOG=debug`, unless `RUST_LOG` names them
/// itself: webauthn-rs logs whole credentials, attestation data and client data at
/// debug level.
const QUIET_TARGETS: [&str; 2] = ["webauthn_rs_core", "webauthn_rs"];

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

/// The filter for a `RUST_LOG` value (`info` when unset or unreadable), with the
/// [`QUIET_TARGETS`] it does not mention held at `info`.
fn filter(rust_log: Option<&str>) -> EnvFilter {
    let mut filter = rust_log
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    for target in QUIET_TARGETS {
        let named = rust_log.is_some_and(|s| {
            s.split(',')
                .any(|d| d.trim().split(['=', '[']).next() == Some(target))
        });
        if !named && let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webauthn_stays_at_info_unless_named() {
        let shown = filter(Some("debug")).to_string();
        assert!(shown.contains("webauthn_rs_core=info"), "{shown}");
        assert!(shown.contains("webauthn_rs=info"), "{shown}");
        let shown = filter(Some("debug,webauthn_rs_core=trace")).to_string();
        assert!(shown.contains("webauthn_rs_core=trace"), "{shown}");
        assert!(!shown.contains("webauthn_rs_core=info"), "{shown}");
        assert!(filter(None).to_string().contains("webauthn_rs=info"));
    }
}

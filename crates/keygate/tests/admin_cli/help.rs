//! `--help` on every `keygate admin` command shows an example and never the key.

use crate::{Cli, common};

const COMMANDS: &[&[&str]] = &[
    &[],
    &["users"],
    &["users", "list"],
    &["users", "show"],
    &["users", "create"],
    &["users", "delete"],
    &["grants"],
    &["grants", "list"],
    &["grants", "show"],
    &["grants", "create"],
    &["grants", "patch"],
    &["grants", "rotate"],
    &["grants", "disable"],
    &["grants", "enable"],
    &["grants", "revoke"],
    &["keys"],
    &["keys", "list"],
    &["keys", "create"],
    &["keys", "revoke"],
    &["usage"],
    &["audit"],
    &["operator-key"],
    &["operator-key", "set"],
    &["operator-key", "show"],
    &["operator-key", "delete"],
];

#[tokio::test]
async fn every_command_has_help_with_an_example() {
    let secret = "help-must-not-show-this-key-0123456789";
    let cli = Cli::at("http://127.0.0.1:1").key(secret);
    for path in COMMANDS {
        let mut args = path.to_vec();
        args.push("--help");
        let help = cli.ok(&args).await;
        assert!(help.contains("Usage: keygate admin"), "{path:?}: {help}");
        assert!(help.contains("Example"), "{path:?} has no example:\n{help}");
        assert!(!help.contains(secret), "{path:?} shows the key");
    }
    // The top level names where the key comes from.
    let help = cli.ok(&["--help"]).await;
    assert!(
        help.contains("KEYGATE_ADMIN_KEY") && help.contains("--key-file"),
        "{help}"
    );
    assert!(help.contains("KEYGATE_URL"), "{help}");
    // `keygate --help` lists `admin`.
    let out = tokio::task::spawn_blocking(|| common::run(&["--help"], &[]))
        .await
        .unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("admin"));
}

/// `KEYGATE_URL` (set for `keygate admin`) is not a server setting, and `keygate serve`
/// started from the same shell does not refuse it as an unknown one.
#[tokio::test]
async fn keygate_url_does_not_trouble_the_server() {
    let out = tokio::task::spawn_blocking(|| {
        common::run(
            &["serve"],
            &[
                ("KEYGATE_URL", "http://127.0.0.1:8080"),
                ("KEYGATE_LISTEN", "bad"),
            ],
        )
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("KEYGATE_LISTEN"), "{err}");
    assert!(!err.contains("KEYGATE_URL"), "{err}");
}

//! `iothub profile …` and `--profile`.

use crate::assert_text;
use crate::support::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_saved_owner_only_and_never_print_secrets() {
    let hub = Hub::start().await;
    let cs = hub.emu.connection_string();
    let key = cs.split("SharedAccessKey=").nth(1).unwrap().to_owned();
    let amqp = hub.emu.amqp_addr().unwrap().port().to_string();
    let ca = hub.ca_path();
    let out = hub
        .bare()
        .args([
            "profile",
            "set",
            "local",
            "--connection-string",
            &cs,
            "--amqp-port",
            &amqp,
            "--ca-cert",
        ])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains(&key), "{shown}");
    assert!(shown.contains("SharedAccessKey=***"), "{shown}");

    let file = hub.config_dir().join("profiles.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir = std::fs::metadata(hub.config_dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir & 0o777, 0o700);
    }
    assert!(std::fs::read_to_string(&file).unwrap().contains(&key));

    hub.bare()
        .env_remove("IOTHUB_CA_CERT")
        .env_remove("IOTHUB_AMQP_PORT")
        .args([
            "profile",
            "set",
            "cloud",
            "--hub",
            "contoso.azure-devices.net",
            "--auth",
            "aad",
        ])
        .assert()
        .success();
    let out = hub.bare().args(["profile", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(!listed.contains(&key));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed["cloud"],
        serde_json::json!({"hub": "contoso.azure-devices.net", "auth": "aad"})
    );

    // Used with --profile and nothing else from the environment.
    let out = hub
        .bare()
        .env_remove("IOTHUB_CA_CERT")
        .env_remove("IOTHUB_AMQP_PORT")
        .args(["--profile", "local", "device", "create", "via-profile"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A named profile wins over a connection string left in the environment; a flag wins
    // over the profile.
    let stray = "HostName=nowhere.invalid;SharedAccessKeyName=owner;SharedAccessKey=AAECAwQFBgcICQoLDA0ODw==";
    let out = hub
        .bare()
        .env("IOTHUB_CONNECTION_STRING", stray)
        .args(["--profile", "local", "device", "show", "via-profile"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hub
        .bare()
        .args([
            "--profile",
            "local",
            "--connection-string",
            stray,
            "--timeout",
            "2",
            "--attempts",
            "1",
        ])
        .args(["device", "show", "via-profile"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the flag's hub does not exist");

    let out = hub
        .bare()
        .args(["--profile", "missing", "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr)
        .replace(&hub.config_dir().display().to_string(), "[config]");
    assert_text!("profile_missing", err);
    let out = hub
        .bare()
        .args(["profile", "set", "broken", "--hub", "h.example"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a profile that cannot connect is refused"
    );

    hub.bare()
        .args(["profile", "delete", "cloud"])
        .assert()
        .success();
    let out = hub
        .bare()
        .args(["profile", "show", "cloud"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

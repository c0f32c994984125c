//! `--auth aad`: the client-secret credential against the emulator's Entra ID look-alike,
//! and the developer-tools credential through a fake `az` on `PATH`.

use iothub_emulator::{Emulator, EntraClient, IotHubRole};

use crate::assert_text;
use crate::support::Hub;

const WRITER: (&str, &str) = ("cli-writer", "cli-writer-secret");
const READER: (&str, &str) = ("cli-reader", "cli-reader-secret");

async fn start() -> Hub {
    Hub::start_with(
        Emulator::builder()
            .entra_client(EntraClient::new(
                WRITER.0,
                WRITER.1,
                [IotHubRole::DataContributor],
            ))
            .entra_client(EntraClient::new(
                READER.0,
                READER.1,
                [IotHubRole::DataReader],
            )),
    )
    .await
}

fn aad(hub: &Hub, (client, secret): (&str, &str)) -> assert_cmd::Command {
    let mut cmd = hub.bare();
    cmd.env("AZURE_TENANT_ID", hub.emu.entra_tenant_id())
        .env("AZURE_CLIENT_ID", client)
        .env("AZURE_CLIENT_SECRET", secret)
        .env("AZURE_AUTHORITY_HOST", hub.emu.entra_authority_host())
        .args(["--hub", hub.emu.host(), "--auth", "aad"]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_from_the_environment() {
    let hub = start().await;
    let out = aad(&hub, WRITER)
        .args(["device", "create", "aad-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = aad(&hub, WRITER)
        .args(["twin", "update", "aad-1", "--set", "tags.by=aad"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auth = hub
        .emu
        .request_log()
        .into_iter()
        .find(|e| e.method == "PATCH")
        .and_then(|e| e.header("authorization").map(str::to_owned))
        .unwrap_or_default();
    assert!(auth.starts_with("Bearer "), "{auth}");
    // C2D over AMQP with a bearer token on $cbs.
    let out = aad(&hub, WRITER)
        .args(["c2d", "send", "aad-1", "hi"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A principal whose role lacks the write is refused: 401, exit 1, the reason shown.
    let out = aad(&hub, READER)
        .args(["device", "create", "aad-2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_text!("aad_reader_refused", String::from_utf8_lossy(&out.stderr));
    let out = aad(&hub, READER)
        .args(["device", "show", "aad-1"])
        .output()
        .unwrap();
    assert!(out.status.success());

    let out = aad(&hub, WRITER)
        .env_remove("IOTHUB_HOST")
        .args(["--hub", "", "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_tools_through_a_fake_az() {
    use std::os::unix::fs::PermissionsExt as _;

    let hub = Hub::start_with(Emulator::builder().bearer_token("token-from-fake-az")).await;
    let bin = hub.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let called = hub.dir.path().join("az-args");
    let script = format!(
        "#!/bin/sh\necho \"$@\" > '{}'\n\
         echo '{{\"accessToken\": \"token-from-fake-az\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \"expires_on\": 4070908800, \"tokenType\": \"Bearer\"}}'\n",
        called.display()
    );
    let az = bin.join("az");
    std::fs::write(&az, script).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = hub
        .bare()
        .env("PATH", path)
        .args([
            "--hub",
            hub.emu.host(),
            "--auth",
            "aad",
            "device",
            "create",
            "via-az",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = std::fs::read_to_string(&called).unwrap();
    assert!(args.contains("account get-access-token"), "{args}");
    assert!(
        args.contains("--scope https://iothubs.azure.net/.default"),
        "{args}"
    );
    // The emulator accepted the token it was told to (its log redacts it).
    let auth = hub.emu.request_log()[0]
        .header("authorization")
        .map(str::to_owned);
    assert!(auth.is_some_and(|a| a.starts_with("Bearer ")));
}

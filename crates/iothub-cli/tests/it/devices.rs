//! `iothub device …`.

use crate::assert_text;
use crate::support::{Hub, redact};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_create_show_list_update_delete() {
    let hub = Hub::start().await;
    let created = hub.json(&["device", "create", "dev-1"]);
    insta::assert_json_snapshot!("device_create", redact(created));

    let shown = hub.json(&["device", "show", "dev-1"]);
    assert_eq!(shown["deviceId"], "dev-1");
    assert_eq!(shown["authentication"]["type"], "sas");

    hub.json(&[
        "device",
        "create",
        "dev-2",
        "--status",
        "disabled",
        "--edge",
        "--primary-key",
        "AAECAwQFBgcICQoLDA0ODw==",
        "--secondary-key",
        "EBESExQVFhcYGRobHB0eHw==",
    ]);
    let listed = hub.json(&["device", "list", "--top", "10"]);
    let mut ids: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["dev-1", "dev-2"]);

    // update keeps what was not given: keys, edge.
    let updated = hub.json(&[
        "device",
        "update",
        "dev-2",
        "--status",
        "enabled",
        "--status-reason",
        "back",
    ]);
    insta::assert_json_snapshot!("device_update", redact(updated.clone()));
    assert_eq!(
        updated["authentication"]["symmetricKey"]["primaryKey"],
        "AAECAwQFBgcICQoLDA0ODw=="
    );
    assert_eq!(updated["capabilities"]["iotEdge"], true);

    // A stale etag is refused: exit code 4.
    let stale = shown["etag"].as_str().unwrap().to_owned();
    hub.json(&["device", "update", "dev-1", "--status", "disabled"]);
    let (code, out, err) = hub.run(&[
        "device", "update", "dev-1", "--status", "enabled", "--etag", &stale,
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(out.is_empty());
    assert_text!("device_update_stale_etag", err);

    let (code, out, _) = hub.run(&["device", "delete", "dev-1"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, err) = hub.run(&["device", "show", "dev-1"]);
    assert_eq!(code, 3);
    assert_text!("device_show_not_found", err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_create_conflict_and_bad_arguments() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "dup"]);
    let (code, _, err) = hub.run(&["device", "create", "dup"]);
    assert_eq!(code, 4);
    assert_text!("device_create_conflict", err);

    // Usage errors: exit 2, nothing sent.
    hub.emu.clear_request_log();
    for (name, args) in [
        ("bad_device_id", &["device", "show", "has space"][..]),
        (
            "bad_key",
            &[
                "device",
                "create",
                "k",
                "--primary-key",
                "abc",
                "--secondary-key",
                "abc",
            ][..],
        ),
        (
            "keys_with_x509",
            &[
                "device",
                "create",
                "k",
                "--auth-method",
                "x509",
                "--primary-key",
                "AAECAwQFBgcICQoLDA0ODw==",
                "--secondary-key",
                "AAECAwQFBgcICQoLDA0ODw==",
            ][..],
        ),
        (
            "x509_without_thumbprint",
            &["device", "create", "k", "--auth-method", "x509"][..],
        ),
        ("update_nothing", &["device", "update", "dup"][..]),
        ("bad_etag", &["device", "delete", "dup", "--etag", ""][..]),
        ("top_out_of_range", &["device", "list", "--top", "1001"][..]),
    ] {
        let (code, out, err) = hub.run(args);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(out.is_empty(), "{name}");
        assert_text!(format!("usage_{name}"), err);
    }
    assert!(
        hub.emu.request_log().is_empty(),
        "a usage error sent a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_x509_and_ca() {
    let hub = Hub::start().await;
    let thumb = "A".repeat(40);
    let x509 = hub.json(&[
        "device",
        "create",
        "x1",
        "--auth-method",
        "x509",
        "--primary-thumbprint",
        &thumb,
    ]);
    insta::assert_json_snapshot!("device_create_x509", redact(x509));
    let ca = hub.json(&["device", "create", "ca1", "--auth-method", "ca"]);
    assert_eq!(ca["authentication"]["type"], "certificateAuthority");
    let cs = hub.json(&["device", "connection-string", "show", "x1"]);
    let host = hub.emu.host().to_owned();
    assert_eq!(
        cs["connectionString"],
        format!("HostName={host};DeviceId=x1;x509=true")
    );
    // An update sends the thumbprints back.
    let updated = hub.json(&["device", "update", "x1", "--status", "disabled"]);
    assert_eq!(
        updated["authentication"]["x509Thumbprint"]["primaryThumbprint"],
        thumb
    );
    let (code, _, err) = hub.run(&["device", "renew-key", "x1", "--key", "primary"]);
    assert_eq!(code, 1);
    assert_text!("device_renew_key_x509", err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_connection_string_and_renew_key() {
    let hub = Hub::start().await;
    let device = hub.json(&["device", "create", "cs-1"]);
    let primary = device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let secondary = device["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = hub.emu.host().to_owned();

    let cs = hub.json(&["device", "connection-string", "show", "cs-1"]);
    assert_eq!(
        cs["connectionString"],
        format!("HostName={host};DeviceId=cs-1;SharedAccessKey={primary}")
    );
    let (_, out, _) = hub.run(&[
        "device",
        "connection-string",
        "show",
        "cs-1",
        "--key",
        "secondary",
        "-o",
        "tsv",
    ]);
    assert_eq!(
        out,
        format!("HostName={host};DeviceId=cs-1;SharedAccessKey={secondary}\n")
    );

    let swapped = hub.json(&["device", "renew-key", "cs-1", "--key", "swap"]);
    assert_eq!(
        swapped["authentication"]["symmetricKey"]["primaryKey"],
        secondary.as_str()
    );
    assert_eq!(
        swapped["authentication"]["symmetricKey"]["secondaryKey"],
        primary.as_str()
    );
    let renewed = hub.json(&["device", "renew-key", "cs-1", "--key", "primary"]);
    let new = renewed["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    assert_ne!(new, secondary);
    assert_ne!(new, primary);
    assert_eq!(
        renewed["authentication"]["symmetricKey"]["secondaryKey"],
        primary.as_str()
    );
}

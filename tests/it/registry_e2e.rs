//! Every public method of `iothub-registry` against the emulator, and each documented
//! failure: 404, 409, 412, 404103, 504101, 401 (bad key) and a policy without the
//! permission. (The parity test runs the reference's list; this one covers the rest.)

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use iothub_auth::{Credential, HostName};
use iothub_emulator::{Emulator, MethodResponse};
use iothub_registry::models::{
    CloudToDeviceMethod, DeviceStatus, ExportImportDevice, ImportMode, Twin,
};
use iothub_registry::{DeviceOptions, IfMatch, RegistryManager, SasKeys, X509Thumbprints};
use iothub_test_support::credentials::{FixedToken, OTHER_KEY};
use iothub_test_support::emulator::{registry_builder, registry_builder_with};
use serde_json::json;

fn manager_for(emu: &Emulator, connection_string: &str) -> RegistryManager {
    registry_builder(emu, connection_string).build().unwrap()
}

async fn start() -> (Emulator, RegistryManager) {
    let emu = Emulator::builder()
        .bearer_token("aad-token-for-tests")
        .start()
        .await
        .unwrap();
    let rm = manager_for(&emu, &emu.connection_string());
    (emu, rm)
}

fn method(name: &str, response_timeout: Option<i32>) -> CloudToDeviceMethod {
    CloudToDeviceMethod {
        method_name: Some(name.into()),
        payload: Some(json!({"n": 1})),
        response_timeout_in_seconds: response_timeout,
        connect_timeout_in_seconds: None,
    }
}

#[tokio::test]
async fn identities_of_every_kind_and_their_failures() {
    let (_emu, rm) = start().await;
    // Every character the service allows in an id, in device and module ids.
    let id = "e2e-:.+%_#*?!(),=@;$'";
    let d = rm
        .create_device_with_sas(
            id,
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(d.device_id.as_deref(), Some(id));
    assert_eq!(rm.get_device(id).await.unwrap().etag, d.etag);
    let err = rm
        .create_device_with_sas(
            id,
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.is_conflict()), (Some(409), true));
    // An update keeps the keys the service generated: they are passed back explicitly.
    let key = |d: &iothub_registry::models::Device| {
        let key = d
            .authentication
            .as_ref()
            .unwrap()
            .symmetric_key
            .as_ref()
            .unwrap();
        let side = |k: &Option<iothub_rest_gen::SecretString>| {
            k.as_ref().unwrap().expose_secret().to_owned()
        };
        (side(&key.primary_key), side(&key.secondary_key))
    };
    let (primary, secondary) = key(&d);
    let keys = SasKeys::new(&primary, &secondary);
    let stale = IfMatch::try_from("c3RhbGU=").unwrap();
    let err = rm
        .update_device_with_sas(
            id,
            stale.clone(),
            keys.clone(),
            DeviceStatus::Disabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed());
    let current = IfMatch::from_current(d.etag.as_deref()).unwrap();
    let u = rm
        .update_device_with_sas(
            id,
            current,
            keys,
            DeviceStatus::Disabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(u.status, Some(DeviceStatus::Disabled));
    assert_eq!(key(&u), (primary, secondary), "the keys did not change");

    let x = rm
        .create_device_with_x509(
            "e2e-x509",
            X509Thumbprints::new("A".repeat(40), "B".repeat(64)),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    rm.update_device_with_x509(
        "e2e-x509",
        IfMatch::from_current(x.etag.as_deref()).unwrap(),
        X509Thumbprints::new("C".repeat(40), "D".repeat(40)),
        DeviceStatus::Enabled,
        DeviceOptions::new(),
    )
    .await
    .unwrap();
    rm.create_device_with_certificate_authority(
        "e2e-ca",
        DeviceStatus::Enabled,
        DeviceOptions::new().iot_edge(true),
    )
    .await
    .unwrap();
    rm.update_device_with_certificate_authority(
        "e2e-ca",
        IfMatch::Any,
        DeviceStatus::Enabled,
        DeviceOptions::new().iot_edge(true),
    )
    .await
    .unwrap();
    assert_eq!(rm.get_devices(Some(2)).await.unwrap().len(), 2);
    assert_eq!(rm.get_devices(None).await.unwrap().len(), 3);

    let mid = "m-:.+%_#*?!(),=@;$'";
    let m = rm
        .create_module_with_sas(id, mid, SasKeys::generated(), Some("me"))
        .await
        .unwrap();
    assert_eq!(m.module_id.as_deref(), Some(mid));
    let err = rm
        .create_module_with_sas(id, mid, SasKeys::generated(), None)
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    // New keys of one's own: an update never asks the service to generate them.
    rm.update_module_with_sas(
        id,
        mid,
        IfMatch::from_current(m.etag.as_deref()).unwrap(),
        SasKeys::new(OTHER_KEY, OTHER_KEY),
        None,
    )
    .await
    .unwrap();
    rm.create_module_with_x509(
        id,
        "mx",
        X509Thumbprints::new("A".repeat(40), "B".repeat(40)),
        None,
    )
    .await
    .unwrap();
    rm.update_module_with_x509(
        id,
        "mx",
        IfMatch::Any,
        X509Thumbprints::new("B".repeat(40), "A".repeat(40)),
        None,
    )
    .await
    .unwrap();
    rm.create_module_with_certificate_authority(id, "mc", None)
        .await
        .unwrap();
    rm.update_module_with_certificate_authority(id, "mc", IfMatch::Any, Some("ops"))
        .await
        .unwrap();
    assert_eq!(
        rm.get_module(id, mid).await.unwrap().module_id.as_deref(),
        Some(mid)
    );
    assert_eq!(rm.get_modules(id).await.unwrap().len(), 3);
    let err = rm.delete_module(id, "mx", stale.clone()).await.unwrap_err();
    assert!(err.is_precondition_failed());
    rm.delete_module(id, "mx", IfMatch::Any).await.unwrap();
    assert!(rm.get_module(id, "mx").await.unwrap_err().is_not_found());

    let err = rm.delete_device(id, stale).await.unwrap_err();
    assert!(err.is_precondition_failed());
    rm.delete_device(id, IfMatch::Any).await.unwrap();
    let err = rm.get_device(id).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.as_str()), Some("DeviceNotFound"));
    assert_eq!(err.service().unwrap().code_number(), Some(404001));
}

#[tokio::test]
async fn twins_methods_statistics_and_purge() {
    let (emu, rm) = start().await;
    rm.create_device_with_sas(
        "t",
        SasKeys::generated(),
        DeviceStatus::Enabled,
        DeviceOptions::new(),
    )
    .await
    .unwrap();
    rm.create_module_with_sas("t", "m", SasKeys::generated(), None)
        .await
        .unwrap();
    let twin = rm.get_twin("t").await.unwrap();
    let etag = IfMatch::from_current(twin.etag.as_deref()).unwrap();
    let patch: Twin = serde_json::from_value(json!({"tags": {"a": 1}})).unwrap();
    rm.update_twin("t", patch.clone(), etag.clone())
        .await
        .unwrap();
    assert!(
        rm.update_twin("t", patch.clone(), etag.clone())
            .await
            .unwrap_err()
            .is_precondition_failed()
    );
    let replaced = rm
        .replace_twin(
            "t",
            serde_json::from_value(json!({"properties": {"desired": {"x": 1}}})).unwrap(),
            IfMatch::Any,
        )
        .await
        .unwrap();
    assert!(replaced.tags.is_empty());
    let mt = rm.get_module_twin("t", "m").await.unwrap();
    let metag = IfMatch::from_current(mt.etag.as_deref()).unwrap();
    rm.update_module_twin("t", "m", patch.clone(), metag.clone())
        .await
        .unwrap();
    assert!(
        rm.update_module_twin("t", "m", patch.clone(), metag)
            .await
            .unwrap_err()
            .is_precondition_failed()
    );
    rm.replace_module_twin("t", "m", patch, IfMatch::Any)
        .await
        .unwrap();

    let err = rm
        .invoke_device_method("t", method("reboot", None))
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.service().unwrap().code_number()),
        (Some(404), Some(404103))
    );
    emu.connect_device("t").unwrap();
    emu.set_method_response("t", None, "reboot", MethodResponse::fixed(200, json!("ok")));
    emu.set_method_response("t", None, "slow", MethodResponse::echo().delayed(6_000));
    let r = rm
        .invoke_device_method("t", method("reboot", Some(5)))
        .await
        .unwrap();
    assert_eq!(r.payload, Some(json!("ok")));
    let err = rm
        .invoke_device_method("t", method("slow", Some(5)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.service().unwrap().code_number()),
        (Some(504), Some(504101))
    );
    emu.set_module_connected("t", "m", true).unwrap();
    emu.set_method_response("t", Some("m"), "ping", MethodResponse::echo());
    let r = rm
        .invoke_device_module_method("t", "m", method("ping", None))
        .await
        .unwrap();
    assert_eq!(r.payload, Some(json!({"n": 1})));

    let stats = rm.get_device_registry_statistics().await.unwrap();
    assert_eq!(stats.total_device_count, Some(1));
    assert_eq!(
        rm.get_service_statistics()
            .await
            .unwrap()
            .connected_device_count,
        Some(1)
    );
    let purged = rm.purge_c2d_queue("t").await.unwrap();
    assert_eq!(
        (purged.device_id.as_deref(), purged.total_messages_purged),
        (Some("t"), Some(0))
    );
    assert!(
        rm.purge_c2d_queue("nobody")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // with_timeout gives a manager with another per-attempt timeout; it still works.
    rm.with_timeout(Duration::from_secs(5))
        .get_twin("t")
        .await
        .unwrap();
    // rest() reaches the generated client for anything not wrapped.
    let raw = rm
        .rest()
        .devices_get_identity()
        .id("t")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.into_inner().device_id.as_deref(), Some("t"));
}

#[tokio::test]
async fn query_across_many_pages_and_bulk_with_partial_failures() {
    let (_emu, rm) = start().await;
    let devices: Vec<ExportImportDevice> = (0..450)
        .map(|i| ExportImportDevice {
            id: Some(format!("q{i:03}")),
            import_mode: Some(ImportMode::Create),
            tags: serde_json::from_value(json!({"even": i % 2 == 0})).unwrap(),
            ..Default::default()
        })
        .collect();
    let progress = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = progress.clone();
    let report = rm
        .bulk(devices)
        .concurrency(3)
        .on_progress(move |p| seen.lock().unwrap().push(p.done))
        .send()
        .await
        .unwrap();
    assert!(report.is_successful());
    assert_eq!(progress.lock().unwrap().iter().max(), Some(&450));

    let twins: Vec<Twin> = rm
        .query("SELECT * FROM devices WHERE tags.even = true")
        .page_size(7)
        .twins()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(twins.len(), 225);
    let pages: Vec<_> = rm
        .query("SELECT deviceId FROM devices")
        .page_size(100)
        .pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 5);
    assert!(pages.last().unwrap().continuation_token.is_none());
    let ids: Vec<serde_json::Value> = rm
        .query("SELECT deviceId FROM devices")
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids.len(), 450);
    let page = rm
        .query_iot_hub("SELECT * FROM devices", None, Some(10))
        .await
        .unwrap();
    assert_eq!(page.twins().unwrap().len(), 10);
    #[derive(serde::Deserialize)]
    struct Row {
        n: u64,
    }
    let counted = rm
        .query_iot_hub("SELECT COUNT() AS n FROM devices", None, None)
        .await
        .unwrap();
    assert_eq!(counted.items_as::<Row>().unwrap()[0].n, 450);

    // 150 entries where 20 already exist: the helper reports exactly those, creates the rest.
    let mixed: Vec<ExportImportDevice> = (430..580)
        .map(|i| ExportImportDevice {
            id: Some(format!("q{i:03}")),
            import_mode: Some(ImportMode::Create),
            ..Default::default()
        })
        .collect();
    let report = rm.bulk(mixed).send().await.unwrap();
    assert!(!report.is_successful());
    assert_eq!(report.errors.len(), 20);
    assert!(report.errors.iter().all(|e| {
        e.error_code
            .as_ref()
            .is_some_and(|c| c.as_str() == "DeviceAlreadyExists")
    }));
    assert_eq!(
        rm.get_device_registry_statistics()
            .await
            .unwrap()
            .total_device_count,
        Some(580)
    );
    let one = rm
        .bulk_create_or_update_devices(vec![ExportImportDevice {
            id: Some("q000".into()),
            import_mode: Some(ImportMode::Delete),
            ..Default::default()
        }])
        .await
        .unwrap();
    assert_eq!(one.is_successful, Some(true));
}

#[tokio::test]
async fn wrong_keys_policies_and_azure_ad() {
    let (emu, _rm) = start().await;
    // A key the hub does not know: 401 before anything is done.
    let cs = emu.connection_string();
    let (head, _) = cs.split_once("SharedAccessKey=").unwrap();
    let bad = manager_for(
        &emu,
        &format!("{head}SharedAccessKey=ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="),
    );
    let err = bad.get_devices(None).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(
        err.code().map(|c| c.as_str()),
        Some("IotHubUnauthorizedAccess")
    );
    // A policy without the permission: the service documents 401 IotHubUnauthorizedAccess
    // (401002) for a policy that lacks the right (Azure docs: "Common error codes" of the IoT
    // Hub REST API, and "Understand and resolve Azure IoT Hub errors"), so the emulator
    // answers that.
    let reader = manager_for(&emu, &emu.connection_string_for("registryRead").unwrap());
    reader.get_devices(None).await.unwrap();
    let err = reader
        .create_device_with_sas(
            "nope",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    let service = manager_for(&emu, &emu.connection_string_for("service").unwrap());
    assert_eq!(
        service.get_devices(None).await.unwrap_err().status(),
        Some(401)
    );

    // Azure AD: the same calls with a bearer token from a TokenCredential.
    let host: HostName = emu.host().parse().unwrap();
    let token = Arc::new(FixedToken::new("aad-token-for-tests"));
    let aad = registry_builder_with(&emu, Credential::from_token_credential(host, token))
        .build()
        .unwrap();
    aad.create_device_with_sas(
        "aad",
        SasKeys::generated(),
        DeviceStatus::Enabled,
        DeviceOptions::new(),
    )
    .await
    .unwrap();
    let log = emu.request_log();
    assert_eq!(
        log.last().unwrap().header("authorization"),
        Some("Bearer REDACTED")
    );
}

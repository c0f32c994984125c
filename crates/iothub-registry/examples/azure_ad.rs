//! Azure AD (Microsoft Entra ID) with `azure_identity`: a `RegistryManager` that signs with a
//! token credential instead of a connection string. With nothing set it runs on the embedded
//! emulator, which plays both the hub and Entra ID (a `ClientSecretCredential` gets its token
//! from the emulator); with `IOTHUB_HOST` set it runs on your hub.
//!
//! ```sh
//! cargo run -p iothub-registry --example azure_ad
//! # A service principal with an IoT Hub data role on the hub:
//! IOTHUB_HOST=myhub.azure-devices.net AZURE_TENANT_ID=… AZURE_CLIENT_ID=… AZURE_CLIENT_SECRET=… \
//!     cargo run -p iothub-registry --example azure_ad
//! # Or yourself, signed in with `az login` or `azd auth login`:
//! IOTHUB_HOST=myhub.azure-devices.net cargo run -p iothub-registry --example azure_ad
//! ```
//!
//! The identity needs a data-plane role on the hub ("IoT Hub Data Contributor" for all of
//! this); Owner or Contributor of the resource is not enough.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
};
use iothub_emulator::{Emulator, EntraClient, IotHubRole};
use iothub_registry::models::{DeviceStatus, Twin};
use iothub_registry::{Credential, DeviceOptions, IfMatch, RegistryManager, SasKeys};
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The app registration the emulator is given for this run.
const LOCAL_CLIENT_ID: &str = "azure-ad-example";
const LOCAL_READER_ID: &str = "azure-ad-example-reader";

/// The embedded emulator and the reader's secret, when the example runs locally.
struct Local {
    emulator: Emulator,
    reader_secret: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (local, registry) = match std::env::var("IOTHUB_HOST") {
        Ok(host) => (None, remote(&host)?),
        Err(_) => {
            let (local, registry) = local().await?;
            (Some(local), registry)
        }
    };
    let device = format!("azure-ad-{:04x}", fastrand::u16(..));
    let mut result = tour(&registry, &device).await;
    if let (Some(local), Ok(())) = (&local, &result) {
        result = reader_is_refused(local, &device).await;
    }
    println!("\n== Clean up");
    match registry.delete_device(&device, IfMatch::Any).await {
        Ok(()) => println!("deleted {device}"),
        Err(e) if e.is_not_found() => {}
        Err(e) => println!("could not delete {device}: {e}"),
    }
    registry.close().await;
    if let Some(local) = local {
        local.emulator.shutdown().await;
    }
    result?;
    println!("\nDone.");
    Ok(())
}

/// Your hub, with a service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
/// `AZURE_CLIENT_SECRET` (and `AZURE_AUTHORITY_HOST` for another cloud), else your own
/// sign-in to the Azure CLI or Azure Developer CLI.
fn remote(host: &str) -> Result<RegistryManager, BoxError> {
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let credential: Arc<dyn TokenCredential> = match (
        env("AZURE_TENANT_ID"),
        env("AZURE_CLIENT_ID"),
        env("AZURE_CLIENT_SECRET"),
    ) {
        (Some(tenant), Some(client_id), Some(secret)) => {
            println!("Using {host} as service principal {client_id} (ClientSecretCredential).");
            ClientSecretCredential::new(&tenant, client_id, Secret::new(secret), None)?
        }
        _ => {
            println!("Using {host} as you (DeveloperToolsCredential: az or azd sign-in).");
            DeveloperToolsCredential::new(None)?
        }
    };
    Ok(RegistryManager::from_token_credential(host, credential)?)
}

/// The embedded emulator, with an app registration holding "IoT Hub Data Contributor" (and
/// a reader, to show a refusal), and a `ClientSecretCredential` pointed at it.
async fn local() -> Result<(Local, RegistryManager), BoxError> {
    // Fresh secrets per run; they are never printed.
    let secret: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
    let reader_secret: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
    let emulator = Emulator::builder()
        .entra_client(EntraClient::new(
            LOCAL_CLIENT_ID,
            secret.clone(),
            [IotHubRole::DataContributor],
        ))
        .entra_client(EntraClient::new(
            LOCAL_READER_ID,
            reader_secret.clone(),
            [IotHubRole::DataReader],
        ))
        .start()
        .await?;
    println!(
        "IOTHUB_HOST is not set: started a local IoT Hub emulator at {}, which is also the \
         Entra ID authority of tenant {}.",
        emulator.base_url(),
        emulator.entra_tenant_id()
    );
    let credential = local_credential(&emulator, LOCAL_CLIENT_ID, secret)?;
    let registry = local_manager(&emulator, credential)?;
    Ok((
        Local {
            emulator,
            reader_secret,
        },
        registry,
    ))
}

/// A `ClientSecretCredential` that asks the emulator for tokens: its authority host instead
/// of login.microsoftonline.com (it must be https), over a client that trusts its CA.
fn local_credential(
    emulator: &Emulator,
    client_id: &str,
    secret: String,
) -> Result<Arc<ClientSecretCredential>, BoxError> {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = emulator.entra_authority_host();
    let options = ClientSecretCredentialOptions {
        client_options: ClientOptions {
            cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
            transport: Some(Transport::new(Arc::new(trusting_client(emulator)?))),
            ..Default::default()
        },
    };
    Ok(ClientSecretCredential::new(
        emulator.entra_tenant_id(),
        client_id.to_owned(),
        Secret::new(secret),
        Some(options),
    )?)
}

/// An HTTP client that trusts the emulator's CA, and only it.
fn trusting_client(emulator: &Emulator) -> Result<reqwest::Client, BoxError> {
    let pem = emulator.ca_certificate_pem().unwrap_or_default();
    let ca = reqwest::Certificate::from_pem(pem.as_bytes())?;
    Ok(reqwest::Client::builder().tls_certs_only([ca]).build()?)
}

/// `RegistryManager::from_token_credential`, plus what the emulator needs: its CA trusted
/// for HTTPS and AMQP, and its AMQP port.
fn local_manager(
    emulator: &Emulator,
    credential: Arc<dyn TokenCredential>,
) -> Result<RegistryManager, BoxError> {
    let host = emulator.host().parse()?;
    let amqp_port = emulator
        .amqp_addr()
        .ok_or("the emulator has no AMQP endpoint")?
        .port();
    Ok(
        RegistryManager::builder(Credential::from_token_credential(host, credential))
            .add_root_certificate_pem(emulator.ca_certificate_pem().unwrap_or_default())
            .amqp_port(amqp_port)
            .build()?,
    )
}

async fn tour(registry: &RegistryManager, device: &str) -> Result<(), BoxError> {
    println!("\n== Create a device (REST, Authorization: Bearer <token from Entra ID>)");
    let created = registry
        .create_device_with_sas(
            device,
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await?;
    println!(
        "created {device}, etag {}",
        created.etag.as_deref().unwrap_or("-")
    );

    println!("\n== Patch its twin, conditioned on the etag just read");
    let twin = registry.get_twin(device).await?;
    let patch: Twin = serde_json::from_value(json!({
        "tags": { "signedInWith": "azure_identity" },
        "properties": { "desired": { "telemetryInterval": 30 } },
    }))?;
    let twin = registry
        .update_twin(device, patch, IfMatch::from_current(twin.etag.as_deref())?)
        .await?;
    println!("tags {}", serde_json::Value::Object(twin.tags));

    println!("\n== Send it a cloud-to-device message (AMQP, a bearer token on $cbs)");
    registry
        .send_c2d_message(device, "hello from Azure AD", [("iothub-ack", "none")])
        .await?;
    println!("sent");
    Ok(())
}

/// Another app, with "IoT Hub Data Reader" only: it reads the device, and its write is
/// refused with 401, as the hub refuses a principal whose roles lack the data action.
async fn reader_is_refused(local: &Local, device: &str) -> Result<(), BoxError> {
    println!("\n== The same device as an app with IoT Hub Data Reader only");
    let credential = local_credential(
        &local.emulator,
        LOCAL_READER_ID,
        local.reader_secret.clone(),
    )?;
    let reader = local_manager(&local.emulator, credential)?;
    let twin = reader.get_twin(device).await?;
    println!(
        "read its twin (version {})",
        twin.version.unwrap_or_default()
    );
    let patch: Twin = serde_json::from_value(json!({ "tags": { "by": "reader" } }))?;
    match reader.update_twin(device, patch, IfMatch::Any).await {
        Err(e) if e.status() == Some(401) => println!("patching it was refused: {e}"),
        Err(e) => return Err(e.into()),
        Ok(_) => return Err("the reader's write was accepted".into()),
    }
    reader.close().await;
    Ok(())
}

//! `iothub emulator`: the local IoT Hub in the foreground, with the `iothub-emulator`
//! binary's own flags and defaults (`iothub_emulator::serve`, flattened into this command).

use iothub_emulator::Emulator;
use iothub_emulator::serve::{AMQPS_PORT, ServeArgs, raise_open_file_limit, wait_for_signal};

use crate::error::{CliError, Result};

/// Runs the emulator until Ctrl-C or SIGTERM, after printing how to connect.
pub(crate) async fn run(args: ServeArgs) -> Result<()> {
    let config = args.into_config().map_err(CliError::usage)?;
    raise_open_file_limit(&config);
    let durable = config.data_dir.clone();
    let hub = Emulator::builder()
        .config(config)
        .start()
        .await
        .map_err(|e| CliError::Other(format!("the emulator did not start: {e}")))?;
    println!("IoT Hub emulator listening on {}", hub.base_url());
    if let Some(addr) = hub.amqp_addr() {
        println!("AMQP endpoint: {addr}");
    }
    println!("Device MQTT endpoint: {}", hub.mqtt_addr());
    match durable {
        Some(dir) => println!("Registry stored durably in {}", dir.display()),
        None => println!("Registry kept in memory (use --data-dir to keep it)"),
    }
    println!("\nTo use it from another shell:\n");
    println!(
        "export IOTHUB_CONNECTION_STRING='{}'",
        hub.connection_string()
    );
    if let Some(path) = hub.ca_certificate_path() {
        println!("export IOTHUB_CA_CERT='{}'", path.display());
    }
    if let Some(addr) = hub.amqp_addr().filter(|a| a.port() != AMQPS_PORT) {
        println!("export IOTHUB_AMQP_PORT={}", addr.port());
    }
    if let Some(token) = hub.control_token() {
        println!("# control API token (header x-emulator-control-token): {token}");
    }
    println!("iothub device create thermostat-1");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    hub.shutdown().await;
    Ok(())
}

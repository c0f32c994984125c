//! The device scenario: how many simultaneously connected MQTT devices the emulator holds,
//! with its memory, and its telemetry ingest rate.
//!
//! Devices connect as the device SDKs do: MQTT 3.1.1 over TLS to the emulator's device
//! endpoint, each with a SAS token signed by its own key. The packets are written and read
//! by `rumqttc`'s `mqttbytes::v4` (no TLS of its own, so no second rustls provider: the TLS
//! here is tokio-rustls on aws-lc-rs, named explicitly). 10,000 devices (20 in smoke mode)
//! connect and stay idle; the emulator's resident memory is read before and after, and the
//! service statistics must count them all connected. Then some of those connections send
//! telemetry (QoS 1, a window of unacknowledged messages each) and the rate at which the
//! emulator acknowledges it is the ingest rate.
//!
//! Every connection is a socket in the driver and one in the emulator: the open-file limit
//! is raised to its hard maximum before the emulator starts (the child inherits it), and the
//! device count is cut to fit what remains (with a note).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use iothub_auth::{HostName, SasToken, SharedAccessKey};
use iothub_registry::models::{ExportImportDevice, ImportMode};
use iothub_registry::{RegistryManager, SasKeys};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Publish};
use rumqttc::mqttbytes::{Error as PacketError, QoS};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::driver::Mode;
use crate::emulator::EmulatorChild;

/// A device's connection.
type Conn = TlsStream<TcpStream>;

/// The api-version in the CONNECT user name.
const API_VERSION: &str = "2021-04-12";
/// The devices' symmetric keys (all alike: the scenario measures the hub, not key handling).
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
/// Connections being opened at once: TLS handshakes dominate, so more only queues them (and
/// the emulator closes some connections before their CONNACK when many open at once; they
/// are tried again, and counted in a note).
pub(crate) const CONNECTING: usize = 16;
/// Attempts after the first for one device's connection.
const CONNECT_TRIES: u64 = 3;
/// Unacknowledged telemetry messages per sending device.
pub(crate) const WINDOW: u32 = 64;
/// Keep-alive the devices announce: longer than the scenario, so idle devices need no
/// pings (the emulator enforces 1.5 times it).
const KEEP_ALIVE_SECS: u16 = 1200;
/// Sockets kept free for everything else the driver and the emulator open.
const SPARE_FILES: u64 = 1024;
/// The telemetry body: a small JSON reading, as devices send.
pub(crate) const BODY: &[u8] = br#"{"temperature":21.5,"humidity":40,"pressure":1013}"#;

/// What the scenario measured.
#[derive(Clone, Debug)]
pub(crate) struct DeviceNumbers {
    /// Devices connected at once.
    pub(crate) devices: u64,
    /// Opening all their connections (TLS handshake, CONNECT, CONNACK).
    pub(crate) connect_secs: f64,
    /// The emulator's resident memory with the devices registered, before they connect.
    pub(crate) rss_before_kib: u64,
    /// And with every device connected.
    pub(crate) rss_connected_kib: u64,
    /// The service statistics' connected-device count once all had connected.
    pub(crate) counted_connected: i64,
    /// Devices that sent telemetry, and messages each.
    pub(crate) senders: u64,
    pub(crate) messages_each: u64,
    /// From the first telemetry message to the last acknowledgement.
    pub(crate) ingest_secs: f64,
    /// Emulator CPU seconds during the ingest.
    pub(crate) ingest_cpu_s: f64,
}

/// Raises the open-file limit to its hard maximum and returns the limit now in force.
/// Called before the emulator starts, so the child inherits it.
pub(crate) fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.maximum != limit.current {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("devices: could not raise the open-file limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Runs the scenario against `emulator`, whose MQTT endpoint is at `mqtt`.
pub(crate) async fn connected_devices(
    registry: &RegistryManager,
    emulator: &EmulatorChild,
    mode: Mode,
    wanted: Option<u64>,
    notes: &mut Vec<String>,
) -> Result<DeviceNumbers, String> {
    let (full, senders, messages_each) = match mode {
        Mode::Smoke => (20, 4, 50),
        Mode::Budget | Mode::Full => (10_000, 100, 200),
    };
    let mut devices = wanted.unwrap_or(full);
    let files = raise_open_file_limit();
    let fits = files.saturating_sub(SPARE_FILES);
    if devices > fits {
        notes.push(format!(
            "The open-file limit ({files}) allowed {fits} simultaneous MQTT devices, not \
             {devices}: raise it (`ulimit -Hn`) to measure more."
        ));
        devices = fits;
    }
    let senders = senders.min(devices);
    let ids: Vec<String> = (0..devices).map(|i| format!("mqtt-{i:06}")).collect();

    let entries = ids.iter().map(|id| ExportImportDevice {
        id: Some(id.clone()),
        import_mode: Some(ImportMode::Create),
        authentication: Some(SasKeys::new(KEY, KEY2).into()),
        ..Default::default()
    });
    let report = registry
        .bulk(entries.collect::<Vec<_>>())
        .send()
        .await
        .map_err(|e| format!("creating the MQTT devices: {e}"))?;
    if !report.errors.is_empty() || !report.failed_chunks.is_empty() {
        return Err(format!(
            "creating the MQTT devices: {} failed",
            report.errors.len()
        ));
    }
    let rss = |what| crate::measure::status_kib(&emulator.pid, what).map_err(|e| e.to_string());
    let rss_before_kib = rss("VmRSS")?;

    let target = Target::new(emulator)?;
    let key: SharedAccessKey = KEY.parse().map_err(|e: iothub_auth::Error| e.to_string())?;
    let started = Instant::now();
    let retried = std::sync::atomic::AtomicU64::new(0);
    let mut conns: Vec<Conn> = stream::iter(ids.iter())
        .map(|id| async {
            // A connection the hub closes before its CONNACK is tried again, as the device
            // SDKs' retry policies do; how many were is reported.
            let mut tries = 0;
            loop {
                match target.connect(id, &key).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) if tries < CONNECT_TRIES => {
                        tries += 1;
                        retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        eprintln!("devices: {e}; trying again");
                        tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .buffered(CONNECTING)
        .try_collect()
        .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let retried = retried.into_inner();
    eprintln!("devices: {devices} connected over MQTT in {connect_secs:.1} s ({retried} retried)");
    if retried > 0 {
        notes.push(format!(
            "MQTT devices: the emulator closed {retried} connections before their CONNACK while \
             {CONNECTING} were being opened at once; each was opened again."
        ));
    }
    let rss_connected_kib = rss("VmRSS")?;
    let counted_connected = registry
        .get_service_statistics()
        .await
        .map_err(|e| e.to_string())?
        .connected_device_count
        .unwrap_or(0);
    if counted_connected != devices as i64 {
        return Err(format!(
            "the service statistics count {counted_connected} connected devices, not {devices}"
        ));
    }

    let cpu = || crate::measure::cpu_seconds(&emulator.pid).map_err(|e| e.to_string());
    let cpu_before = cpu()?;
    let started = Instant::now();
    futures::future::try_join_all(
        conns
            .iter_mut()
            .zip(&ids)
            .take(senders as usize)
            .map(|(conn, id)| send(conn, id, messages_each)),
    )
    .await?;
    let ingest_secs = started.elapsed().as_secs_f64();
    let ingest_cpu_s = cpu()? - cpu_before;
    eprintln!(
        "devices: {} telemetry messages from {senders} devices in {ingest_secs:.2} s",
        senders * messages_each
    );
    drop(conns);
    Ok(DeviceNumbers {
        devices,
        connect_secs,
        rss_before_kib,
        rss_connected_kib,
        counted_connected,
        senders,
        messages_each,
        ingest_secs,
        ingest_cpu_s,
    })
}

/// Where and how devices connect.
struct Target {
    tls: TlsConnector,
    addr: SocketAddr,
    server: ServerName<'static>,
    /// The host as the hub names itself (with the port unless 443): user names and tokens.
    host: HostName,
    expiry: u64,
}

impl Target {
    fn new(emulator: &EmulatorChild) -> Result<Self, String> {
        let pem = std::fs::read(&emulator.ca_path).map_err(|e| e.to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        // aws-lc-rs by name: the process default is never relied on.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = emulator
            .host
            .rsplit_once(':')
            .map_or(emulator.host.as_str(), |(name, _)| name);
        let server = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs()
            + 3600;
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            addr: emulator.mqtt_addr,
            server,
            host: emulator
                .host
                .parse()
                .map_err(|e: iothub_auth::Error| e.to_string())?,
            expiry,
        })
    }

    /// Opens one device's connection and waits for its CONNACK.
    async fn connect(&self, id: &String, key: &SharedAccessKey) -> Result<Conn, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("{id}: connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = self
            .tls
            .connect(self.server.clone(), tcp)
            .await
            .map_err(|e| format!("{id}: TLS: {e}"))?;
        let mut connect = Connect::new(id.as_str());
        connect.keep_alive = KEEP_ALIVE_SECS;
        connect.set_login(
            format!("{}/{id}/?api-version={API_VERSION}", self.host),
            SasToken::for_device(&self.host, id, None, key, self.expiry)
                .as_secret()
                .expose_secret()
                .to_owned(),
        );
        let mut out = BytesMut::new();
        connect.write(&mut out).map_err(|e| e.to_string())?;
        conn.write_all(&out).await.map_err(|e| e.to_string())?;
        match read_packet(&mut conn, &mut BytesMut::new())
            .await
            .map_err(|e| format!("{id}: waiting for CONNACK: {e}"))?
        {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok(conn),
            other => Err(format!("{id}: the hub answered CONNECT with {other:?}")),
        }
    }
}

/// Sends `count` telemetry messages at QoS 1, at most [`WINDOW`] unacknowledged.
async fn send(conn: &mut Conn, id: &str, count: u64) -> Result<(), String> {
    let topic = format!("devices/{id}/messages/events/");
    let (mut out, mut inbound) = (BytesMut::new(), BytesMut::new());
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < count {
        while sent < count && sent - acked < u64::from(WINDOW) {
            let mut publish = Publish::new(topic.as_str(), QoS::AtLeastOnce, BODY);
            // Packet ids 1..=65535, reused only long after their acknowledgement.
            publish.pkid = (sent % 65_535 + 1) as u16;
            publish.write(&mut out).map_err(|e| e.to_string())?;
            sent += 1;
        }
        if !out.is_empty() {
            conn.write_all(&out).await.map_err(|e| e.to_string())?;
            out.clear();
        }
        if let Packet::PubAck(_) = read_packet(conn, &mut inbound).await? {
            acked += 1;
        }
    }
    Ok(())
}

/// The next packet from the hub.
async fn read_packet(conn: &mut Conn, buf: &mut BytesMut) -> Result<Packet, String> {
    loop {
        match Packet::read(buf, 64 * 1024) {
            Ok(packet) => return Ok(packet),
            Err(PacketError::InsufficientBytes(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        if conn.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the hub closed the connection".into());
        }
    }
}

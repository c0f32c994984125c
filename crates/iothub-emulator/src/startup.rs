//! Start-up: checks the configuration, prepares the data directory (owner-only), loads the
//! shared access policies, opens the store, prepares the TLS material and the Entra tenant,
//! binds the HTTPS and AMQP listeners and spawns their servers and the cloud-to-device sweep.
//!
//! What cannot be used is refused here, with a message naming the file and the problem: a
//! damaged store, a `policies.json` without a usable policy, a setting out of range.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use iothub_rest_gen::SecretString;
use tokio::sync::watch;

use crate::hub::Shared;
use crate::rest::connections::HttpLimits;
use crate::rest::control::ControlAccess;
use crate::rest::{log, server};
use crate::state::{c2d, methods, persist, store};
use crate::{Config, Emulator, Error, SharedAccessPolicy, amqp, auth, entra, faults, mqtt, tls};

impl Emulator {
    pub(crate) async fn start(config: Config) -> Result<Self, Error> {
        config.check().map_err(Error::Config)?;
        let names = config.names();
        if let Some(dir) = &config.data_dir {
            prepare_data_dir(dir)?;
        }
        let policies = load_policies(&config)?;
        let persist = config
            .data_dir
            .as_deref()
            .map(persist::Persist::open)
            .transpose()?
            .map(Arc::new);
        let store = store::Store::open(persist.clone())?;
        let jobs = crate::jobs::Jobs::open(persist.clone())?;
        let c2d = c2d::C2d::new(
            c2d::C2dSettings {
                max_total_bytes: config.c2d_max_total_bytes,
                max_pending_notifications: config.c2d_max_pending_notifications,
                feedback_ttl: Duration::from_secs(config.feedback_ttl_secs),
                feedback_max_delivery_count: config.feedback_max_delivery_count,
                feedback_lock_duration: Duration::from_secs(config.feedback_lock_duration_secs),
            },
            persist,
        )?;

        let (tls_acceptor, amqp_tls_acceptor, mqtt_tls_acceptor, ca_pem, ca_path) =
            if config.tls.enabled {
                let cert_dir = config.data_dir.clone().or_else(|| config.cert_dir.clone());
                let (material, ca_path) = match (&config.tls.cert, &config.tls.key, &cert_dir) {
                    (Some(cert), Some(key), _) => (
                        tls::TlsMaterial::load(cert, key).map_err(|e| Error::Tls(e.to_string()))?,
                        None,
                    ),
                    (Some(_), None, _) | (None, Some(_), _) => {
                        return Err(Error::Config(
                            "tls.cert and tls.key must be given together".into(),
                        ));
                    }
                    (None, None, Some(dir)) => {
                        let (material, _) = tls::TlsMaterial::load_or_generate(dir, &names)
                            .map_err(|e| Error::Tls(e.to_string()))?;
                        (material, Some(dir.join("ca.pem")))
                    }
                    (None, None, None) => (
                        tls::TlsMaterial::generate(&names)
                            .map_err(|e| Error::Tls(e.to_string()))?,
                        None,
                    ),
                };
                let server_config = material
                    .server_config_asking_client_certs(&[b"h2".as_slice(), b"http/1.1".as_slice()])
                    .map_err(|e| Error::Tls(e.to_string()))?;
                // AMQP clients send no ALPN (or one we need not check): offer none.
                let amqp_config = material
                    .server_config(&[])
                    .map_err(|e| Error::Tls(e.to_string()))?;
                let mqtt_config = material
                    .server_config_asking_client_certs(&[])
                    .map_err(|e| Error::Tls(e.to_string()))?;
                (
                    Some(tokio_rustls::TlsAcceptor::from(server_config)),
                    Some(tokio_rustls::TlsAcceptor::from(amqp_config)),
                    Some(tokio_rustls::TlsAcceptor::from(mqtt_config)),
                    Some(material.ca_pem.clone()),
                    ca_path,
                )
            } else {
                (None, None, None, None, None)
            };

        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let amqp_bind = config
            .amqp_bind
            .unwrap_or_else(|| SocketAddr::new(config.bind.ip(), 0));
        let amqp_listener = tokio::net::TcpListener::bind(amqp_bind)
            .await
            .map_err(|source| Error::Bind {
                addr: amqp_bind,
                source,
            })?;
        let amqp_addr = amqp_listener.local_addr().map_err(|source| Error::Bind {
            addr: amqp_bind,
            source,
        })?;
        let (amqp_endpoint, websockets) = amqp::Endpoint::new(
            amqp::Limits {
                idle_timeout: Duration::from_secs(config.amqp_idle_timeout_secs),
                auth_timeout: Duration::from_secs(config.amqp_auth_timeout_secs),
                max_sessions: config.amqp_max_sessions_per_connection,
                max_links: config.amqp_max_links_per_connection,
            },
            config.amqp_max_connections,
        );
        let mqtt_bind = config
            .mqtt_bind
            .unwrap_or_else(|| SocketAddr::new(config.bind.ip(), 0));
        let mqtt_listener = tokio::net::TcpListener::bind(mqtt_bind)
            .await
            .map_err(|source| Error::Bind {
                addr: mqtt_bind,
                source,
            })?;
        let mqtt_addr = mqtt_listener.local_addr().map_err(|source| Error::Bind {
            addr: mqtt_bind,
            source,
        })?;
        let (mqtt_endpoint, mqtt_websockets) = mqtt::Endpoint::new(
            mqtt::Limits {
                auth_timeout: Duration::from_secs(config.mqtt_auth_timeout_secs),
                max_packets_per_second: config.mqtt_max_packets_per_second,
            },
            config.mqtt_max_connections,
            mqtt::telemetry::Telemetry::new(
                config.telemetry_buffer_capacity,
                config.telemetry_buffer_max_bytes,
            ),
        );
        let host_name = config.effective_host_name();
        let default_port = if config.tls.enabled { 443 } else { 80 };
        let host = if addr.port() == default_port {
            host_name.clone()
        } else {
            format!("{host_name}:{}", addr.port())
        };
        let audiences = names.clone();
        let scheme = if config.tls.enabled { "https" } else { "http" };
        // With a data directory the signing key is kept, so tokens outlive a restart; a
        // tenant without clients never signs, so it needs none there.
        let entra_key = match &config.data_dir {
            Some(dir) if !config.entra.clients.is_empty() => Some(entra::load_or_create_key(dir)?),
            _ => None,
        };
        let directory =
            entra::Directory::new(&config.entra, &format!("{scheme}://{host}"), entra_key)?;
        if let Some(dir) = &config.data_dir {
            // Certificates and the names file are written by the TLS module; everything in
            // the data directory is the owner's alone.
            owner_only_files(dir)?;
        }
        let control_token = control_token(&config, addr);
        let mut control_names = names.clone();
        control_names.push(config.bind.ip().to_string());
        let control = ControlAccess::new(
            control_names,
            control_token.as_ref().map(SecretString::expose_secret),
        );
        let shared = Arc::new(Shared {
            store,
            auth: auth::Authenticator::new(policies, audiences, config.bearer_token.clone())
                .with_entra(directory),
            log: log::RequestLog::new(log::LogLimits {
                capacity: config.request_log_capacity,
                max_entry_bytes: config.request_log_max_entry_bytes,
                max_total_bytes: config.request_log_max_bytes,
            }),
            faults: faults::Faults::new(config.faults.clone()),
            methods: methods::Methods::with_limits(methods::Limits {
                max_handlers: config.max_method_handlers,
                max_bytes: config.max_method_handler_bytes,
            }),
            c2d,
            jobs,
            hub_name: config.hub_name.clone(),
            host_name: host.clone(),
            amqp: amqp_endpoint,
            mqtt: mqtt_endpoint,
            http_limits: HttpLimits {
                header_read_timeout: Duration::from_secs(config.http_header_read_timeout_secs),
                body_read_timeout: Duration::from_secs(config.http_body_read_timeout_secs),
                idle_timeout: Duration::from_secs(config.http_idle_timeout_secs),
                max_connections: config.http_max_connections,
            },
            body_readers: tokio::sync::Semaphore::new(server::MAX_BODIES_READ_AT_ONCE),
            control,
            control_token,
            #[cfg(test)]
            scan_gate: crate::state::blocking::Gate::default(),
        });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            tls_acceptor,
            shared.clone(),
            rx.clone(),
        ));
        let amqp_task = tokio::spawn(amqp::serve(
            amqp_listener,
            amqp_tls_acceptor,
            shared.clone(),
            rx.clone(),
            websockets,
        ));
        let mqtt_task = tokio::spawn(mqtt::serve(
            mqtt_listener,
            mqtt_tls_acceptor,
            shared.clone(),
            rx.clone(),
            mqtt_websockets,
        ));
        tokio::spawn(crate::jobs::drive(shared.clone(), rx.clone()));
        tokio::spawn(sweep(shared.clone(), rx));
        tracing::info!(%addr, %amqp_addr, %mqtt_addr, %host, "iothub-emulator listening");
        Ok(Self {
            shared,
            addr,
            amqp_addr,
            mqtt_addr,
            host,
            https: config.tls.enabled,
            ca_pem,
            ca_path,
            shutdown,
            task: Some(task),
            amqp_task: Some(amqp_task),
            mqtt_task: Some(mqtt_task),
        })
    }
}

/// The control API's token: the configured one; on a bind beyond loopback without one, a
/// fresh random one, with a loud warning (the control API can mark devices connected, read
/// the request log and change fault injection).
fn control_token(config: &Config, addr: SocketAddr) -> Option<SecretString> {
    if config.control_token.is_some() {
        return config.control_token.clone();
    }
    if config.binds_loopback() {
        return None;
    }
    tracing::warn!(
        %addr,
        "the emulator listens beyond loopback: anyone who can reach {addr} can try it. The \
         control API (/_emulator/) now requires the token printed at start (or set \
         control_token) in the x-emulator-control-token header"
    );
    Some(auth::random_key().into())
}

/// Expires cloud-to-device messages and locks on time, so that feedback for expiry is
/// produced even when nobody looks at the queue.
async fn sweep(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => shared.c2d.sweep(),
            _ = shutdown.changed() => return,
        }
    }
}

/// Creates the data directory readable by its owner only; an existing one that others can
/// read is used as it is, with a warning (it may be shared on purpose).
fn prepare_data_dir(dir: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory holds keys but others may read it; consider chmod 700"
            );
        }
    }
    Ok(())
}

/// Makes every file directly in the data directory readable by its owner only.
fn owner_only_files(dir: &Path) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_file() {
            let file = std::fs::File::open(&path).map_err(io(&path))?;
            persist::owner_only(&file).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// The configured policies, else the defaults: with a data directory, generated keys are
/// kept in `policies.json` so connection strings survive restarts. Either way, policies that
/// could never authorize anything (none at all, a key that is not base64) are refused.
fn load_policies(config: &Config) -> Result<Vec<SharedAccessPolicy>, Error> {
    if !config.policies.is_empty() {
        check_policies(&config.policies)
            .map_err(|e| Error::Config(format!("shared access policies: {e}")))?;
        return Ok(config.policies.clone());
    }
    let Some(dir) = &config.data_dir else {
        return Ok(SharedAccessPolicy::defaults());
    };
    let path = dir.join("policies.json");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let refuse = |problem: String| {
        Error::Config(format!(
            "{}: {problem}; fix it, or delete the file to have the four default policies \
             generated with new keys",
            path.display()
        ))
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            // The error's position only: its text could quote a key.
            let policies: Vec<SharedAccessPolicy> =
                serde_json::from_slice(&bytes).map_err(|e| {
                    refuse(format!(
                        "not a JSON list of shared access policies (invalid at line {}, column {})",
                        e.line(),
                        e.column()
                    ))
                })?;
            check_policies(&policies).map_err(refuse)?;
            Ok(policies)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let policies = SharedAccessPolicy::defaults();
            let json =
                serde_json::to_vec_pretty(&policies).map_err(|e| Error::Config(e.to_string()))?;
            write_private(&path, &json).map_err(io)?;
            Ok(policies)
        }
        Err(e) => Err(io(e)),
    }
}

/// Why these policies cannot be used, if they cannot: there is none, or one has no name, or
/// a key that is not base64 (the text names the policy and the key, never its value).
fn check_policies(policies: &[SharedAccessPolicy]) -> Result<(), String> {
    use base64::Engine as _;
    if policies.is_empty() {
        return Err("it holds no shared access policy, so no request could be authorized".into());
    }
    for p in policies {
        if p.name.trim().is_empty() {
            return Err("a policy has an empty name".into());
        }
        for (which, key) in [("primary", &p.primary_key), ("secondary", &p.secondary_key)] {
            let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim());
            if !decoded.is_ok_and(|k| !k.is_empty()) {
                return Err(format!(
                    "the {which} key of policy '{}' is not base64 (or is empty)",
                    p.name
                ));
            }
        }
    }
    Ok(())
}

/// Writes a file only its owner can read (it holds keys).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

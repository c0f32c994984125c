//! Start-up: loads the shared access policies, opens the store, prepares the TLS material and
//! the Entra tenant, binds the HTTPS and AMQP listeners and spawns their servers and the
//! cloud-to-device sweep.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::hub::Shared;
use crate::rest::{log, server};
use crate::state::{c2d, methods, persist, store};
use crate::{Config, Emulator, Error, SharedAccessPolicy, amqp, auth, entra, faults, tls};

impl Emulator {
    pub(crate) async fn start(config: Config) -> Result<Self, Error> {
        let names = config.names();
        let policies = load_policies(&config)?;
        let persist = config
            .data_dir
            .as_deref()
            .map(persist::Persist::open)
            .transpose()?;
        let store = store::Store::open(persist)?;

        let (tls_acceptor, amqp_tls_acceptor, ca_pem, ca_path) = if config.tls.enabled {
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
                    tls::TlsMaterial::generate(&names).map_err(|e| Error::Tls(e.to_string()))?,
                    None,
                ),
            };
            let server_config = material
                .server_config(&[b"h2".as_slice(), b"http/1.1".as_slice()])
                .map_err(|e| Error::Tls(e.to_string()))?;
            // AMQP clients send no ALPN (or one we need not check): offer none.
            let amqp_config = material
                .server_config(&[])
                .map_err(|e| Error::Tls(e.to_string()))?;
            (
                Some(tokio_rustls::TlsAcceptor::from(server_config)),
                Some(tokio_rustls::TlsAcceptor::from(amqp_config)),
                Some(material.ca_pem.clone()),
                ca_path,
            )
        } else {
            (None, None, None, None)
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
        let (amqp_endpoint, websockets) =
            amqp::Endpoint::new(Duration::from_secs(config.amqp_idle_timeout_secs));
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
        let shared = Arc::new(Shared {
            store,
            auth: auth::Authenticator::new(policies, audiences, config.bearer_token.clone())
                .with_entra(directory),
            log: log::RequestLog::new(config.request_log_capacity),
            faults: faults::Faults::new(config.faults.clone()),
            methods: methods::Methods::default(),
            c2d: c2d::C2d::default(),
            hub_name: config.hub_name.clone(),
            host_name: host.clone(),
            amqp: amqp_endpoint,
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
        tokio::spawn(sweep(shared.clone(), rx));
        tracing::info!(%addr, %amqp_addr, %host, "iothub-emulator listening");
        Ok(Self {
            shared,
            addr,
            amqp_addr,
            host,
            https: config.tls.enabled,
            ca_pem,
            ca_path,
            shutdown,
            task: Some(task),
            amqp_task: Some(amqp_task),
        })
    }
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

/// The configured policies, else the defaults: with a data directory, generated keys are
/// kept in `policies.json` so connection strings survive restarts.
fn load_policies(config: &Config) -> Result<Vec<SharedAccessPolicy>, Error> {
    if !config.policies.is_empty() {
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
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            let policies = SharedAccessPolicy::defaults();
            let json =
                serde_json::to_vec_pretty(&policies).map_err(|e| Error::Config(e.to_string()))?;
            write_private(&path, &json).map_err(io)?;
            Ok(policies)
        }
        Err(e) => Err(io(e)),
    }
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

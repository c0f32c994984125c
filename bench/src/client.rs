//! The two Rust clients, each run as its own process so that its CPU time and peak memory are
//! its own: `rust` goes through `iothub-registry` as a user would, `bare` is the limit of the
//! REST path (one pooled `reqwest` client, the same URL and headers with a SAS token computed
//! once, the full body read and deserialized into the same generated model, no SDK layer).
//!
//! Every client (these two, `clients/python_client.py`, `clients/node_client.js`) takes the
//! same arguments and prints one JSON line, [`ClientReport`].

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use iothub_amqp::{Message, ServiceClient};
use iothub_auth::{ConnectionString, Credential};
use iothub_registry::models::{
    BulkRegistryOperationResult, Device, DeviceStatus, ExportImportDevice, ImportMode,
    QuerySpecification, Twin, TwinProperties,
};
use iothub_registry::{IfMatch, RegistryManager};
use iothub_rest_gen::API_VERSION;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, IF_MATCH};
use serde::{Deserialize, Serialize};

use crate::measure;

/// Why the `rest` diagnostic mode refuses anything but `get_device`.
const DIAGNOSTIC_ONLY: &str = "the rest mode is a diagnostic for get_device only";

/// The body of every cloud-to-device message.
pub(crate) const C2D_BODY: &str = "{\"command\":\"refresh\",\"interval\":30}";

/// The query every client streams.
pub(crate) const QUERY: &str = "SELECT * FROM devices";

/// Identities per bulk call: the service's limit, and what the SDK loops send.
pub(crate) const BULK_CHUNK: usize = 100;

/// The id of the `i`th seeded device.
pub(crate) fn seeded_id(i: u64) -> String {
    format!("bench-{i:06}")
}

/// What a client does, timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
pub(crate) enum Scenario {
    /// `size` device reads over the seeded devices, `concurrency` in flight.
    #[value(name = "get_device")]
    #[serde(rename = "get_device")]
    GetDevice,
    /// `size` twin PATCHes, each conditional on the etag the previous write returned.
    #[value(name = "twin_patch")]
    #[serde(rename = "twin_patch")]
    TwinPatch,
    /// Streams `size` twins of `SELECT * FROM devices`, a page at a time.
    #[value(name = "query")]
    #[serde(rename = "query")]
    Query,
    /// Creates `size` new devices, 100 per bulk call.
    #[value(name = "bulk_create")]
    #[serde(rename = "bulk_create")]
    BulkCreate,
    /// Sends `size` cloud-to-device messages on one AMQP connection, each to the next
    /// seeded device from `offset` on, so no device queue nears its limit of 50.
    #[value(name = "c2d")]
    #[serde(rename = "c2d")]
    C2d,
}

impl Scenario {
    /// The name clients are given on their command line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::GetDevice => "get_device",
            Self::TwinPatch => "twin_patch",
            Self::Query => "query",
            Self::BulkCreate => "bulk_create",
            Self::C2d => "c2d",
        }
    }
}

/// Which tokio runtime a Rust client runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Runtime {
    /// One thread, like Node's event loop: no cross-thread wake-ups.
    Current,
    /// What `#[tokio::main]` gives: a worker per core.
    Multi,
}

/// Which Rust client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RustMode {
    /// `iothub-registry`'s `RegistryManager`.
    Rust,
    /// One `reqwest` client and `serde_json`, no SDK.
    Bare,
    /// Diagnostic, `get_device` only: `iothub-rest-gen`'s generated client without the
    /// `RegistryManager` layer (retries, timeout, tracing), to tell the layers' costs apart.
    Rest,
}

/// The arguments every client takes (the scripts parse the same flags). The connection string
/// comes from `IOTHUB_CONNECTION_STRING`, so its key is not on a command line.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// Which Rust client.
    #[arg(long)]
    pub(crate) mode: RustMode,
    /// The tokio runtime.
    #[arg(long, default_value = "current")]
    pub(crate) runtime: Runtime,
    /// What to do.
    #[arg(long)]
    pub(crate) scenario: Scenario,
    /// Operations (items for `query`, devices for `bulk_create`).
    #[arg(long)]
    pub(crate) size: u64,
    /// Operations in flight.
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// Seeded devices `bench-000000`... to spread reads and writes over.
    #[arg(long, default_value_t = 1000)]
    pub(crate) devices: u64,
    /// Prefix of the ids `bulk_create` creates (unique per run).
    #[arg(long, default_value = "bulk-")]
    pub(crate) prefix: String,
    /// For `c2d`: the first seeded device to send to; messages go round-robin from there.
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: u64,
    /// Query page size (`x-ms-max-item-count`).
    #[arg(long, default_value_t = 1000)]
    pub(crate) page_size: u32,
    /// The emulator's CA certificate (PEM).
    #[arg(long)]
    pub(crate) ca: PathBuf,
}

/// The one JSON line a client prints. CPU is the client's own (user + system, all threads)
/// over the timed section only; peak RSS is the whole process's high-water mark (`VmHWM`,
/// read the same way by every client).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ClientReport {
    /// Operations done (items streamed, devices created).
    pub(crate) ops: u64,
    /// Wall seconds of the timed section.
    pub(crate) wall_s: f64,
    /// CPU seconds of the client process during the timed section.
    pub(crate) cpu_s: f64,
    /// Peak resident set of the client process, KiB.
    pub(crate) peak_rss_kib: u64,
}

type Fallible<T> = Result<T, String>;

/// Runs one client and prints its report.
pub(crate) fn run(args: &ClientArgs) -> Fallible<()> {
    // The same for both modes, so only the layer above reqwest differs.
    let runtime = match args.runtime {
        Runtime::Current => tokio::runtime::Builder::new_current_thread(),
        Runtime::Multi => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .map_err(|e| format!("runtime: {e}"))?;
    let report = runtime.block_on(run_async(args))?;
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

async fn run_async(args: &ClientArgs) -> Fallible<ClientReport> {
    let cs = std::env::var("IOTHUB_CONNECTION_STRING")
        .map_err(|_| "IOTHUB_CONNECTION_STRING is not set".to_owned())?;
    let ca_pem = std::fs::read(&args.ca).map_err(|e| format!("{}: {e}", args.ca.display()))?;
    let ca = reqwest::Certificate::from_pem(&ca_pem).map_err(|e| format!("CA: {e}"))?;
    // Both modes share this configuration; only the layer above it differs.
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let parsed: ConnectionString = cs.parse().map_err(|e| format!("{e}"))?;
    if args.scenario == Scenario::C2d {
        return c2d(args, &parsed, &ca_pem).await;
    }
    let target = match args.mode {
        RustMode::Rest => Target::Rest(
            iothub_rest_gen::Client::builder(
                format!("https://{}", parsed.host_name().as_str()),
                Credential::from_connection_string(&parsed),
            )
            .http_client(http)
            .build()
            .map_err(|e| e.to_string())?,
        ),
        RustMode::Rust => Target::Sdk(
            RegistryManager::builder(Credential::from_connection_string(&parsed))
                .http_client(http)
                .build()
                .map_err(|e| e.to_string())?,
        ),
        RustMode::Bare => {
            let credential = Credential::from_connection_string(&parsed);
            let token = credential
                .http_authorization()
                .await
                .map_err(|e| e.to_string())?;
            let mut auth =
                HeaderValue::from_str(token.expose_secret()).map_err(|e| e.to_string())?;
            auth.set_sensitive(true);
            Target::Bare(Bare {
                http,
                base: format!("https://{}", parsed.host_name().as_str()),
                auth,
            })
        }
    };

    // Untimed, in every client: the connection, the TLS handshake and lazy initialization
    // (aws-lc seeds its RNG from CPU jitter, about 60 ms) are paid once, not per operation.
    black_box(target.get_device(seeded_id(0)).await?);

    let (ops, wall_s, cpu_s) = match args.scenario {
        Scenario::GetDevice => {
            let devices = args.devices.max(1);
            timed(async {
                stream::iter(0..args.size)
                    .map(|i| target.get_device(seeded_id(i % devices)))
                    .buffer_unordered(args.concurrency.max(1))
                    .try_for_each(|device| {
                        black_box(device);
                        futures::future::ready(Ok(()))
                    })
                    .await?;
                Ok(args.size)
            })
            .await?
        }
        Scenario::TwinPatch => {
            // Untimed: the etag of each twin written, as an application would have it.
            let spread = args.devices.clamp(1, args.size.max(1));
            let mut etags = Vec::new();
            for d in 0..spread {
                let twin = target.get_twin(seeded_id(d)).await?;
                etags.push(twin.etag.ok_or("a twin without etag")?);
            }
            timed(async {
                for i in 0..args.size {
                    let d = (i % spread) as usize;
                    let patch = Twin {
                        properties: Some(TwinProperties {
                            desired: serde_json::Map::from_iter([("n".to_owned(), i.into())]),
                            ..TwinProperties::default()
                        }),
                        ..Twin::default()
                    };
                    let etag = std::mem::take(&mut etags[d]);
                    let twin = target.patch_twin(seeded_id(d as u64), patch, etag).await?;
                    etags[d] = twin.etag.ok_or("a twin without etag")?;
                }
                Ok(args.size)
            })
            .await?
        }
        Scenario::Query => timed(target.query(args.size, args.page_size)).await?,
        Scenario::C2d => return Err("C2D is sent over AMQP, not by this target".into()),
        Scenario::BulkCreate => {
            timed(async {
                let devices = (0..args.size).map(|i| ExportImportDevice {
                    id: Some(format!("{}{i:06}", args.prefix)),
                    import_mode: Some(ImportMode::Create),
                    status: Some(DeviceStatus::Enabled),
                    ..ExportImportDevice::default()
                });
                target.bulk(devices.collect()).await?;
                Ok(args.size)
            })
            .await?
        }
    };
    Ok(ClientReport {
        ops,
        wall_s,
        cpu_s,
        peak_rss_kib: measure::status_kib("self", "VmHWM").map_err(|e| e.to_string())?,
    })
}

/// Cloud-to-device messages through `iothub-amqp`'s `ServiceClient`: one connection, one
/// link, `concurrency` sends overlapping on it. The bare loop has no counterpart: its limit
/// is defined for the REST path.
async fn c2d(args: &ClientArgs, cs: &ConnectionString, ca_pem: &[u8]) -> Fallible<ClientReport> {
    if args.mode != RustMode::Rust {
        return Err("the bare loop is the limit of the REST path; C2D is AMQP".into());
    }
    let client = ServiceClient::builder(Credential::from_connection_string(cs))
        .add_root_certificate_pem(ca_pem)
        .build()
        .map_err(|e| e.to_string())?;
    let devices = args.devices.max(1);
    let send = |i: u64| {
        let client = &client;
        async move {
            let message = Message::builder(seeded_id((args.offset + i) % devices))
                .body(C2D_BODY)
                .build()
                .map_err(|e| e.to_string())?;
            client.send(&message).await.map_err(|e| e.to_string())
        }
    };
    // Untimed: connecting, TLS, CBS authorization and the link, once.
    send(args.size).await?;
    let (ops, wall_s, cpu_s) = timed(async {
        stream::iter(0..args.size)
            .map(send)
            .buffer_unordered(args.concurrency.max(1))
            .try_for_each(|()| futures::future::ready(Ok(())))
            .await?;
        Ok(args.size)
    })
    .await?;
    client.close().await;
    Ok(ClientReport {
        ops,
        wall_s,
        cpu_s,
        peak_rss_kib: measure::status_kib("self", "VmHWM").map_err(|e| e.to_string())?,
    })
}

/// Wall and CPU seconds of `work`, which returns its operation count.
async fn timed(work: impl Future<Output = Fallible<u64>>) -> Fallible<(u64, f64, f64)> {
    let cpu_before = measure::own_cpu_seconds();
    let started = Instant::now();
    let ops = work.await?;
    let wall = started.elapsed().as_secs_f64();
    Ok((ops, wall, measure::own_cpu_seconds() - cpu_before))
}

/// The client under test. Matching on two variants costs the same in both modes.
enum Target {
    Sdk(RegistryManager),
    Rest(iothub_rest_gen::Client),
    Bare(Bare),
}

/// The bare loop's state: what any hand-written client would keep.
struct Bare {
    http: reqwest::Client,
    /// `https://host[:port]`.
    base: String,
    /// `SharedAccessSignature sr=...`, computed once.
    auth: HeaderValue,
}

impl Bare {
    /// Sends a request with the headers `iothub-registry` sends, and deserializes a 2xx body.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Fallible<(T, reqwest::header::HeaderMap)> {
        let response = request
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        let value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok((value, headers))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={API_VERSION}", self.base)
    }

    fn json(
        &self,
        request: reqwest::RequestBuilder,
        body: &impl Serialize,
    ) -> Fallible<reqwest::RequestBuilder> {
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        Ok(request.header(CONTENT_TYPE, "application/json").body(body))
    }
}

impl Target {
    async fn get_device(&self, id: String) -> Fallible<Device> {
        match self {
            Self::Sdk(rm) => rm.get_device(id).await.map_err(|e| e.to_string()),
            Self::Rest(rest) => rest
                .devices_get_identity()
                .id(id)
                .send()
                .await
                .map(iothub_rest_gen::ResponseValue::into_inner)
                .map_err(|e| e.to_string()),
            Self::Bare(bare) => {
                let request = bare.http.get(bare.url(&format!("/devices/{id}")));
                Ok(bare.send(request).await?.0)
            }
        }
    }

    async fn get_twin(&self, id: String) -> Fallible<Twin> {
        match self {
            Self::Sdk(rm) => rm.get_twin(id).await.map_err(|e| e.to_string()),
            Self::Rest(_) => Err(DIAGNOSTIC_ONLY.into()),
            Self::Bare(bare) => {
                let request = bare.http.get(bare.url(&format!("/twins/{id}")));
                Ok(bare.send(request).await?.0)
            }
        }
    }

    async fn patch_twin(&self, id: String, patch: Twin, etag: String) -> Fallible<Twin> {
        match self {
            Self::Sdk(rm) => {
                let if_match = IfMatch::from_current(Some(&etag)).map_err(|e| e.to_string())?;
                rm.update_twin(id, patch, if_match)
                    .await
                    .map_err(|e| e.to_string())
            }
            Self::Rest(_) => Err(DIAGNOSTIC_ONLY.into()),
            Self::Bare(bare) => {
                let request = bare
                    .http
                    .patch(bare.url(&format!("/twins/{id}")))
                    .header(IF_MATCH, format!("\"{etag}\""));
                Ok(bare.send(bare.json(request, &patch)?).await?.0)
            }
        }
    }

    /// Streams up to `n` twins without keeping them; returns how many were seen.
    async fn query(&self, n: u64, page_size: u32) -> Fallible<u64> {
        let mut seen = 0;
        match self {
            Self::Sdk(rm) => {
                let twins = rm.query(QUERY).page_size(page_size).twins();
                let mut twins = std::pin::pin!(twins);
                while seen < n {
                    match twins.try_next().await.map_err(|e| e.to_string())? {
                        Some(twin) => black_box(twin),
                        None => break,
                    };
                    seen += 1;
                }
            }
            Self::Rest(_) => return Err(DIAGNOSTIC_ONLY.into()),
            Self::Bare(bare) => {
                let spec = QuerySpecification {
                    query: Some(QUERY.to_owned()),
                };
                let page_size = page_size.to_string();
                let mut continuation: Option<String> = None;
                while seen < n {
                    let mut request = bare
                        .http
                        .post(bare.url("/devices/query"))
                        .header("x-ms-max-item-count", page_size.as_str());
                    if let Some(token) = &continuation {
                        request = request.header("x-ms-continuation", token.as_str());
                    }
                    let (page, headers): (Vec<Twin>, _) =
                        bare.send(bare.json(request, &spec)?).await?;
                    for twin in page.into_iter().take((n - seen) as usize) {
                        black_box(twin);
                        seen += 1;
                    }
                    continuation = headers
                        .get("x-ms-continuation")
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned);
                    if continuation.is_none() {
                        break;
                    }
                }
            }
        }
        Ok(seen)
    }

    async fn bulk(&self, devices: Vec<ExportImportDevice>) -> Fallible<()> {
        match self {
            Self::Sdk(rm) => {
                // The auto-chunking helper, one call in flight like the SDK loops.
                let report = rm.bulk(devices).send().await.map_err(|e| e.to_string())?;
                if !report.is_successful() {
                    return Err(format!("bulk: {report:?}"));
                }
            }
            Self::Rest(_) => return Err(DIAGNOSTIC_ONLY.into()),
            Self::Bare(bare) => {
                for chunk in devices.chunks(BULK_CHUNK) {
                    let request = bare.http.post(bare.url("/devices"));
                    let (result, _): (BulkRegistryOperationResult, _) =
                        bare.send(bare.json(request, &chunk)?).await?;
                    if result.is_successful != Some(true) {
                        return Err(format!("bulk: {result:?}"));
                    }
                }
            }
        }
        Ok(())
    }
}

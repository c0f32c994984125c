//! HTTP `CONNECT` tunnels, for networks where only a proxy reaches the internet.

use std::fmt;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

// A proxy's answer to CONNECT is a status line and a few headers; anything longer is not one.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// An HTTP proxy: `http://[user:password@]host[:port]` (port 80 by default).
#[derive(Clone)]
pub(crate) struct Proxy {
    host: String,
    port: u16,
    // `Basic <base64>`; never printed.
    authorization: Option<String>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self.authorization.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

impl Proxy {
    /// The proxy of a URL parsed by [`iothub_auth::network::ProxySetting::url`].
    pub(crate) fn from_url(parsed: &url::Url) -> Result<Self> {
        // Never echo the URL: it may hold a password.
        let invalid = |reason: &str| Error::Configuration {
            reason: format!("the proxy URL is not usable: {reason}"),
        };
        if parsed.scheme() != "http" {
            return Err(invalid("only http:// proxies are supported"));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("it has no host"))?
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| invalid("the credentials are not valid UTF-8"))
        };
        let authorization = if parsed.username().is_empty() && parsed.password().is_none() {
            None
        } else {
            let user = decode(parsed.username())?;
            let password = decode(parsed.password().unwrap_or(""))?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {encoded}"))
        };
        Ok(Self {
            host,
            port,
            authorization,
        })
    }

    /// `host:port` of the proxy, for error messages.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Connects to the proxy and opens a tunnel to `target` (`host:port`).
    pub(crate) async fn connect(&self, target: &str) -> Result<TcpStream> {
        let endpoint = self.endpoint();
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| Error::connect(&endpoint, "the proxy could not be reached", e))?;
        let _ = stream.set_nodelay(true);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| Error::connect(&endpoint, "the proxy closed the connection", e))?;

        // Byte by byte, so that nothing after the head (the tunnel's first bytes) is consumed.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_RESPONSE_HEAD {
                return Err(Error::connect(
                    &endpoint,
                    "the proxy's answer to CONNECT is too long",
                    "no end of headers",
                ));
            }
            let byte = stream.read_u8().await.map_err(|e| {
                Error::connect(
                    &endpoint,
                    "the proxy closed the connection during CONNECT",
                    e,
                )
            })?;
            head.push(byte);
        }
        let status = parse_status(&head).ok_or_else(|| {
            Error::connect(
                &endpoint,
                "the proxy's answer to CONNECT is not HTTP",
                String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(&[]))
                    .trim()
                    .to_owned(),
            )
        })?;
        if !(200..300).contains(&status) {
            return Err(Error::connect(
                &endpoint,
                "the proxy refused the CONNECT tunnel",
                format!("HTTP status {status}"),
            ));
        }
        Ok(stream)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// The status code of `HTTP/1.x NNN reason`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iothub_auth::network::ProxySetting;
    use tokio::net::TcpListener;

    /// As the client builder reads a proxy URL: parsed by iothub-auth, checked here.
    fn parse(url: &str) -> Result<Proxy> {
        match ProxySetting::url(url) {
            Ok(ProxySetting::Url(url)) => Proxy::from_url(&url),
            Ok(other) => panic!("{other:?}"),
            Err(error) => Err(Error::Configuration {
                reason: error.to_string(),
            }),
        }
    }

    #[test]
    fn urls_parse_with_and_without_credentials() {
        let proxy = parse("http://proxy.local:3128").unwrap();
        assert_eq!(proxy.endpoint(), "proxy.local:3128");
        assert!(proxy.authorization.is_none());

        let proxy = parse("http://proxy.local").unwrap();
        assert_eq!(proxy.endpoint(), "proxy.local:80");

        let proxy = parse("http://al%40ice:p%3Ass@10.0.0.1:8080/").unwrap();
        // base64("al@ice:p:ss")
        assert_eq!(
            proxy.authorization.as_deref(),
            Some("Basic YWxAaWNlOnA6c3M=")
        );
        let debug = format!("{proxy:?}");
        assert!(
            !debug.contains("YWx") && debug.contains("[REDACTED]"),
            "{debug}"
        );
    }

    #[test]
    fn bad_urls_are_configuration_errors_without_the_password() {
        for url in ["https://proxy:443", "socks5://proxy:1080", "http://"] {
            assert!(
                matches!(parse(url), Err(Error::Configuration { .. })),
                "{url}"
            );
        }
        let error = parse("ftp://user:hunter2@proxy").unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        let error = parse("http://user:hunter2@[::1").unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn a_url_without_a_scheme_is_an_http_proxy() {
        // iothub-auth reads it so, as the HTTPS client (reqwest) always has; before the two
        // shared one parser, this client refused it.
        assert_eq!(parse("proxy:3128").unwrap().endpoint(), "proxy:3128");
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some(200)
        );
        assert_eq!(parse_status(b"HTTP/1.0 407 Proxy Auth\r\n\r\n"), Some(407));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20\r\n\r\n"), None);
    }

    async fn one_shot_proxy(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                request.push(socket.read_u8().await.unwrap());
            }
            socket.write_all(answer).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (format!("http://u:p@{address}"), task)
    }

    #[tokio::test]
    async fn connect_sends_the_request_and_keeps_the_tunnel_bytes() {
        let (url, server) =
            one_shot_proxy(b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nTUNNEL").await;
        let proxy = parse(&url).unwrap();
        let mut stream = proxy.connect("hub.example:443").await.unwrap();
        let mut first = [0u8; 6];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"TUNNEL");
        let request = server.await.unwrap();
        assert_eq!(
            request,
            "CONNECT hub.example:443 HTTP/1.1\r\nHost: hub.example:443\r\n\
             Proxy-Authorization: Basic dTpw\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_a_connect_error() {
        let (url, _server) =
            one_shot_proxy(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let error = parse(&url)
            .unwrap()
            .connect("hub.example:443")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Connect { stage, .. } if stage.contains("refused")),
            "{error:?}"
        );
    }
}

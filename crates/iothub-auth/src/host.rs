//! The hub's host name, checked once so that building URLs and tokens cannot fail later.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::{Error, HostNameError};

/// An IoT Hub host name with an optional port, as written in a connection string's `HostName`.
///
/// Accepted: a DNS name (`my-hub.azure-devices.net`, `my-hub.azure-devices.cn`, `localhost`), an
/// IPv4 literal (`127.0.0.1`) or a bracketed IPv6 literal (`[::1]`), each with an optional `:port`
/// from 1 to 65535. No cloud suffix is assumed, so emulators and sovereign clouds work. DNS labels
/// may contain `_`, as Docker Compose service names do.
///
/// ```
/// use iothub_auth::HostName;
///
/// let host: HostName = "localhost:8443".parse()?;
/// assert_eq!(host.as_str(), "localhost:8443");
/// assert_eq!(host.host(), "localhost");
/// assert_eq!(host.port(), Some(8443));
///
/// let hub: HostName = "contoso.azure-devices.net".parse()?;
/// assert_eq!(hub.hub_name(), Some("contoso"));
/// # Ok::<(), iothub_auth::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HostName {
    full: String,
    // Byte length of the host part, i.e. where `:port` starts.
    host_len: usize,
    port: Option<u16>,
    is_ip: bool,
}

impl HostName {
    /// The host name exactly as given, including any `:port`. This is what the REST base URL
    /// (`https://{host_name}`), the HTTP SAS `sr` and the CBS audience are built from.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The host without the port; IPv6 literals keep their brackets.
    pub fn host(&self) -> &str {
        &self.full[..self.host_len]
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The first DNS label (`contoso` for `contoso.azure-devices.net`), which IoT Hub uses as the
    /// hub name. `None` for IP literals, which have no labels.
    pub fn hub_name(&self) -> Option<&str> {
        if self.is_ip {
            return None;
        }
        self.host().split('.').next()
    }

    // Shared with the connection-string parser, which reports problems under its own variant.
    pub(crate) fn parse(s: &str) -> Result<Self, HostNameError> {
        if s.is_empty() {
            return Err(HostNameError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(HostNameError::Whitespace);
        }
        if s.contains("://") {
            return Err(HostNameError::Scheme);
        }
        if s.contains(['/', '?', '#', '@', '\\']) {
            return Err(HostNameError::Path);
        }

        let (host, port, is_ip) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or(HostNameError::Syntax)?;
            inner
                .parse::<Ipv6Addr>()
                .map_err(|_| HostNameError::Syntax)?;
            let port = match after {
                "" => None,
                _ => Some(parse_port(
                    after.strip_prefix(':').ok_or(HostNameError::Syntax)?,
                )?),
            };
            (&s[..inner.len() + 2], port, true)
        } else {
            let (host, port) = match s.split_once(':') {
                // A second ':' means an unbracketed IPv6 literal, which is ambiguous with a port.
                Some((_, port)) if port.contains(':') => return Err(HostNameError::Syntax),
                Some((host, port)) => (host, Some(parse_port(port)?)),
                None => (s, None),
            };
            let is_ip = host.parse::<Ipv4Addr>().is_ok();
            if !is_ip && !is_dns_name(host) {
                return Err(HostNameError::Syntax);
            }
            (host, port, is_ip)
        };

        Ok(Self {
            full: s.to_owned(),
            host_len: host.len(),
            port,
            is_ip,
        })
    }
}

fn parse_port(port: &str) -> Result<u16, HostNameError> {
    // `u16::from_str` would also take "+443"; only plain digits are a port.
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostNameError::Port);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostNameError::Port),
        Ok(p) => Ok(p),
    }
}

fn is_dns_name(host: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    // An all-numeric last label would make `999.1.1.1` pass as a name; URL parsers treat such a
    // host as a (bad) IPv4 address, and so do we.
    let numeric_tld = host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    host.len() <= 253 && host.split('.').all(label_ok) && !numeric_tld
}

impl FromStr for HostName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s).map_err(Error::InvalidHostName)
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.full, f)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HostName, HostNameError> {
        HostName::parse(s)
    }

    #[test]
    fn accepts_hub_names_emulators_and_sovereign_clouds() {
        for (input, host, port, hub) in [
            (
                "contoso.azure-devices.net",
                "contoso.azure-devices.net",
                None,
                Some("contoso"),
            ),
            ("x.azure-devices.cn", "x.azure-devices.cn", None, Some("x")),
            (
                "hub.azure-devices.us:443",
                "hub.azure-devices.us",
                Some(443),
                Some("hub"),
            ),
            ("localhost:8443", "localhost", Some(8443), Some("localhost")),
            (
                "iothub_emulator",
                "iothub_emulator",
                None,
                Some("iothub_emulator"),
            ),
            ("127.0.0.1:8443", "127.0.0.1", Some(8443), None),
            ("10.0.0.1", "10.0.0.1", None, None),
            ("[::1]:8443", "[::1]", Some(8443), None),
            ("[fe80::1]", "[fe80::1]", None, None),
            ("a:65535", "a", Some(65535), Some("a")),
            ("a:1", "a", Some(1), Some("a")),
        ] {
            let h = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(h.as_str(), input);
            assert_eq!(h.host(), host, "{input}");
            assert_eq!(h.port(), port, "{input}");
            assert_eq!(h.hub_name(), hub, "{input}");
            assert_eq!(h.to_string(), input);
        }
    }

    #[test]
    fn rejects_each_kind_of_bad_host() {
        use HostNameError::*;
        for (input, want) in [
            ("", Empty),
            ("https://x.azure-devices.net", Scheme),
            ("amqps://x", Scheme),
            ("x.azure-devices.net/devices", Path),
            ("x.azure-devices.net?a=b", Path),
            ("user@x", Path),
            ("x y", Whitespace),
            (" x", Whitespace),
            ("x\t", Whitespace),
            ("x:", Port),
            ("x:0", Port),
            ("x:65536", Port),
            ("x:+443", Port),
            ("x:12345678", Port),
            ("x:http", Port),
            ("[::1]:0", Port),
            ("::1", Syntax),
            ("[::1", Syntax),
            ("[nope]", Syntax),
            ("[::1]8443", Syntax),
            ("-x.net", Syntax),
            ("x-.net", Syntax),
            ("x..net", Syntax),
            ("x.net.", Syntax),
            (".x", Syntax),
            ("999.1.1.1", Syntax),
            ("1.2.3", Syntax),
            ("hüb.net", Syntax),
            ("x;y", Syntax),
        ] {
            assert_eq!(parse(input), Err(want), "{input:?}");
        }
        let long_label = "a".repeat(64);
        assert_eq!(parse(&long_label), Err(Syntax));
        let long_name = ["a"; 130].join(".");
        assert_eq!(parse(&long_name), Err(Syntax));
    }

    #[test]
    fn from_str_wraps_the_reason_without_echoing_the_input() {
        let input = "HostName=x;SharedAccessKey=c2VjcmV0";
        let err = input.parse::<HostName>().unwrap_err();
        assert!(matches!(err, Error::InvalidHostName(HostNameError::Syntax)));
        assert!(!err.to_string().contains("c2VjcmV0"));
        assert!(!format!("{err:?}").contains("c2VjcmV0"));
    }
}

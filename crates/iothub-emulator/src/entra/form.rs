//! `application/x-www-form-urlencoded` bodies, as the token endpoint reads them and as the
//! request log shows them (secrets redacted).

use percent_encoding::percent_decode;

/// Parameters whose values are secrets: never logged.
const SECRET_PARAMETERS: &[&str] = &["client_secret", "client_assertion", "password"];

/// At most this many parameters are read from one body.
const MAX_PARAMETERS: usize = 64;

/// Why a form body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormError {
    /// A parameter appears twice (its name, decoded).
    Duplicate(String),
    /// More than [`MAX_PARAMETERS`] parameters.
    TooMany,
}

/// The decoded parameters of a form body, in order.
#[derive(Default)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Decodes `+` as space and `%XX` escapes (invalid UTF-8 is replaced); empty segments
    /// (`a=1&&b=2`) are skipped and a segment without `=` is a name with an empty value.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, FormError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for segment in body.split(|&b| b == b'&').filter(|s| !s.is_empty()) {
            if pairs.len() == MAX_PARAMETERS {
                return Err(FormError::TooMany);
            }
            let (name, value) = split_pair(segment);
            let name = decode(name);
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(FormError::Duplicate(name));
            }
            pairs.push((name, decode(value)));
        }
        Ok(Self { pairs })
    }

    /// The value of `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn split_pair(segment: &[u8]) -> (&[u8], &[u8]) {
    match segment.iter().position(|&b| b == b'=') {
        Some(i) => (&segment[..i], &segment[i + 1..]),
        None => (segment, &[]),
    }
}

fn decode(raw: &[u8]) -> String {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&plus_as_space)
        .decode_utf8_lossy()
        .into_owned()
}

/// A form body (or query string) for the request log: every secret parameter (however its
/// name is encoded) written `name=REDACTED`, the rest as sent.
pub(crate) fn redact(raw: &[u8]) -> String {
    let segments: Vec<String> = raw
        .split(|&b| b == b'&')
        .map(|segment| {
            let (name, _) = split_pair(segment);
            // Conservative: any name that starts like a secret one (`client_secret%3D…`
            // included, where a client mangled its own encoding).
            let decoded = decode(name).trim_start().to_ascii_lowercase();
            // The name is written as the parameter's plain name: a mangled one may hold
            // the secret itself.
            match SECRET_PARAMETERS.iter().find(|s| decoded.starts_with(*s)) {
                Some(secret) => format!("{secret}=REDACTED"),
                None => String::from_utf8_lossy(segment).into_owned(),
            }
        })
        .collect();
    segments.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_msal_and_azure_identity_send() {
        let body = b"client_id=app-1&client_secret=s%3Dcr%2Bt+x&grant_type=client_credentials\
                     &scope=https%3A%2F%2Fiothubs.azure.net%2F.default&client_info=1";
        let form = Form::parse(body).unwrap();
        assert_eq!(form.get("client_id"), Some("app-1"));
        assert_eq!(form.get("client_secret"), Some("s=cr+t x"));
        assert_eq!(form.get("grant_type"), Some("client_credentials"));
        assert_eq!(
            form.get("scope"),
            Some("https://iothubs.azure.net/.default")
        );
        assert_eq!(form.get("missing"), None);
    }

    #[test]
    fn odd_bodies_parse_without_panicking() {
        let form = Form::parse(b"&&a&b=&=c&%ZZ=%&\xff=\xfe").unwrap();
        assert_eq!(form.get("a"), Some(""));
        assert_eq!(form.get("b"), Some(""));
        assert_eq!(form.get(""), Some("c"));
        assert_eq!(form.get("%ZZ"), Some("%"));
        assert_eq!(form.get("\u{fffd}"), Some("\u{fffd}"));
        assert!(Form::parse(b"").unwrap().get("a").is_none());
        assert!(
            Form::parse(b"{\"json\": true}")
                .unwrap()
                .get("grant_type")
                .is_none()
        );
    }

    #[test]
    fn duplicates_and_floods_are_refused() {
        assert_eq!(
            Form::parse(b"client_id=a&client%5Fid=b").err(),
            Some(FormError::Duplicate("client_id".into()))
        );
        let many: Vec<String> = (0..65).map(|i| format!("p{i}=v")).collect();
        assert_eq!(
            Form::parse(many.join("&").as_bytes()).err(),
            Some(FormError::TooMany)
        );
        let enough: Vec<String> = (0..64).map(|i| format!("p{i}=v")).collect();
        assert!(Form::parse(enough.join("&").as_bytes()).is_ok());
    }

    #[test]
    fn redaction_hides_secrets_however_they_are_written() {
        for body in [
            "client_id=app&client_secret=hunter2&scope=x",
            "client%5Fsecret=hunter2",
            "CLIENT_SECRET=hunter2",
            "client_assertion=hunter2&client_assertion_type=jwt-bearer",
            "client_secret=hunter2=still-the-secret",
            "client_secret=hunter2&client_secret=hunter2",
            "client_secret%3Dhunter2",
            "+client_secret=hunter2",
        ] {
            let out = redact(body.as_bytes());
            assert!(!out.contains("hunter2"), "{body} -> {out}");
            assert!(out.contains("REDACTED"), "{out}");
        }
        assert_eq!(
            redact(b"client_id=app&client_secret=s&grant_type=client_credentials"),
            "client_id=app&client_secret=REDACTED&grant_type=client_credentials"
        );
        assert_eq!(redact(b""), "");
        assert_eq!(redact(b"not a form"), "not a form");
    }
}

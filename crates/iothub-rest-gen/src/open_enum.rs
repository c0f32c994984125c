//! Open enums: the service's string enums, typed, with a place for values added later.
//!
//! Typify generates closed enums, so a status or error code the service introduces after
//! api-version 2021-04-12 would fail deserialization of the whole response. `cargo xtask
//! codegen` instead emits one `open_enum!` invocation per enum of the spec.

/// Defines a string enum whose unknown values deserialize into `Other(String)`.
///
/// Equality, ordering and hashing go through the string form, so `Other("enabled")`
/// (however it was built) equals `Enabled`.
macro_rules! open_enum {
    ($name:ident { $($variant:ident = $value:literal),* $(,)? }) => {
        #[doc = concat!(
            "The service's `", stringify!($name), "` values. A value this version does not ",
            "know is kept verbatim in [`", stringify!($name), "::Other`], so newer services ",
            "never break deserialization."
        )]
        #[derive(Clone, Debug)]
        pub enum $name {
            $(
                #[doc = concat!("`\"", $value, "\"`")]
                $variant,
            )*
            /// A value unknown to this version of the SDK, as the service sent it.
            Other(::std::string::String),
        }

        impl $name {
            /// Every value this version knows, in the order of the spec.
            pub const KNOWN: &'static [&'static str] = &[$($value),*];

            /// The value as the service spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $value,)*
                    Self::Other(value) => value,
                }
            }

            /// Whether this is one of [`Self::KNOWN`].
            pub fn is_known(&self) -> bool {
                Self::KNOWN.contains(&self.as_str())
            }
        }

        impl ::std::convert::From<&str> for $name {
            fn from(value: &str) -> Self {
                match value {
                    $($value => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl ::std::convert::From<::std::string::String> for $name {
            fn from(value: ::std::string::String) -> Self {
                match Self::from(value.as_str()) {
                    Self::Other(_) => Self::Other(value),
                    known => known,
                }
            }
        }

        /// A copy: open enums keep unknown values as text, so they are `Clone` but not
        /// `Copy`; this lets a method taking `impl Into<Self>` be given `&value` as often as
        /// needed.
        impl ::std::convert::From<&$name> for $name {
            fn from(value: &$name) -> Self {
                value.clone()
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::std::convert::Infallible;

            fn from_str(value: &str) -> ::std::result::Result<Self, Self::Err> {
                Ok(Self::from(value))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::cmp::PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl ::std::cmp::Eq for $name {}

        impl ::std::hash::Hash for $name {
            fn hash<H: ::std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        impl ::std::cmp::PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> ::std::option::Option<::std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl ::std::cmp::Ord for $name {
            fn cmp(&self, other: &Self) -> ::std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                <::std::string::String as ::serde::Deserialize>::deserialize(deserializer)
                    .map(Self::from)
            }
        }
    };
}

pub(crate) use open_enum;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use crate::types::{DeviceStatus, ErrorCode};

    #[test]
    fn known_values_round_trip() {
        let status: DeviceStatus = serde_json::from_str("\"disabled\"").unwrap();
        assert_eq!(status, DeviceStatus::Disabled);
        assert_eq!(serde_json::to_string(&status).unwrap(), "\"disabled\"");
        assert!(status.is_known());
        assert_eq!(DeviceStatus::KNOWN, ["enabled", "disabled"]);
    }

    #[test]
    fn unknown_values_are_kept_verbatim() {
        let status: DeviceStatus = serde_json::from_str("\"quarantined\"").unwrap();
        assert_eq!(status, DeviceStatus::Other("quarantined".into()));
        assert!(!status.is_known());
        assert_eq!(serde_json::to_string(&status).unwrap(), "\"quarantined\"");
        assert_eq!(status.to_string(), "quarantined");
    }

    #[test]
    fn other_spelling_a_known_value_equals_the_variant() {
        let odd = DeviceStatus::Other("enabled".into());
        assert_eq!(odd, DeviceStatus::Enabled);
        let set: HashSet<_> = [odd, DeviceStatus::Enabled].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_eq!("enabled".parse::<DeviceStatus>(), Ok(DeviceStatus::Enabled));
        assert_ne!(
            DeviceStatus::from("Enabled"),
            DeviceStatus::Enabled,
            "case matters"
        );
    }

    #[test]
    fn error_codes_are_typed() {
        assert_eq!(ErrorCode::KNOWN.len(), 216);
        assert_eq!(ErrorCode::from("DeviceNotFound"), ErrorCode::DeviceNotFound);
    }
}

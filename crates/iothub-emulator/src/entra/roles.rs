//! Azure RBAC as IoT Hub applies it to Microsoft Entra principals: the service's data
//! actions, its built-in roles and the data actions each grants, and Azure's wildcard
//! matching of actions.
//!
//! Sources: the role definitions in "Azure built-in roles for Internet of Things"
//! (<https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/internet-of-things>)
//! and the data actions in "Control access to IoT Hub by using Microsoft Entra ID"
//! (<https://learn.microsoft.com/azure/iot-hub/authenticate-authorize-azure-ad>).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A data action of IoT Hub's service API that the emulator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    DevicesRead,
    DevicesWrite,
    DevicesDelete,
    TwinsRead,
    TwinsWrite,
    C2dSend,
    C2dFeedback,
    C2dPurge,
    MethodsInvoke,
    FileNotifications,
    StatisticsRead,
    ConfigurationsRead,
    ConfigurationsWrite,
    ConfigurationsDelete,
    ConfigurationsTestQueries,
    ConfigurationsApplyToEdgeDevice,
    JobsRead,
    JobsWrite,
    JobsDelete,
}

impl Action {
    const ALL: [Action; 19] = [
        Action::DevicesRead,
        Action::DevicesWrite,
        Action::DevicesDelete,
        Action::TwinsRead,
        Action::TwinsWrite,
        Action::C2dSend,
        Action::C2dFeedback,
        Action::C2dPurge,
        Action::MethodsInvoke,
        Action::FileNotifications,
        Action::StatisticsRead,
        Action::ConfigurationsRead,
        Action::ConfigurationsWrite,
        Action::ConfigurationsDelete,
        Action::ConfigurationsTestQueries,
        Action::ConfigurationsApplyToEdgeDevice,
        Action::JobsRead,
        Action::JobsWrite,
        Action::JobsDelete,
    ];

    /// The action's name in Azure RBAC.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::DevicesRead => "Microsoft.Devices/IotHubs/devices/read",
            Self::DevicesWrite => "Microsoft.Devices/IotHubs/devices/write",
            Self::DevicesDelete => "Microsoft.Devices/IotHubs/devices/delete",
            Self::TwinsRead => "Microsoft.Devices/IotHubs/twins/read",
            Self::TwinsWrite => "Microsoft.Devices/IotHubs/twins/write",
            Self::C2dSend => "Microsoft.Devices/IotHubs/cloudToDeviceMessages/send/action",
            Self::C2dFeedback => "Microsoft.Devices/IotHubs/cloudToDeviceMessages/feedback/action",
            Self::C2dPurge => "Microsoft.Devices/IotHubs/cloudToDeviceMessages/queue/purge/action",
            Self::MethodsInvoke => "Microsoft.Devices/IotHubs/directMethods/invoke/action",
            Self::FileNotifications => "Microsoft.Devices/IotHubs/fileUpload/notifications/action",
            Self::StatisticsRead => "Microsoft.Devices/IotHubs/statistics/read",
            Self::ConfigurationsRead => "Microsoft.Devices/IotHubs/configurations/read",
            Self::ConfigurationsWrite => "Microsoft.Devices/IotHubs/configurations/write",
            Self::ConfigurationsDelete => "Microsoft.Devices/IotHubs/configurations/delete",
            Self::ConfigurationsTestQueries => {
                "Microsoft.Devices/IotHubs/configurations/testQueries/action"
            }
            Self::ConfigurationsApplyToEdgeDevice => {
                "Microsoft.Devices/IotHubs/configurations/applyToEdgeDevice/action"
            }
            Self::JobsRead => "Microsoft.Devices/IotHubs/jobs/read",
            Self::JobsWrite => "Microsoft.Devices/IotHubs/jobs/write",
            Self::JobsDelete => "Microsoft.Devices/IotHubs/jobs/delete",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The data actions a principal holds, resolved from its roles once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Actions(u32);

impl Actions {
    /// Every known action matched by one of `patterns` (Azure's syntax: `*` stands for any
    /// run of characters, `/` included; case does not matter).
    pub(crate) fn from_patterns<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = 0;
        for pattern in patterns {
            for action in Action::ALL {
                if wildcard_match(pattern, action.as_str()) {
                    set |= action.bit();
                }
            }
        }
        Self(set)
    }

    pub(crate) fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    pub(crate) fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// A built-in Azure role of IoT Hub's data plane; in TOML, by its Azure name
/// (`"IoT Hub Data Contributor"`).
///
/// | role | data actions | what the emulator lets it do |
/// |---|---|---|
/// | IoT Hub Data Reader | `Microsoft.Devices/IotHubs/*/read`, `…/fileUpload/notifications/action` | read devices, modules, twins (query included), configurations, jobs and statistics; receive file-upload notifications |
/// | IoT Hub Data Contributor | `Microsoft.Devices/IotHubs/*` | everything |
/// | IoT Hub Registry Contributor | `Microsoft.Devices/IotHubs/devices/*` | read, create, update and delete devices and modules (bulk included) |
/// | IoT Hub Twin Contributor | `Microsoft.Devices/IotHubs/twins/*` | read, update and replace twins; query |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IotHubRole {
    /// "IoT Hub Data Reader": full read access to the data plane.
    #[serde(rename = "IoT Hub Data Reader")]
    DataReader,
    /// "IoT Hub Data Contributor": full access to the data plane.
    #[serde(rename = "IoT Hub Data Contributor")]
    DataContributor,
    /// "IoT Hub Registry Contributor": full access to the device registry.
    #[serde(rename = "IoT Hub Registry Contributor")]
    RegistryContributor,
    /// "IoT Hub Twin Contributor": read and write access to device and module twins.
    #[serde(rename = "IoT Hub Twin Contributor")]
    TwinContributor,
}

impl IotHubRole {
    /// The four built-in roles.
    pub const ALL: [IotHubRole; 4] = [
        IotHubRole::DataReader,
        IotHubRole::DataContributor,
        IotHubRole::RegistryContributor,
        IotHubRole::TwinContributor,
    ];

    /// The role's name in Azure (`IoT Hub Data Reader`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::DataReader => "IoT Hub Data Reader",
            Self::DataContributor => "IoT Hub Data Contributor",
            Self::RegistryContributor => "IoT Hub Registry Contributor",
            Self::TwinContributor => "IoT Hub Twin Contributor",
        }
    }

    /// The `dataActions` of the role's definition in Azure.
    pub fn data_actions(self) -> &'static [&'static str] {
        match self {
            Self::DataReader => &[
                "Microsoft.Devices/IotHubs/*/read",
                "Microsoft.Devices/IotHubs/fileUpload/notifications/action",
            ],
            Self::DataContributor => &["Microsoft.Devices/IotHubs/*"],
            Self::RegistryContributor => &["Microsoft.Devices/IotHubs/devices/*"],
            Self::TwinContributor => &["Microsoft.Devices/IotHubs/twins/*"],
        }
    }
}

impl fmt::Display for IotHubRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A role name that is not one of IoT Hub's built-in roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a built-in IoT Hub role: {0:?} (expected one of: IoT Hub Data Reader, IoT Hub Data Contributor, IoT Hub Registry Contributor, IoT Hub Twin Contributor)"
)]
pub struct UnknownRole(pub String);

impl FromStr for IotHubRole {
    type Err = UnknownRole;

    /// By Azure name, ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Azure's action wildcard: `*` matches any run of characters (slashes included), the rest
/// compares without regard to ASCII case. Linear in the lengths, whatever the pattern.
fn wildcard_match(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.as_bytes(), action.as_bytes());
    let (mut pi, mut ai) = (0, 0);
    // The position after the last `*` and where in `action` it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ai < a.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ai));
                pi += 1;
            }
            Some(c) if c.eq_ignore_ascii_case(&a[ai]) => {
                pi += 1;
                ai += 1;
            }
            _ => match star {
                Some((after, from)) => {
                    pi = after;
                    ai = from + 1;
                    star = Some((after, from + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions_of(role: IotHubRole) -> Vec<Action> {
        let set = Actions::from_patterns(role.data_actions().iter().copied());
        Action::ALL
            .into_iter()
            .filter(|a| set.contains(*a))
            .collect()
    }

    #[test]
    fn wildcards_match_as_azure_does() {
        use Action::*;
        assert!(wildcard_match("*", DevicesRead.as_str()));
        assert!(wildcard_match(
            "microsoft.devices/iothubs/devices/READ",
            DevicesRead.as_str()
        ));
        assert!(wildcard_match(
            "Microsoft.Devices/IotHubs/*/read",
            StatisticsRead.as_str()
        ));
        assert!(!wildcard_match(
            "Microsoft.Devices/IotHubs/*/read",
            C2dSend.as_str()
        ));
        assert!(!wildcard_match(
            "Microsoft.Devices/IotHubs/devices/read",
            "Microsoft.Devices/IotHubs/devices/readx"
        ));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("a*b*c", "aXbYbZ"));
        assert!(!wildcard_match("", "a"));
        assert!(wildcard_match("**", ""));
    }

    #[test]
    fn built_in_roles_grant_what_their_definitions_say() {
        use Action::*;
        assert_eq!(
            actions_of(IotHubRole::DataReader),
            [
                DevicesRead,
                TwinsRead,
                FileNotifications,
                StatisticsRead,
                ConfigurationsRead,
                JobsRead
            ]
        );
        assert_eq!(actions_of(IotHubRole::DataContributor), Action::ALL);
        assert_eq!(
            actions_of(IotHubRole::RegistryContributor),
            [DevicesRead, DevicesWrite, DevicesDelete]
        );
        assert_eq!(
            actions_of(IotHubRole::TwinContributor),
            [TwinsRead, TwinsWrite]
        );
    }

    #[test]
    fn roles_by_name_in_toml_and_text() {
        #[derive(Deserialize)]
        struct T {
            roles: Vec<IotHubRole>,
        }
        let t: T = toml::from_str(r#"roles = ["IoT Hub Data Reader", "IoT Hub Twin Contributor"]"#)
            .unwrap();
        assert_eq!(
            t.roles,
            [IotHubRole::DataReader, IotHubRole::TwinContributor]
        );
        assert!(toml::from_str::<T>(r#"roles = ["Owner"]"#).is_err());
        for role in IotHubRole::ALL {
            assert_eq!(role.name().parse::<IotHubRole>(), Ok(role));
            assert_eq!(role.to_string(), role.name());
        }
        assert_eq!(
            "iot hub data contributor".parse::<IotHubRole>(),
            Ok(IotHubRole::DataContributor)
        );
        assert!("Contributor".parse::<IotHubRole>().is_err());
    }

    #[test]
    fn custom_patterns_and_unions() {
        let send = Actions::from_patterns(["Microsoft.Devices/IotHubs/cloudToDeviceMessages/*"]);
        assert!(send.contains(Action::C2dSend) && send.contains(Action::C2dPurge));
        assert!(!send.contains(Action::DevicesRead));
        let both = send.union(Actions::from_patterns(["*/devices/read"]));
        assert!(both.contains(Action::DevicesRead) && both.contains(Action::C2dFeedback));
        assert_eq!(Actions::from_patterns([]), Actions::default());
    }
}

//! Routing: the [`Route`] of each service operation with its decoded ids, the permissions
//! (shared access permissions, and Azure RBAC data actions for Entra principals) and
//! throttling class of each, the api-versions answered, and [`handle`], which runs an
//! operation by calling its resource's handler module.

use hyper::Method;

use super::answer::Answer;
use super::errors::ServiceError;
use super::request::Req;
use super::{
    commands, configurations, devices, digital_twins, feedback, jobs, methods, modules, query,
    statistics, twins,
};
use crate::auth::Permission;
use crate::entra::Action;
use crate::faults::OpClass;
use crate::hub::Shared;
use crate::jobs::check_job_id;
use crate::state::configurations::check_configuration_id;
use crate::state::identity::{check_device_id, check_module_id};

/// api-versions the emulator answers; others get 400 InvalidProtocolVersion.
pub(crate) const API_VERSIONS: &[&str] = &[
    "2018-06-30",
    "2019-03-30",
    "2019-10-01",
    "2020-03-13",
    "2020-09-30",
    "2021-04-12",
];

/// A service operation, with its decoded ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    ListDevices,
    Bulk,
    Query,
    GetDevice(String),
    PutDevice(String),
    DeleteDevice(String),
    ListModules(String),
    GetModule(String, String),
    PutModule(String, String),
    DeleteModule(String, String),
    Purge(String),
    GetTwin(String, Option<String>),
    UpdateTwin(String, Option<String>, bool),
    Invoke(String, Option<String>),
    DeviceStats,
    ServiceStats,
    ListConfigurations,
    GetConfiguration(String),
    PutConfiguration(String),
    DeleteConfiguration(String),
    TestQueries,
    ApplyContent(String),
    ReceiveFeedback,
    CompleteFeedback(String),
    AbandonFeedback(String),
    CreateImportExportJob,
    ListImportExportJobs,
    GetImportExportJob(String),
    CancelImportExportJob(String),
    CreateScheduledJob(String),
    GetScheduledJob(String),
    CancelScheduledJob(String),
    QueryScheduledJobs,
    GetDigitalTwin(String),
    UpdateDigitalTwin(String),
    /// A command: device, component (none at the root), command name.
    InvokeCommand(String, Option<String>, String),
}

impl Route {
    /// Matches a request line; ids are checked here so that handlers see valid ones.
    pub(crate) fn parse(method: &Method, segs: &[String]) -> Result<Self, ServiceError> {
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = method.as_str();
        let id = |i: usize| -> Result<String, ServiceError> {
            check_device_id(s[i])?;
            Ok(s[i].to_owned())
        };
        let mid = |i: usize| -> Result<String, ServiceError> {
            check_module_id(s[i])?;
            Ok(s[i].to_owned())
        };
        if let Some(e) = not_emulated(&s) {
            return Err(e);
        }
        let cid = |i: usize| -> Result<String, ServiceError> {
            check_configuration_id(s[i])?;
            Ok(s[i].to_owned())
        };
        // Feedback paths in any case: the AMQP address is lowercase, the REST path camelCase.
        let is = |i: usize, word: &str| s.get(i).is_some_and(|w| w.eq_ignore_ascii_case(word));
        if is(0, "messages") && is(1, "serviceBound") && is(2, "feedback") {
            return match (m, &s[3..]) {
                ("GET", []) => Ok(Self::ReceiveFeedback),
                ("DELETE", [token]) => Ok(Self::CompleteFeedback((*token).to_owned())),
                ("POST", [token, abandon]) if abandon.eq_ignore_ascii_case("abandon") => {
                    Ok(Self::AbandonFeedback((*token).to_owned()))
                }
                (_, [] | [_]) | (_, [_, "abandon"]) => Err(ServiceError::method_not_allowed(
                    format!("The requested resource does not support http method '{m}'."),
                )),
                _ => Err(ServiceError::not_found(
                    "The requested resource does not exist on this hub.",
                )),
            };
        }
        let jid = |i: usize| -> Result<String, ServiceError> {
            check_job_id(s[i])?;
            Ok(s[i].to_owned())
        };
        let route = match (m, s.as_slice()) {
            ("POST", ["jobs", "create"]) => Self::CreateImportExportJob,
            ("GET", ["jobs"]) => Self::ListImportExportJobs,
            ("GET", ["jobs", "v2", "query"]) => Self::QueryScheduledJobs,
            ("PUT", ["jobs", "v2", _]) => Self::CreateScheduledJob(jid(2)?),
            ("GET", ["jobs", "v2", _]) => Self::GetScheduledJob(jid(2)?),
            ("POST", ["jobs", "v2", _, "cancel"]) => Self::CancelScheduledJob(jid(2)?),
            ("GET", ["jobs", _]) => Self::GetImportExportJob(jid(1)?),
            ("DELETE", ["jobs", _]) => Self::CancelImportExportJob(jid(1)?),
            ("GET", ["devices"]) => Self::ListDevices,
            ("POST", ["devices"]) => Self::Bulk,
            ("POST", ["devices", "query"]) => Self::Query,
            ("GET", ["devices", _]) => Self::GetDevice(id(1)?),
            ("PUT", ["devices", _]) => Self::PutDevice(id(1)?),
            ("DELETE", ["devices", _]) => Self::DeleteDevice(id(1)?),
            ("GET", ["devices", _, "modules"]) => Self::ListModules(id(1)?),
            ("GET", ["devices", _, "modules", _]) => Self::GetModule(id(1)?, mid(3)?),
            ("PUT", ["devices", _, "modules", _]) => Self::PutModule(id(1)?, mid(3)?),
            ("DELETE", ["devices", _, "modules", _]) => Self::DeleteModule(id(1)?, mid(3)?),
            ("DELETE", ["devices", _, "commands"]) => Self::Purge(id(1)?),
            ("GET", ["twins", _]) => Self::GetTwin(id(1)?, None),
            ("PATCH", ["twins", _]) => Self::UpdateTwin(id(1)?, None, false),
            ("PUT", ["twins", _]) => Self::UpdateTwin(id(1)?, None, true),
            ("GET", ["twins", _, "modules", _]) => Self::GetTwin(id(1)?, Some(mid(3)?)),
            ("PATCH", ["twins", _, "modules", _]) => Self::UpdateTwin(id(1)?, Some(mid(3)?), false),
            ("PUT", ["twins", _, "modules", _]) => Self::UpdateTwin(id(1)?, Some(mid(3)?), true),
            ("POST", ["twins", _, "methods"]) => Self::Invoke(id(1)?, None),
            ("POST", ["twins", _, "modules", _, "methods"]) => Self::Invoke(id(1)?, Some(mid(3)?)),
            ("GET", ["statistics", "devices"]) => Self::DeviceStats,
            ("GET", ["statistics", "service"]) => Self::ServiceStats,
            ("GET", ["configurations"]) => Self::ListConfigurations,
            ("POST", ["configurations", "testQueries"]) => Self::TestQueries,
            (_, ["configurations", "testQueries"]) => {
                return Err(ServiceError::method_not_allowed(format!(
                    "The requested resource does not support http method '{m}'."
                )));
            }
            ("GET", ["configurations", _]) => Self::GetConfiguration(cid(1)?),
            ("PUT", ["configurations", _]) => Self::PutConfiguration(cid(1)?),
            ("DELETE", ["configurations", _]) => Self::DeleteConfiguration(cid(1)?),
            ("POST", ["devices", _, "applyConfigurationContent"]) => Self::ApplyContent(id(1)?),
            ("GET", ["digitaltwins", _]) => Self::GetDigitalTwin(id(1)?),
            ("PATCH", ["digitaltwins", _]) => Self::UpdateDigitalTwin(id(1)?),
            ("POST", ["digitaltwins", _, "commands", name]) if !name.is_empty() => {
                Self::InvokeCommand(id(1)?, None, (*name).to_owned())
            }
            ("POST", ["digitaltwins", _, "components", component, "commands", name])
                if !name.is_empty() && !component.is_empty() =>
            {
                Self::InvokeCommand(id(1)?, Some((*component).to_owned()), (*name).to_owned())
            }
            (
                _,
                ["devices"]
                | ["devices", "query"]
                | ["devices", _]
                | ["devices", _, "modules"]
                | ["devices", _, "modules", _]
                | ["devices", _, "commands"]
                | ["twins", _]
                | ["twins", _, "modules", _]
                | ["twins", _, "methods"]
                | ["twins", _, "modules", _, "methods"]
                | ["statistics", "devices" | "service"]
                | ["configurations"]
                | ["configurations", _]
                | ["devices", _, "applyConfigurationContent"]
                | ["digitaltwins", _]
                | ["digitaltwins", _, "commands", _]
                | ["digitaltwins", _, "components", _, "commands", _]
                | ["jobs"]
                | ["jobs", _]
                | ["jobs", "v2", _]
                | ["jobs", "v2", _, "cancel"],
            ) => {
                return Err(ServiceError::method_not_allowed(format!(
                    "The requested resource does not support http method '{m}'."
                )));
            }
            _ => {
                return Err(ServiceError::not_found(
                    "The requested resource does not exist on this hub.",
                ));
            }
        };
        Ok(route)
    }

    /// The permissions that allow this operation (any one of them).
    pub(crate) fn permissions(&self) -> &'static [Permission] {
        use Permission::{RegistryRead, RegistryWrite, ServiceConnect};
        match self {
            Self::ListDevices
            | Self::GetDevice(_)
            | Self::ListModules(_)
            | Self::GetModule(..)
            | Self::DeviceStats
            | Self::ListConfigurations
            | Self::GetConfiguration(_)
            | Self::TestQueries
            | Self::ListImportExportJobs
            | Self::GetImportExportJob(_) => &[RegistryRead],
            Self::Bulk
            | Self::PutDevice(_)
            | Self::DeleteDevice(_)
            | Self::PutModule(..)
            | Self::DeleteModule(..)
            | Self::PutConfiguration(_)
            | Self::DeleteConfiguration(_)
            | Self::ApplyContent(_)
            | Self::CreateImportExportJob
            | Self::CancelImportExportJob(_) => &[RegistryWrite],
            Self::Query
            | Self::GetTwin(..)
            | Self::GetDigitalTwin(_)
            | Self::GetScheduledJob(_)
            | Self::QueryScheduledJobs => &[RegistryRead, ServiceConnect],
            Self::UpdateTwin(..)
            | Self::UpdateDigitalTwin(_)
            | Self::CreateScheduledJob(_)
            | Self::CancelScheduledJob(_) => &[RegistryWrite, ServiceConnect],
            Self::Invoke(..)
            | Self::InvokeCommand(..)
            | Self::Purge(_)
            | Self::ServiceStats
            | Self::ReceiveFeedback
            | Self::CompleteFeedback(_)
            | Self::AbandonFeedback(_) => &[ServiceConnect],
        }
    }

    /// The data actions an Entra principal needs for this operation (all of them), from
    /// "Control access to IoT Hub by using Microsoft Entra ID"
    /// (<https://learn.microsoft.com/azure/iot-hub/authenticate-authorize-azure-ad>): bulk
    /// registry updates need both devices/write and devices/delete, and queries twins/read.
    pub(crate) fn data_actions(&self) -> &'static [Action] {
        use Action::*;
        match self {
            Self::ListDevices | Self::GetDevice(_) | Self::ListModules(_) | Self::GetModule(..) => {
                &[DevicesRead]
            }
            Self::PutDevice(_) | Self::PutModule(..) => &[DevicesWrite],
            Self::DeleteDevice(_) | Self::DeleteModule(..) => &[DevicesDelete],
            Self::Bulk => &[DevicesWrite, DevicesDelete],
            // The data-action list has no digital-twin actions: a digital twin is its device
            // twin, and a command a direct method.
            Self::Query | Self::GetTwin(..) | Self::GetDigitalTwin(_) => &[TwinsRead],
            Self::UpdateTwin(..) | Self::UpdateDigitalTwin(_) => &[TwinsWrite],
            Self::Invoke(..) | Self::InvokeCommand(..) => &[MethodsInvoke],
            Self::Purge(_) => &[C2dPurge],
            Self::DeviceStats | Self::ServiceStats => &[StatisticsRead],
            Self::ListConfigurations | Self::GetConfiguration(_) => &[ConfigurationsRead],
            Self::PutConfiguration(_) => &[ConfigurationsWrite],
            Self::DeleteConfiguration(_) => &[ConfigurationsDelete],
            Self::TestQueries => &[ConfigurationsTestQueries],
            Self::ApplyContent(_) => &[ConfigurationsApplyToEdgeDevice],
            Self::ReceiveFeedback | Self::CompleteFeedback(_) | Self::AbandonFeedback(_) => {
                &[C2dFeedback]
            }
            Self::ListImportExportJobs
            | Self::GetImportExportJob(_)
            | Self::GetScheduledJob(_)
            | Self::QueryScheduledJobs => &[JobsRead],
            Self::CreateImportExportJob
            | Self::CreateScheduledJob(_)
            | Self::CancelScheduledJob(_) => &[JobsWrite],
            Self::CancelImportExportJob(_) => &[JobsDelete],
        }
    }

    /// The throttling class.
    pub(crate) fn class(&self) -> OpClass {
        match self {
            Self::ListDevices
            | Self::Bulk
            | Self::GetDevice(_)
            | Self::PutDevice(_)
            | Self::DeleteDevice(_)
            | Self::ListModules(_)
            | Self::GetModule(..)
            | Self::PutModule(..)
            | Self::DeleteModule(..) => OpClass::Registry,
            Self::Query => OpClass::Query,
            Self::GetTwin(..) | Self::GetDigitalTwin(_) => OpClass::TwinRead,
            Self::UpdateTwin(..) | Self::UpdateDigitalTwin(_) => OpClass::TwinUpdate,
            Self::Invoke(..) | Self::InvokeCommand(..) => OpClass::Method,
            Self::ListConfigurations
            | Self::GetConfiguration(_)
            | Self::PutConfiguration(_)
            | Self::DeleteConfiguration(_)
            | Self::TestQueries
            | Self::ApplyContent(_) => OpClass::Configurations,
            Self::CreateImportExportJob
            | Self::ListImportExportJobs
            | Self::GetImportExportJob(_)
            | Self::CancelImportExportJob(_)
            | Self::CreateScheduledJob(_)
            | Self::GetScheduledJob(_)
            | Self::CancelScheduledJob(_)
            | Self::QueryScheduledJobs => OpClass::Jobs,
            Self::Purge(_)
            | Self::DeviceStats
            | Self::ServiceStats
            | Self::ReceiveFeedback
            | Self::CompleteFeedback(_)
            | Self::AbandonFeedback(_) => OpClass::Other,
        }
    }
}

/// For a path of a service feature the emulator does not emulate (whatever the method), the
/// 404 that says so. The service would serve these; a 404 (rather than, say, 501, which no SDK
/// expects) keeps every SDK's reading of it "not found, do not retry", and the message names
/// the feature.
fn not_emulated(s: &[&str]) -> Option<ServiceError> {
    let is = |i: usize, word: &str| s.get(i).is_some_and(|w| w.eq_ignore_ascii_case(word));
    let message = if is(0, "devices")
        && s.len() >= 3
        && (is(2, "messages")
            || is(2, "files")
            || (s.len() >= 5 && is(2, "modules") && is(4, "messages")))
    {
        "The device-facing HTTPS API (telemetry, cloud-to-device receive, file upload) is not \
         emulated by iothub-emulator; emulate devices through its control API (/_emulator/)"
    } else {
        return None;
    };
    Some(ServiceError::not_emulated(message))
}

/// Runs one operation.
pub(crate) async fn handle(
    shared: &Shared,
    route: Route,
    req: &Req,
) -> Result<Answer, ServiceError> {
    match route {
        Route::ListDevices => devices::list_devices(shared, req),
        Route::GetDevice(id) => devices::get_device(shared, id),
        Route::PutDevice(id) => devices::put_device(shared, id, req),
        Route::DeleteDevice(id) => devices::delete_device(shared, id, req),
        Route::ListModules(id) => modules::list_modules(shared, id),
        Route::GetModule(id, mid) => modules::get_module(shared, id, mid),
        Route::PutModule(id, mid) => modules::put_module(shared, id, mid, req),
        Route::DeleteModule(id, mid) => modules::delete_module(shared, id, mid, req),
        Route::Purge(id) => commands::purge(shared, id),
        Route::GetTwin(id, mid) => twins::get_twin(shared, id, mid),
        Route::UpdateTwin(id, mid, replace) => twins::update_twin(shared, id, mid, replace, req),
        Route::Bulk => devices::bulk(shared, req),
        Route::Query => query::query(shared, req),
        Route::Invoke(id, mid) => methods::invoke(shared, &id, mid.as_deref(), req).await,
        Route::DeviceStats => statistics::device_stats(shared),
        Route::ServiceStats => statistics::service_stats(shared),
        Route::ListConfigurations => configurations::list_configurations(shared, req),
        Route::GetConfiguration(id) => configurations::get_configuration(shared, &id),
        Route::PutConfiguration(id) => configurations::put_configuration(shared, &id, req),
        Route::DeleteConfiguration(id) => configurations::delete_configuration(shared, &id, req),
        Route::TestQueries => configurations::test_queries(req),
        Route::ApplyContent(id) => configurations::apply_content(shared, &id, req),
        Route::ReceiveFeedback => Ok(feedback::receive(shared)),
        Route::CompleteFeedback(token) => feedback::complete(shared, &token),
        Route::AbandonFeedback(token) => feedback::abandon(shared, &token),
        Route::CreateImportExportJob => jobs::create_import_export(shared, req),
        Route::ListImportExportJobs => Ok(jobs::list_import_export(shared)),
        Route::GetImportExportJob(id) => jobs::get_import_export(shared, &id),
        Route::CancelImportExportJob(id) => jobs::cancel_import_export(shared, &id),
        Route::CreateScheduledJob(id) => jobs::create_scheduled(shared, &id, req),
        Route::GetScheduledJob(id) => jobs::get_scheduled(shared, &id),
        Route::CancelScheduledJob(id) => jobs::cancel_scheduled(shared, &id),
        Route::QueryScheduledJobs => jobs::query_scheduled(shared, req),
        Route::GetDigitalTwin(id) => digital_twins::get(shared, &id),
        Route::UpdateDigitalTwin(id) => digital_twins::update(shared, &id, req),
        Route::InvokeCommand(id, component, name) => {
            digital_twins::invoke(shared, &id, component.as_deref(), &name, req).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        path.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn routes_and_permissions() {
        let r = Route::parse(&Method::GET, &segs("devices/d1")).unwrap();
        assert_eq!(r, Route::GetDevice("d1".into()));
        assert_eq!(r.permissions(), &[Permission::RegistryRead]);
        assert_eq!(r.data_actions(), &[Action::DevicesRead]);
        let r = Route::parse(&Method::POST, &segs("devices/query")).unwrap();
        assert_eq!(r, Route::Query);
        assert_eq!(r.data_actions(), &[Action::TwinsRead]);
        let r = Route::parse(&Method::POST, &segs("devices")).unwrap();
        assert_eq!(
            r.data_actions(),
            &[Action::DevicesWrite, Action::DevicesDelete]
        );
        let r = Route::parse(&Method::PUT, &segs("twins/d")).unwrap();
        assert_eq!(r.data_actions(), &[Action::TwinsWrite]);
        let r = Route::parse(&Method::DELETE, &segs("devices/d/commands")).unwrap();
        assert_eq!(r.data_actions(), &[Action::C2dPurge]);
        let r = Route::parse(&Method::GET, &segs("digitaltwins/d")).unwrap();
        assert_eq!(r, Route::GetDigitalTwin("d".into()));
        assert_eq!(r.data_actions(), &[Action::TwinsRead]);
        assert_eq!(r.class(), OpClass::TwinRead);
        let r = Route::parse(&Method::PATCH, &segs("digitaltwins/d")).unwrap();
        assert_eq!(
            r.permissions(),
            &[Permission::RegistryWrite, Permission::ServiceConnect]
        );
        assert_eq!(r.data_actions(), &[Action::TwinsWrite]);
        let r = Route::parse(
            &Method::POST,
            &segs("digitaltwins/d/components/c/commands/x"),
        )
        .unwrap();
        assert_eq!(
            r,
            Route::InvokeCommand("d".into(), Some("c".into()), "x".into())
        );
        assert_eq!(r.permissions(), &[Permission::ServiceConnect]);
        assert_eq!(r.data_actions(), &[Action::MethodsInvoke]);
        assert_eq!(r.class(), OpClass::Method);
        let e = Route::parse(&Method::PUT, &segs("digitaltwins/d")).unwrap_err();
        assert_eq!(e.status, 405);
        // A device may be called "query": only POST is the query operation.
        assert_eq!(
            Route::parse(&Method::GET, &segs("devices/query")).unwrap(),
            Route::GetDevice("query".into())
        );
        assert_eq!(
            Route::parse(&Method::PATCH, &segs("twins/d/modules/$edgeAgent")).unwrap(),
            Route::UpdateTwin("d".into(), Some("$edgeAgent".into()), false)
        );
        let e = Route::parse(&Method::POST, &segs("devices/d1")).unwrap_err();
        assert_eq!(e.status, 405);
        let e = Route::parse(&Method::GET, &segs("nope")).unwrap_err();
        assert_eq!(e.status, 404);
        let e = Route::parse(&Method::GET, &segs("devices/a b")).unwrap_err();
        assert_eq!(e.status, 400);
        for (method, path) in [
            (Method::POST, "devices/d/messages/events"),
            (Method::POST, "devices/d/modules/m/messages/events"),
            (Method::POST, "devices/d/files"),
        ] {
            let e = Route::parse(&method, &segs(path)).unwrap_err();
            assert_eq!((e.status, e.name), (404, "GenericNotFound"), "{path}");
            assert!(e.message.contains("not emulated"), "{path}: {}", e.message);
        }
        // Configurations and feedback over HTTP are emulated.
        for (method, path, route, permission, action) in [
            (
                Method::GET,
                "configurations",
                Route::ListConfigurations,
                Permission::RegistryRead,
                Action::ConfigurationsRead,
            ),
            (
                Method::GET,
                "configurations/c1",
                Route::GetConfiguration("c1".into()),
                Permission::RegistryRead,
                Action::ConfigurationsRead,
            ),
            (
                Method::PUT,
                "configurations/c1",
                Route::PutConfiguration("c1".into()),
                Permission::RegistryWrite,
                Action::ConfigurationsWrite,
            ),
            (
                Method::DELETE,
                "configurations/c1",
                Route::DeleteConfiguration("c1".into()),
                Permission::RegistryWrite,
                Action::ConfigurationsDelete,
            ),
            (
                Method::POST,
                "configurations/testQueries",
                Route::TestQueries,
                Permission::RegistryRead,
                Action::ConfigurationsTestQueries,
            ),
            (
                Method::POST,
                "devices/d/applyConfigurationContent",
                Route::ApplyContent("d".into()),
                Permission::RegistryWrite,
                Action::ConfigurationsApplyToEdgeDevice,
            ),
            (
                Method::GET,
                "messages/serviceBound/feedback",
                Route::ReceiveFeedback,
                Permission::ServiceConnect,
                Action::C2dFeedback,
            ),
            (
                Method::DELETE,
                "messages/serviceBound/feedback/t1",
                Route::CompleteFeedback("t1".into()),
                Permission::ServiceConnect,
                Action::C2dFeedback,
            ),
            (
                Method::POST,
                "messages/servicebound/feedback/t1/abandon",
                Route::AbandonFeedback("t1".into()),
                Permission::ServiceConnect,
                Action::C2dFeedback,
            ),
        ] {
            let r = Route::parse(&method, &segs(path)).unwrap();
            assert_eq!(r, route, "{path}");
            assert_eq!(r.permissions(), &[permission], "{path}");
            assert_eq!(r.data_actions(), &[action], "{path}");
        }
        assert_eq!(
            Route::parse(&Method::GET, &segs("configurations/c1"))
                .unwrap()
                .class(),
            OpClass::Configurations
        );
        // Jobs are emulated: import/export (v1) and scheduled (v2).
        for (method, path, route, permissions, action) in [
            (
                Method::POST,
                "jobs/create",
                Route::CreateImportExportJob,
                &[Permission::RegistryWrite][..],
                Action::JobsWrite,
            ),
            (
                Method::GET,
                "jobs",
                Route::ListImportExportJobs,
                &[Permission::RegistryRead][..],
                Action::JobsRead,
            ),
            (
                Method::GET,
                "jobs/j1",
                Route::GetImportExportJob("j1".into()),
                &[Permission::RegistryRead][..],
                Action::JobsRead,
            ),
            (
                Method::DELETE,
                "jobs/j1",
                Route::CancelImportExportJob("j1".into()),
                &[Permission::RegistryWrite][..],
                Action::JobsDelete,
            ),
            (
                Method::PUT,
                "jobs/v2/j",
                Route::CreateScheduledJob("j".into()),
                &[Permission::RegistryWrite, Permission::ServiceConnect][..],
                Action::JobsWrite,
            ),
            (
                Method::GET,
                "jobs/v2/j",
                Route::GetScheduledJob("j".into()),
                &[Permission::RegistryRead, Permission::ServiceConnect][..],
                Action::JobsRead,
            ),
            (
                Method::POST,
                "jobs/v2/j/cancel",
                Route::CancelScheduledJob("j".into()),
                &[Permission::RegistryWrite, Permission::ServiceConnect][..],
                Action::JobsWrite,
            ),
            (
                Method::GET,
                "jobs/v2/query",
                Route::QueryScheduledJobs,
                &[Permission::RegistryRead, Permission::ServiceConnect][..],
                Action::JobsRead,
            ),
        ] {
            let r = Route::parse(&method, &segs(path)).unwrap();
            assert_eq!(r, route, "{path}");
            assert_eq!(r.permissions(), permissions, "{path}");
            assert_eq!(r.data_actions(), &[action], "{path}");
            assert_eq!(r.class(), OpClass::Jobs, "{path}");
        }
        let e = Route::parse(&Method::PATCH, &segs("jobs/v2/j")).unwrap_err();
        assert_eq!(e.status, 405);
        let e = Route::parse(&Method::GET, &segs("jobs/a b")).unwrap_err();
        assert_eq!(e.status, 400);
        // Configuration ids follow their own rule; other methods are 405.
        let e = Route::parse(&Method::GET, &segs("configurations/Upper")).unwrap_err();
        assert_eq!(e.status, 400);
        let e = Route::parse(&Method::PATCH, &segs("configurations/c1")).unwrap_err();
        assert_eq!(e.status, 405);
        let e = Route::parse(&Method::GET, &segs("configurations/testQueries")).unwrap_err();
        assert_eq!(e.status, 405);
        let e = Route::parse(&Method::PUT, &segs("messages/serviceBound/feedback")).unwrap_err();
        assert_eq!(e.status, 405);
        // Routes that are emulated stay routes.
        assert_eq!(
            Route::parse(&Method::GET, &segs("devices/messages")).unwrap(),
            Route::GetDevice("messages".into())
        );
        assert_eq!(
            Route::parse(&Method::GET, &segs("devices/d/modules/messages")).unwrap(),
            Route::GetModule("d".into(), "messages".into())
        );
    }
}

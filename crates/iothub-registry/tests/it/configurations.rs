//! Configurations and HTTP feedback against mock servers: the service's refusals as typed
//! errors (404, 409, 412 with their IoT Hub codes), arguments refused before any request, and
//! answers the emulator would never give.

use iothub_registry::feedback::LockToken;
use iothub_registry::models::{
    Configuration, ConfigurationContent, ConfigurationQueriesTestInput, ErrorCode,
};
use iothub_registry::{ConfigurationBuilder, Error, IfMatch, RegistryManager};
use iothub_test_support::credentials::{SERVICE_KEY as KEY, credential};
use iothub_test_support::wire::{fast_retries, registry_builder};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn manager(server: &MockServer) -> RegistryManager {
    let address = server.address();
    registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(fast_retries())
        .build()
        .unwrap()
}

/// An error answer as the service writes it: status, `iothub-errorcode` and a shape-A body.
fn refusal(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("iothub-errorcode", code)
        .set_body_json(json!({
            "Message": format!("ErrorCode:{code};refused"),
            "ExceptionMessage": "Tracking ID:0f1e2d3c4b5a-G:0-TimeStamp:12/07/2026 23:00:00"
        }))
}

async fn answering(verb: &str, url: &str, answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method(verb))
        .and(path(url))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

fn configuration(id: &str) -> Configuration {
    ConfigurationBuilder::new(id)
        .target_condition("tags.floor = 3")
        .device_content("properties.desired.interval", 30)
        .build()
        .unwrap()
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn a_missing_configuration_is_a_typed_not_found() {
    let server = answering(
        "GET",
        "/configurations/gone",
        refusal(404, "ConfigurationNotFound"),
    )
    .await;
    let err = manager(&server)
        .configurations()
        .get_configuration("gone")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(err.code(), Some(&ErrorCode::ConfigurationNotFound));
    assert_eq!(err.service().unwrap().code_number(), Some(404301));
    assert!(err.service().unwrap().tracking_id().is_some());
    assert_eq!(requests(&server).await, 1, "a 404 is not retried");
}

#[tokio::test]
async fn creating_an_existing_configuration_is_a_conflict() {
    let server = answering(
        "PUT",
        "/configurations/taken",
        refusal(409, "ConfigurationAlreadyExists"),
    )
    .await;
    let err = manager(&server)
        .configurations()
        .create_configuration(configuration("taken"))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(err.code(), Some(&ErrorCode::ConfigurationAlreadyExists));
    assert_eq!(err.service().unwrap().code_number(), Some(409401));
    let sent = &server.received_requests().await.unwrap()[0];
    assert!(
        sent.headers.get("if-match").is_none(),
        "a create has no If-Match"
    );
}

#[tokio::test]
async fn a_stale_etag_fails_updates_and_deletes_with_412() {
    for verb in ["PUT", "DELETE"] {
        let server = answering(
            verb,
            "/configurations/c1",
            refusal(412, "PreconditionFailed"),
        )
        .await;
        let stale = IfMatch::from_current(Some("MQ==")).unwrap();
        let configurations = manager(&server).configurations();
        let err = match verb {
            "PUT" => configurations
                .update_configuration(configuration("c1"), stale)
                .await
                .unwrap_err(),
            _ => configurations
                .delete_configuration("c1", stale)
                .await
                .unwrap_err(),
        };
        assert!(err.is_precondition_failed(), "{verb}: {err:?}");
        assert_eq!(err.code(), Some(&ErrorCode::PreconditionFailed), "{verb}");
        let sent = &server.received_requests().await.unwrap()[0];
        assert_eq!(sent.headers["if-match"], "\"MQ==\"", "{verb}");
        assert_eq!(requests(&server).await, 1, "{verb}: a 412 is not retried");
    }
}

#[tokio::test]
async fn applying_to_a_device_that_is_not_there_or_not_edge_is_typed() {
    let content = ConfigurationBuilder::new("x")
        .edge_agent(json!({ "schemaVersion": "1.1" }))
        .edge_hub(json!({ "schemaVersion": "1.1" }))
        .build_content()
        .unwrap();
    let server = answering(
        "POST",
        "/devices/gone/applyConfigurationContent",
        refusal(404, "DeviceNotFound"),
    )
    .await;
    let err = manager(&server)
        .configurations()
        .apply_configuration_on_edge_device("gone", content.clone())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(err.code(), Some(&ErrorCode::DeviceNotFound));

    // The spec says 204; the C# SDK expects 200. Either is success.
    let server = answering(
        "POST",
        "/devices/edge-1/applyConfigurationContent",
        ResponseTemplate::new(200),
    )
    .await;
    manager(&server)
        .configurations()
        .apply_configuration_on_edge_device("edge-1", content)
        .await
        .unwrap();
}

#[tokio::test]
async fn settling_a_spent_lock_token_is_typed() {
    let token = LockToken::new("spent").unwrap();
    for (verb, url) in [
        ("DELETE", "/messages/serviceBound/feedback/spent"),
        ("POST", "/messages/serviceBound/feedback/spent/abandon"),
    ] {
        let server = answering(verb, url, refusal(412, "DeviceMessageLockLost")).await;
        let runtime = manager(&server).http_runtime();
        let err = match verb {
            "DELETE" => runtime.complete_feedback_notification(&token).await,
            _ => runtime.abandon_feedback_notification(&token).await,
        }
        .unwrap_err();
        assert!(err.is_precondition_failed(), "{verb}: {err:?}");
        assert_eq!(
            err.code(),
            Some(&ErrorCode::DeviceMessageLockLost),
            "{verb}"
        );
        assert_eq!(err.service().unwrap().code_number(), Some(412002), "{verb}");
        assert_eq!(requests(&server).await, 1, "{verb}: a 412 is not retried");
    }
}

#[tokio::test]
async fn a_feedback_batch_without_a_lock_token_is_a_protocol_error() {
    let server = answering(
        "GET",
        "/messages/serviceBound/feedback",
        ResponseTemplate::new(200).set_body_json(json!([{ "originalMessageId": "m" }])),
    )
    .await;
    let err = manager(&server)
        .http_runtime()
        .receive_feedback_notification()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol { status: 200, .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(200));
    assert_eq!(requests(&server).await, 1, "not retried");

    let server = answering(
        "GET",
        "/messages/serviceBound/feedback",
        ResponseTemplate::new(200)
            .insert_header("etag", "\"t\"")
            .set_body_raw(
                "not feedback",
                "application/vnd.microsoft.iothub.feedback.json",
            ),
    )
    .await;
    let err = manager(&server)
        .http_runtime()
        .receive_feedback_notification()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { status: 200, .. }), "{err:?}");
}

#[tokio::test]
async fn a_receive_whose_answer_was_lost_is_repeated() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let batch = manager(&server)
        .http_runtime()
        .receive_feedback_notification()
        .await
        .unwrap();
    assert!(batch.is_none());
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn bad_arguments_fail_before_any_request() {
    let server = MockServer::start().await;
    let configurations = manager(&server).configurations();
    let no_content = Configuration {
        content: None,
        ..configuration("c")
    };
    let device_content = ConfigurationContent {
        device_content: [("properties.desired.x".to_owned(), json!(1))]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let checks: Vec<(&str, Error)> = vec![
        (
            "configuration_id",
            configurations.get_configuration("a b").await.unwrap_err(),
        ),
        (
            "configuration_id",
            configurations
                .delete_configuration("", IfMatch::Any)
                .await
                .unwrap_err(),
        ),
        (
            "configuration_id",
            configurations
                .create_configuration(Configuration {
                    id: None,
                    ..configuration("c")
                })
                .await
                .unwrap_err(),
        ),
        (
            "configuration",
            configurations
                .create_configuration(no_content.clone())
                .await
                .unwrap_err(),
        ),
        (
            "configuration",
            configurations
                .update_configuration(no_content, IfMatch::Any)
                .await
                .unwrap_err(),
        ),
        (
            "configuration",
            configurations
                .create_configuration(Configuration {
                    priority: Some(-1),
                    ..configuration("c")
                })
                .await
                .unwrap_err(),
        ),
        (
            "top",
            configurations
                .get_configurations(Some(0))
                .await
                .unwrap_err(),
        ),
        (
            "top",
            configurations
                .get_configurations(Some(u32::MAX))
                .await
                .unwrap_err(),
        ),
        (
            "input",
            configurations
                .test_configuration_queries(ConfigurationQueriesTestInput::default())
                .await
                .unwrap_err(),
        ),
        (
            "input",
            configurations
                .test_configuration_queries(ConfigurationQueriesTestInput {
                    target_condition: None,
                    custom_metric_queries: [("m".to_owned(), " ".to_owned())].into(),
                })
                .await
                .unwrap_err(),
        ),
        (
            "device_id",
            configurations
                .apply_configuration_on_edge_device("a/b", ConfigurationContent::default())
                .await
                .unwrap_err(),
        ),
        (
            "content",
            configurations
                .apply_configuration_on_edge_device("edge-1", device_content)
                .await
                .unwrap_err(),
        ),
        (
            "content",
            configurations
                .apply_configuration_on_edge_device("edge-1", ConfigurationContent::default())
                .await
                .unwrap_err(),
        ),
        ("lock_token", LockToken::new("").unwrap_err()),
    ];
    for (argument, err) in checks {
        match &err {
            Error::InvalidArgument { argument: a, .. } => assert_eq!(*a, argument, "{err}"),
            other => panic!("expected InvalidArgument for {argument}, got {other:?}"),
        }
    }
    assert_eq!(requests(&server).await, 0);
}

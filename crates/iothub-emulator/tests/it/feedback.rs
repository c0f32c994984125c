//! Delivery feedback over HTTPS (`/messages/serviceBound/feedback`): receive with the lock
//! token in a quoted `ETag`, complete, abandon, lock expiry and the delivery count, on the
//! same records the AMQP feedback receiver takes from.

use std::time::Duration;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use iothub_emulator::Emulator;
use reqwest::Method;

use crate::amqp::{acked, authorized_sender, next_json, rejection};
use crate::hub::{Hub, Reply};

const FEEDBACK: &str = "/messages/serviceBound/feedback";

/// Sends `ids` to `dev1` asking for full feedback, and has the device complete each: one
/// Success record per message waits for the service.
async fn feedback_for(hub: &Hub, ids: &[&str]) {
    let (mut connection, _links, mut sender) = authorized_sender(hub).await;
    for id in ids {
        let outcome = sender.send(acked("dev1", b"x", id, "full")).await.unwrap();
        assert_eq!(rejection(&outcome), None);
        let received = hub.emu.receive_c2d("dev1", None).unwrap();
        assert!(hub.emu.complete_c2d(&received.lock_token));
    }
    connection.close().await.unwrap();
}

/// The lock token of a 200 receive, from its quoted `ETag`.
fn lock_token(r: &Reply) -> String {
    let etag = r.header("etag").expect("an ETag header");
    let token = etag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("a quoted ETag: {etag}"));
    assert!(!token.is_empty() && !token.contains('"'));
    token.to_owned()
}

fn message_ids(r: &Reply) -> Vec<String> {
    r.body
        .as_array()
        .unwrap_or_else(|| panic!("a JSON array: {}", r.raw))
        .iter()
        .map(|record| record["originalMessageId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn receive_then_complete_with_the_lock_token_of_the_etag() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let r = hub.call(Method::GET, FEEDBACK, None).await;
    assert_eq!((r.status, r.raw.as_str()), (204, ""));

    feedback_for(&hub, &["m1", "m2"]).await;
    assert_eq!(hub.emu.feedback_pending(), 2);
    let r = hub.call(Method::GET, FEEDBACK, None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.microsoft.iothub.feedback.json")
    );
    assert_eq!(message_ids(&r), ["m1", "m2"]);
    let record = &r.body[0];
    assert_eq!(record["statusCode"], "Success");
    assert_eq!(record["description"], "Success");
    assert_eq!(record["deviceId"], "dev1");
    assert!(record["enqueuedTimeUtc"].is_string());
    assert_eq!(r.header("iothub-deliverycount"), Some("1"));
    assert!(r.header("iothub-messageid").is_some_and(|m| !m.is_empty()));
    assert!(
        r.header("iothub-enqueuedtime")
            .is_some_and(|t| t.ends_with('Z'))
    );
    let token = lock_token(&r);
    // Locked: nothing more to receive, over HTTP or AMQP.
    assert_eq!(hub.emu.feedback_pending(), 0);
    let again = hub.call(Method::GET, FEEDBACK, None).await;
    assert_eq!(again.status, 204);

    // Complete with the token as the ETag carried it, quotes and all (percent-encoded).
    let r = hub
        .call(Method::DELETE, &format!("{FEEDBACK}/%22{token}%22"), None)
        .await;
    assert_eq!((r.status, r.raw.as_str()), (204, ""));
    // Settled: the token is spent, and nothing comes again.
    let r = hub
        .call(Method::DELETE, &format!("{FEEDBACK}/{token}"), None)
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "DeviceMessageLockLost")
    );
    let r = hub
        .call(Method::POST, &format!("{FEEDBACK}/{token}/abandon"), None)
        .await;
    assert_eq!(r.status, 412);
    let r = hub
        .call(Method::DELETE, &format!("{FEEDBACK}/never-issued"), None)
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "DeviceMessageLockLost")
    );
    assert_eq!(hub.call(Method::GET, FEEDBACK, None).await.status, 204);
    assert_eq!(hub.emu.feedback_pending(), 0);
}

#[tokio::test]
async fn abandoned_and_expired_locks_offer_the_batch_again_up_to_the_delivery_count() {
    let hub = Hub::with(
        Emulator::builder()
            .feedback_lock_duration(Duration::from_secs(1))
            .feedback_max_delivery_count(3),
    )
    .await;
    hub.create("dev1").await;
    feedback_for(&hub, &["m1"]).await;

    let first = hub.call(Method::GET, FEEDBACK, None).await;
    assert_eq!(first.status, 200, "{}", first.raw);
    let token = lock_token(&first);
    let r = hub
        .call(Method::POST, &format!("{FEEDBACK}/{token}/abandon"), None)
        .await;
    assert_eq!((r.status, r.raw.as_str()), (204, ""));

    // Offered again at once, with a new token and the delivery counted.
    let second = hub.call(Method::GET, FEEDBACK, None).await;
    assert_eq!(second.status, 200, "{}", second.raw);
    assert_eq!(message_ids(&second), ["m1"]);
    assert_eq!(second.header("iothub-deliverycount"), Some("2"));
    let second_token = lock_token(&second);
    assert_ne!(second_token, token);

    // Not settled within the lock: it comes back by itself, and the old token is lost.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = hub
        .call(Method::DELETE, &format!("{FEEDBACK}/{second_token}"), None)
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "DeviceMessageLockLost")
    );
    let third = hub.call(Method::GET, FEEDBACK, None).await;
    assert_eq!(third.status, 200, "{}", third.raw);
    assert_eq!(message_ids(&third), ["m1"]);
    assert_eq!(third.header("iothub-deliverycount"), Some("3"));

    // The third delivery was the last: abandoned, the record is dropped.
    let r = hub
        .call(
            Method::POST,
            &format!("{FEEDBACK}/{}/abandon", lock_token(&third)),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(hub.call(Method::GET, FEEDBACK, None).await.status, 204);
    assert_eq!(hub.emu.feedback_pending(), 0);
}

#[tokio::test]
async fn http_and_amqp_receivers_share_the_same_records() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    feedback_for(&hub, &["shared"]).await;

    // HTTP takes the batch: the AMQP receiver gets nothing while it is locked.
    let r = hub.call(Method::GET, FEEDBACK, None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let token = lock_token(&r);
    let (mut connection, (mut session, _cbs), _sender) = authorized_sender(&hub).await;
    let mut feedback = Receiver::attach(&mut session, "fb", "/messages/servicebound/feedback")
        .await
        .unwrap();
    let nothing =
        tokio::time::timeout(Duration::from_millis(500), feedback.recv::<Body<Value>>()).await;
    assert!(nothing.is_err(), "the AMQP receiver got a locked batch");

    // Abandoned over HTTP, it reaches the AMQP receiver, delivered a second time.
    let r = hub
        .call(Method::POST, &format!("{FEEDBACK}/{token}/abandon"), None)
        .await;
    assert_eq!(r.status, 204);
    let (delivery, batch) = next_json(&mut feedback).await;
    assert_eq!(batch[0]["originalMessageId"], "shared");
    feedback.accept(&delivery).await.unwrap();

    // Accepted over AMQP: gone for HTTP too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hub.call(Method::GET, FEEDBACK, None).await.status, 204);

    // And the other way: a batch the AMQP receiver releases is received over HTTP.
    feedback_for(&hub, &["back"]).await;
    let (delivery, batch) = next_json(&mut feedback).await;
    assert_eq!(batch[0]["originalMessageId"], "back");
    feedback.close().await.unwrap();
    drop(delivery);
    // The link closed with the batch unsettled: it goes back once the hub sees the detach.
    let mut r = hub.call(Method::GET, FEEDBACK, None).await;
    for _ in 0..50 {
        if r.status != 204 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = hub.call(Method::GET, FEEDBACK, None).await;
    }
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(message_ids(&r), ["back"]);
    assert_eq!(r.header("iothub-deliverycount"), Some("2"));
    connection.close().await.unwrap();
}

#[tokio::test]
async fn feedback_over_http_needs_service_connect() {
    let hub = Hub::start().await;
    let token = hub.token("registryReadWrite").await;
    let r = hub
        .raw(
            Method::GET,
            &hub.url(FEEDBACK),
            None,
            &[("authorization", token.as_str())],
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "IotHubUnauthorizedAccess")
    );
    let token = hub.token("service").await;
    let r = hub
        .raw(
            Method::GET,
            &hub.url(FEEDBACK),
            None,
            &[("authorization", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 204);
}

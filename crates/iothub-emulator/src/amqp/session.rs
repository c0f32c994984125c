//! One session: each link the client attaches is routed by its normalized address to the
//! task that serves it; unknown addresses are attached and at once closed with
//! `amqp:not-found`, as fe2o3 cannot refuse an attach.

use std::sync::Arc;

use fe2o3_amqp::acceptor::{
    LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SupportedReceiverSettleModes,
};
use fe2o3_amqp::types::definitions::{AmqpError, ReceiverSettleMode, Role};
use fe2o3_amqp::types::messaging::{Source, Target, TargetArchetype};
use fe2o3_amqp::types::performatives::Attach;
use tokio::task::JoinSet;

use super::address::{CBS, DEVICEBOUND, FEEDBACK, FILE_NOTIFICATIONS, normalize};
use super::cbs::{self, ReplyLinks};
use super::connection::ConnCtx;
use super::devicebound::{self, error};
use super::feedback::{self, Stream};

/// Largest message accepted on the hub's receiving links (the service's AMQP limit);
/// bodies over 64 KB are still rejected per message.
const MAX_MESSAGE_SIZE: u64 = 256 * 1024;

/// What a link is for, from its address and the client's role.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Devicebound,
    CbsRequests,
    CbsReplies(String),
    Outgoing(Stream),
    Unknown(String),
}

fn node(attach: &Attach) -> Node {
    match attach.role {
        // The client sends: route by target.
        Role::Sender => {
            let address = attach
                .target
                .as_deref()
                .and_then(|t| Target::try_from(t.clone()).ok())
                .and_then(|t| t.address)
                .map(|a| normalize(&a))
                .unwrap_or_default();
            match address.as_str() {
                DEVICEBOUND => Node::Devicebound,
                CBS => Node::CbsRequests,
                _ => Node::Unknown(address),
            }
        }
        // The client receives: route by source.
        Role::Receiver => {
            let address = attach
                .source
                .as_deref()
                .and_then(|s| s.address.as_deref())
                .map(normalize)
                .unwrap_or_default();
            match address.as_str() {
                FEEDBACK => Node::Outgoing(Stream::Feedback),
                FILE_NOTIFICATIONS => Node::Outgoing(Stream::FileNotifications),
                CBS => {
                    // Replies are addressed to the client's node, its target.
                    let own = attach
                        .target
                        .as_deref()
                        .and_then(|t| Target::try_from(t.clone()).ok())
                        .and_then(|t| t.address)
                        .map(|a| normalize(&a))
                        .unwrap_or_default();
                    Node::CbsReplies(own)
                }
                _ => Node::Unknown(address),
            }
        }
    }
}

/// fe2o3 refuses a sender whose peer gave no target and a receiver whose peer gave no
/// source; some clients leave out the terminus they do not care about.
fn fill_termini(attach: &mut Attach) {
    match attach.role {
        Role::Receiver if attach.target.is_none() => {
            attach.target = Some(Box::new(TargetArchetype::Target(Target::default())));
        }
        Role::Sender if attach.source.is_none() => {
            attach.source = Some(Box::new(Source::default()));
        }
        _ => {}
    }
}

/// Serves a session until the client ends it or the connection goes.
pub(crate) async fn serve(mut session: ListenerSessionHandle, ctx: Arc<ConnCtx>) {
    // uamqp asks for rcv-settle-mode second and then waits forever for a settled
    // disposition: the hub's receivers only settle first.
    let receiving = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .max_message_size(MAX_MESSAGE_SIZE)
        .verify_incoming_source(false)
        .verify_incoming_target(false)
        .build();
    let sending = LinkAcceptor::builder()
        .verify_incoming_source(false)
        .verify_incoming_target(false)
        .build();
    let replies = Arc::new(ReplyLinks::default());
    let mut links = JoinSet::new();
    loop {
        tokio::select! {
            attach = session.next_incoming_attach() => {
                let Some(mut attach) = attach else { break };
                // One link too many: the connection closes (with what it held).
                let Some(slot) = ctx.link_slot() else { break };
                let node = node(&attach);
                fill_termini(&mut attach);
                let acceptor = match attach.role {
                    Role::Sender => &receiving,
                    Role::Receiver => &sending,
                };
                let link = match acceptor.accept_incoming_attach(attach, &mut session).await {
                    Ok(link) => link,
                    Err(e) => {
                        tracing::debug!(error = %e, "AMQP attach failed");
                        continue;
                    }
                };
                tracing::debug!(?node, "AMQP link attached");
                let ctx = ctx.clone();
                let replies = replies.clone();
                // The slot goes when the link's task ends, however it ends.
                links.spawn(async move {
                    match (node, link) {
                        (Node::Devicebound, LinkEndpoint::Receiver(r)) => {
                            devicebound::serve(r, ctx).await;
                        }
                        (Node::CbsRequests, LinkEndpoint::Receiver(r)) => {
                            cbs::serve_requests(r, ctx, replies).await;
                        }
                        (Node::CbsReplies(own), LinkEndpoint::Sender(s)) => {
                            cbs::serve_replies(s, own, replies).await;
                        }
                        (Node::Outgoing(stream), LinkEndpoint::Sender(s)) => {
                            feedback::serve(s, ctx, stream).await;
                        }
                        (node, link) => {
                            let address = match node {
                                Node::Unknown(a) => a,
                                _ => String::new(),
                            };
                            refuse(link, address).await;
                        }
                    }
                    drop(slot);
                });
            }
            Some(_) = links.join_next(), if !links.is_empty() => {}
        }
    }
    // Dropping the set stops the links' tasks; what they had taken goes back.
    drop(links);
    let _ = session.end().await;
}

async fn refuse(link: LinkEndpoint, address: String) {
    let description = if address.starts_with("/devices/") {
        // A device's own link: events, cloud-to-device receive, methods, twin.
        format!(
            "The messaging entity '{address}' could not be found: device-facing AMQP is not \
             emulated by iothub-emulator"
        )
    } else {
        format!("The messaging entity '{address}' could not be found")
    };
    let e = error(AmqpError::NotFound, description);
    let _ = match link {
        LinkEndpoint::Sender(s) => s.close_with_error(e).await,
        LinkEndpoint::Receiver(r) => r.close_with_error(e).await,
    };
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::definitions::{Handle, SenderSettleMode};

    use super::*;

    fn attach(role: Role, source: Option<&str>, target: Option<&str>) -> Attach {
        Attach {
            name: "l".into(),
            handle: Handle(0),
            role,
            snd_settle_mode: SenderSettleMode::Unsettled,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: source.map(|a| Box::new(Source::builder().address(a).build())),
            target: target.map(|a| {
                Box::new(TargetArchetype::Target(
                    Target::builder().address(a).build(),
                ))
            }),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: Some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }
    }

    #[test]
    fn links_are_routed_by_normalized_address() {
        let send = |t: &str| node(&attach(Role::Sender, None, Some(t)));
        let recv = |s: &str, t: Option<&str>| node(&attach(Role::Receiver, Some(s), t));
        assert_eq!(
            send("amqps://h:5671/messages/deviceBound"),
            Node::Devicebound
        );
        assert_eq!(send("$cbs"), Node::CbsRequests);
        assert_eq!(
            send("/messages/events"),
            Node::Unknown("/messages/events".into())
        );
        assert_eq!(
            recv("/messages/serviceBound/feedback", Some("x")),
            Node::Outgoing(Stream::Feedback)
        );
        assert_eq!(
            recv("/messages/serviceBound/filenotifications", None),
            Node::Outgoing(Stream::FileNotifications)
        );
        assert_eq!(recv("$cbs", Some("Cbs")), Node::CbsReplies("cbs".into()));
        assert_eq!(recv("$cbs", None), Node::CbsReplies(String::new()));
        assert_eq!(
            recv("/messages/devicebound", None),
            Node::Unknown("/messages/devicebound".into())
        );
        assert_eq!(
            node(&attach(Role::Sender, None, None)),
            Node::Unknown(String::new())
        );
    }

    #[test]
    fn missing_termini_are_filled_in() {
        let mut a = attach(Role::Receiver, Some("$cbs"), None);
        fill_termini(&mut a);
        assert!(a.target.is_some());
        let mut a = attach(Role::Sender, None, Some("$cbs"));
        fill_termini(&mut a);
        assert!(a.source.is_some());
    }
}

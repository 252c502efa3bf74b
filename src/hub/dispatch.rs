//! What happens when a client sends a hub message: invocations run their configured built-in
//! action, and blocking invocations are answered with a Completion.
//!
//! The dispatcher knows connections and shards, never transports or encodings, so its rules
//! are tested at memory speed with connections whose queue stands in for the socket.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::config::Action;
use super::connection::Connection;
use super::definition::MethodDef;
use super::index::Target;
use super::node::Publish;
use super::outgoing::{Encoded, Outgoing};
use super::shard::Shard;
use crate::fault::CloseReason;
use crate::protocol::{Completion, HubMessage, Value};

/// Longest group name, as in Azure SignalR Service.
pub const MAX_GROUP_NAME: usize = 1024;

/// Handles one message from `conn`. An `Err` closes the connection with that reason.
pub async fn dispatch(
    shard: &Rc<Shard>,
    conn: &Rc<Connection>,
    message: HubMessage,
) -> Result<(), CloseReason> {
    match message {
        HubMessage::Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            shard.metrics.message_in(conn.hub);
            let completion = if stream_ids.is_empty() {
                invoke(shard, conn, &target, arguments).await
            } else {
                Completion::Error(format!(
                    "Client sent {} stream(s), Hub method expects 0.",
                    stream_ids.len()
                ))
            };
            if matches!(completion, Completion::Error(_)) {
                shard.metrics.invocation_error(conn.hub);
            }
            if let Some(invocation_id) = invocation_id {
                reply(shard, conn, invocation_id, completion);
            }
        }
        HubMessage::StreamInvocation {
            invocation_id,
            target,
            ..
        } => {
            shard.metrics.message_in(conn.hub);
            shard.metrics.invocation_error(conn.hub);
            let hub = shard.node.hubs.get(conn.hub);
            let error = match hub.method(&target) {
                None => unknown_method(&target),
                Some(_) => format!(
                    "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
                ),
            };
            reply(shard, conn, invocation_id, Completion::Error(error));
        }
        HubMessage::Close { .. } => return Err(CloseReason::ClientClosed),
        // No hub method streams from the client, and Herald does not invoke client results,
        // so client stream items and completions have nothing to complete; a cancel for an
        // unknown invocation is ignored, as the protocol says. Pings only prove liveness,
        // which the transport recorded on receipt. Acks and Sequences need stateful reconnect.
        HubMessage::StreamItem { .. }
        | HubMessage::Completion { .. }
        | HubMessage::CancelInvocation { .. }
        | HubMessage::Ping
        | HubMessage::Ack { .. }
        | HubMessage::Sequence { .. } => {}
    }
    Ok(())
}

fn reply(shard: &Shard, conn: &Connection, invocation_id: String, completion: Completion) {
    let message = HubMessage::Completion {
        invocation_id,
        completion,
    };
    // A full queue closes the connection (slow consumer); nothing else to do here.
    shard.send_to(conn, &Encoded::message(&message, conn.protocol()));
}

pub fn unknown_method(target: &str) -> String {
    format!("Method '{target}' does not exist.")
}

fn bad_arguments(target: &str, given: usize, expected: &str) -> Completion {
    Completion::Error(format!(
        "Failed to invoke '{target}' due to an error on the server. InvalidDataException: \
         Invocation provides {given} argument(s) but target expects {expected}."
    ))
}

fn group_name(target: &str, value: &Value) -> Result<Arc<str>, Completion> {
    match value.as_str() {
        Some(name) if !name.is_empty() && name.chars().count() <= MAX_GROUP_NAME => Ok(name.into()),
        _ => Err(Completion::Error(format!(
            "Failed to invoke '{target}': the group name must be a string of 1 to {MAX_GROUP_NAME} characters."
        ))),
    }
}

async fn invoke(
    shard: &Rc<Shard>,
    conn: &Rc<Connection>,
    target: &str,
    mut args: Vec<Value>,
) -> Completion {
    let hub = shard.node.hubs.get(conn.hub);
    let Some(method) = hub.method(target).cloned() else {
        return Completion::Error(unknown_method(target));
    };
    let MethodDef {
        action,
        client_method,
        include_caller,
    } = method;
    let excluded = if include_caller {
        Vec::new()
    } else {
        vec![conn.id]
    };
    let publish = |target: Target, args: Vec<Value>| Publish {
        hub: conn.hub,
        target,
        excluded: excluded.clone(),
        message: Outgoing::new(client_method.clone(), args),
        created: Instant::now(),
    };
    if action.sends() {
        // Its input may now wait for recipients that are behind (`transport::inflow`).
        conn.mark_published();
    }
    match action {
        Action::Broadcast => {
            shard.publish(publish(Target::All, args)).await;
            Completion::Void
        }
        Action::SendToGroup => {
            let Some(first) = args.first() else {
                return bad_arguments(target, 0, "at least 1");
            };
            match group_name(target, first) {
                Ok(group) => {
                    shard.publish(publish(Target::Group(group), args)).await;
                    Completion::Void
                }
                Err(e) => e,
            }
        }
        Action::JoinGroup | Action::LeaveGroup => {
            if args.len() != 1 {
                return bad_arguments(target, args.len(), "1");
            }
            match group_name(target, &args[0]) {
                Ok(group) if action == Action::JoinGroup => {
                    if shard.join(conn, &group) {
                        Completion::Void
                    } else {
                        Completion::Error(format!(
                            "Failed to invoke '{target}': the connection is already in {} groups, the most one may join.",
                            shard.node.config.connections.max_groups_per_connection
                        ))
                    }
                }
                Ok(group) => {
                    shard.leave(conn, &group);
                    Completion::Void
                }
                Err(e) => e,
            }
        }
        Action::SendToUser => {
            if args.is_empty() {
                return bad_arguments(target, 0, "at least 1");
            }
            let Some(user) = args[0].as_str().filter(|u| !u.is_empty()) else {
                return Completion::Error(format!(
                    "Failed to invoke '{target}': the user id must be a non-empty string."
                ));
            };
            let user: Arc<str> = user.into();
            // The recipient learns who sent it: the first argument becomes the caller's id.
            args[0] = conn.user_id().into();
            shard.publish(publish(Target::User(user), args)).await;
            Completion::Void
        }
        Action::Echo => {
            if args.len() != 1 {
                return bad_arguments(target, args.len(), "1");
            }
            Completion::Result(args.pop().expect("one argument"))
        }
        Action::Count => {
            if !args.is_empty() {
                return bad_arguments(target, args.len(), "0");
            }
            Completion::Result(Value::Int(shard.node.count(conn.hub)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::hub::node::{Query, ShardMsg};
    use crate::hub::shard::testing::{connect, drain, node, settle};

    fn invocation(id: Option<&str>, target: &str, args: Vec<Value>) -> HubMessage {
        HubMessage::Invocation {
            invocation_id: id.map(str::to_string),
            target: target.into(),
            arguments: args,
            stream_ids: vec![],
        }
    }

    async fn run<F: Future>(f: F) -> F::Output {
        tokio::task::LocalSet::new().run_until(f).await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn presence_broadcast_and_counts_across_shards() {
        run(async {
            let shards = node(2, Config::embedded());
            let a = connect(&shards[0], Some("alice")).await;
            settle().await;
            assert_eq!(
                drain(&a),
                vec![format!(
                    r#"{{"type":1,"target":"joined","arguments":["{}","alice",1]}}"#,
                    a.id
                )]
            );
            let b = connect(&shards[1], None).await;
            settle().await;
            let joined_b = format!(
                r#"{{"type":1,"target":"joined","arguments":["{}",null,2]}}"#,
                b.id
            );
            assert_eq!(drain(&a), vec![joined_b.clone()]);
            assert_eq!(drain(&b), vec![joined_b]);

            dispatch(
                &shards[1],
                &b,
                invocation(Some("1"), "send", vec!["bob".into(), "hi".into()]),
            )
            .await
            .unwrap();
            settle().await;
            let msg = r#"{"type":1,"target":"broadcastMessage","arguments":["bob","hi"]}"#;
            assert_eq!(drain(&a), vec![msg.to_string()]);
            assert_eq!(
                drain(&b),
                vec![msg.to_string(), r#"{"type":3,"invocationId":"1"}"#.into()]
            );

            dispatch(&shards[0], &a, invocation(Some("2"), "GetCount", vec![]))
                .await
                .unwrap();
            assert_eq!(
                drain(&a),
                vec![r#"{"type":3,"invocationId":"2","result":2}"#.to_string()]
            );

            shards[1].detach(&b, &CloseReason::ClientClosed, None).await;
            settle().await;
            assert_eq!(
                drain(&a),
                vec![format!(
                    r#"{{"type":1,"target":"left","arguments":["{}",null,1]}}"#,
                    b.id
                )]
            );
            assert!(drain(&b).is_empty());
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn groups_users_and_errors() {
        run(async {
            let shards = node(2, Config::embedded());
            let a = connect(&shards[0], Some("alice")).await;
            let b = connect(&shards[1], Some("bob")).await;
            let c = connect(&shards[1], None).await;
            settle().await;
            for conn in [&a, &b, &c] {
                drain(conn);
            }
            dispatch(
                &shards[0],
                &a,
                invocation(None, "JoinGroup", vec!["room".into()]),
            )
            .await
            .unwrap();
            dispatch(
                &shards[1],
                &b,
                invocation(None, "JoinGroup", vec!["room".into()]),
            )
            .await
            .unwrap();
            dispatch(
                &shards[1],
                &c,
                invocation(
                    None,
                    "SendToGroup",
                    vec!["room".into(), "c".into(), "x".into()],
                ),
            )
            .await
            .unwrap();
            settle().await;
            let msg = r#"{"type":1,"target":"groupMessage","arguments":["room","c","x"]}"#;
            assert_eq!(drain(&a), vec![msg.to_string()]);
            assert_eq!(drain(&b), vec![msg.to_string()]);
            assert!(drain(&c).is_empty());

            dispatch(
                &shards[1],
                &b,
                invocation(None, "LeaveGroup", vec!["room".into()]),
            )
            .await
            .unwrap();
            dispatch(
                &shards[0],
                &a,
                invocation(
                    None,
                    "SendToGroup",
                    vec!["room".into(), "a".into(), "y".into()],
                ),
            )
            .await
            .unwrap();
            settle().await;
            assert_eq!(drain(&a).len(), 1);
            assert!(drain(&b).is_empty());

            dispatch(
                &shards[1],
                &c,
                invocation(None, "SendToUser", vec!["alice".into(), "psst".into()]),
            )
            .await
            .unwrap();
            settle().await;
            assert_eq!(
                drain(&a),
                vec![r#"{"type":1,"target":"userMessage","arguments":[null,"psst"]}"#.to_string()]
            );
            assert!(drain(&b).is_empty());

            dispatch(&shards[0], &a, invocation(Some("9"), "Nope", vec![]))
                .await
                .unwrap();
            dispatch(&shards[0], &a, invocation(None, "Nope", vec![]))
                .await
                .unwrap();
            dispatch(&shards[0], &a, invocation(Some("10"), "JoinGroup", vec![]))
                .await
                .unwrap();
            dispatch(
                &shards[0],
                &a,
                invocation(Some("11"), "JoinGroup", vec![Value::Int(3)]),
            )
            .await
            .unwrap();
            dispatch(
                &shards[0],
                &a,
                invocation(
                    Some("12"),
                    "Echo",
                    vec![Value::Map(vec![("k".into(), Value::Bool(true))])],
                ),
            )
            .await
            .unwrap();
            let replies = drain(&a);
            assert_eq!(
                replies[0],
                r#"{"type":3,"invocationId":"9","error":"Method 'Nope' does not exist."}"#
            );
            assert_eq!(
                replies.len(),
                4,
                "a non-blocking call gets no answer: {replies:?}"
            );
            assert!(replies[1].contains("Invocation provides 0 argument(s) but target expects 1."));
            assert!(replies[2].contains("group name must be a string"));
            assert_eq!(
                replies[3],
                r#"{"type":3,"invocationId":"12","result":{"k":true}}"#
            );

            let stream = HubMessage::StreamInvocation {
                invocation_id: "s".into(),
                target: "Ticker".into(),
                arguments: vec![],
                stream_ids: vec![],
            };
            dispatch(&shards[0], &a, stream).await.unwrap();
            assert_eq!(
                drain(&a),
                vec![
                    r#"{"type":3,"invocationId":"s","error":"Method 'Ticker' does not exist."}"#
                        .to_string()
                ]
            );
            // A method that exists but does not stream gets the error ASP.NET Core gives.
            let stream = HubMessage::StreamInvocation {
                invocation_id: "e".into(),
                target: "Echo".into(),
                arguments: vec![Value::from("x")],
                stream_ids: vec![],
            };
            dispatch(&shards[0], &a, stream).await.unwrap();
            assert_eq!(
                drain(&a),
                vec![
                    r#"{"type":3,"invocationId":"e","error":"The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation."}"#
                        .to_string()
                ]
            );
            // Cancels and stream items for invocations that do not exist are ignored, and the
            // connection carries on.
            for ignored in [
                HubMessage::CancelInvocation {
                    invocation_id: "nope".into(),
                },
                HubMessage::StreamItem {
                    invocation_id: "nope".into(),
                    item: Value::from(1),
                },
            ] {
                dispatch(&shards[0], &a, ignored).await.unwrap();
            }
            assert!(drain(&a).is_empty());
            assert_eq!(
                dispatch(
                    &shards[0],
                    &a,
                    HubMessage::Close {
                        error: None,
                        allow_reconnect: false
                    }
                )
                .await,
                Err(CloseReason::ClientClosed)
            );
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_publisher_one_target_keeps_order_across_shards() {
        run(async {
            let shards = node(3, Config::embedded());
            let publisher = connect(&shards[0], None).await;
            let far = connect(&shards[2], None).await;
            settle().await;
            drain(&far);
            for i in 0..500 {
                dispatch(
                    &shards[0],
                    &publisher,
                    invocation(None, "Send", vec![Value::Int(i), "m".into()]),
                )
                .await
                .unwrap();
            }
            settle().await;
            let expected: Vec<String> = (0..500)
                .map(|i| {
                    format!(r#"{{"type":1,"target":"broadcastMessage","arguments":[{i},"m"]}}"#)
                })
                .collect();
            assert_eq!(drain(&far), expected);
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn publishes_accepted_on_different_shards_arrive_in_the_order_accepted() {
        // A REST client whose requests land on different shards: the first publish is queued
        // for shard 1 before the second is made on shard 1 itself.
        run(async {
            let shards = node(2, Config::embedded());
            let far = connect(&shards[1], None).await;
            settle().await;
            drain(&far);
            for (i, shard) in [0, 1, 0, 1].into_iter().enumerate() {
                shards[shard]
                    .publish(Publish {
                        hub: 0,
                        target: Target::All,
                        excluded: vec![],
                        message: Outgoing::new("m".into(), vec![Value::Int(i as i64)]),
                        created: Instant::now(),
                    })
                    .await;
            }
            settle().await;
            let expected: Vec<String> = (0..4)
                .map(|i| format!(r#"{{"type":1,"target":"m","arguments":[{i}]}}"#))
                .collect();
            assert_eq!(drain(&far), expected);
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_query_on_one_shard_sees_changes_accepted_on_another() {
        // A REST client removes a user from every group through shard 0, then asks through
        // shard 1 before shard 1's inbox loop has run: the answer reflects the removal.
        run(async {
            let shards = node(2, Config::embedded());
            let in_group = || Query::UserInGroup {
                hub: 0,
                user: "alice".into(),
                group: "h".into(),
            };
            shards[0]
                .to_all(|| ShardMsg::AddUserToGroup {
                    hub: 0,
                    user: "alice".into(),
                    group: "h".into(),
                    until: Some(Instant::now() + std::time::Duration::from_secs(60)),
                })
                .await;
            assert!(shards[1].query(in_group()).await);
            shards[0]
                .to_all(|| ShardMsg::RemoveUserFromAllGroups {
                    hub: 0,
                    user: "alice".into(),
                })
                .await;
            assert!(!shards[1].query(in_group()).await);
        })
        .await;
    }
}

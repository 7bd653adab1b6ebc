//! A node driven over scripted broker replies.

use super::*;
use crate::proto::cluster::ClusterTap;
use crate::proto::hub::testing::{hub_for_hosts, join, send, T0};
use serde_json::json;

fn config(name: &str) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        prefix: "t".into(),
        heartbeat_ms: 100,
        max_forward_bytes: 1 << 16,
        max_payload_bytes: 4096,
        fingerprint: "fp1".into(),
        instance: "i1".into(),
        user: None,
        password: None,
        db: 0,
    }
}

fn at(ms: u64) -> Now {
    Now { ms, unix: T0.unix }
}

fn out(link: &mut Link) -> String {
    let bytes = link.output().to_vec();
    link.consume(bytes.len());
    String::from_utf8_lossy(&bytes).into_owned()
}

fn message(channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        payload.len()
    )
    .into_bytes();
    m.extend_from_slice(payload);
    m.extend_from_slice(b"\r\n");
    m
}

/// Connects both links and answers the claim and the fingerprint check.
fn joined_node(hub: &mut Hub) -> Node {
    let mut node = Node::new(config("n1"), 5);
    for link in node.links() {
        link.on_connecting(0);
        link.on_connected(0);
    }
    node.pump(hub, at(0));
    let [sub, cmd] = node.links();
    assert!(out(sub).contains("t:control"));
    let sent = out(cmd);
    assert!(sent.contains("t:node:n1") && sent.contains("NX"), "{sent}");
    // SET NX -> OK, SET NX (fingerprint) -> nil, GET -> fp1.
    cmd.on_bytes(b"+OK\r\n$-1\r\n$3\r\nfp1\r\n", 1);
    node.pump(hub, at(1));
    node
}

#[test]
fn joins_forwards_and_delivers_remote_room_messages() {
    let mut hub = hub_for_hosts();
    hub.enable_cluster(ClusterTap::new("n1", 1 << 16));
    let mut node = joined_node(&mut hub);
    assert!(hub.cluster().unwrap().status.broker_up);
    let [_, cmd] = node.links();
    assert!(out(cmd).contains("t:control"), "first heartbeat");

    join(&mut hub, 0, "a", &["publish"], &["lobby"]);
    send(
        &mut hub,
        0,
        T0,
        json!({"event":"subscribe","data":{"room":"lobby"}}),
    );
    send(
        &mut hub,
        0,
        T0,
        json!({"event":"publish","data":{"room":"lobby","event":"e","data":1}}),
    );
    node.pump(&mut hub, at(2));
    let [sub, cmd] = node.links();
    assert!(
        out(sub).contains("t:room:lobby"),
        "subscribed on the first member"
    );
    let sent = out(cmd);
    assert!(
        sent.contains("PUBLISH") && sent.contains("t:room:lobby"),
        "{sent}"
    );

    // Another node's message reaches the local member once; our echo does not.
    let mut env = Vec::new();
    envelope::encode(&mut env, "n2", Kind::Publish, "lobby", br#"{"event":"x"}"#);
    let mut own = Vec::new();
    envelope::encode(
        &mut own,
        "n1",
        Kind::Publish,
        "lobby",
        br#"{"event":"own"}"#,
    );
    let mut bytes = message("t:room:lobby", &env);
    bytes.extend(message("t:room:lobby", &own));
    sub.on_bytes(&bytes, 3);
    hub.out.clear();
    node.pump(&mut hub, at(3));
    assert_eq!(hub.out.actions.len(), 1);
    assert_eq!(hub.cluster().unwrap().status.received, 1);
    assert_eq!(hub.cluster().unwrap().status.forwarded, 1);

    // A heartbeat from n2 counts it; silence for 3 heartbeats forgets it.
    let mut hb = Vec::new();
    envelope::encode(&mut hb, "n2", Kind::Heartbeat, "", b"100");
    let [sub, _] = node.links();
    sub.on_bytes(&message("t:control", &hb), 10);
    node.pump(&mut hub, at(10));
    assert_eq!(hub.cluster().unwrap().status.nodes, 2);
    node.on_timer(at(400));
    node.pump(&mut hub, at(400));
    assert_eq!(hub.cluster().unwrap().status.nodes, 1);
}

#[test]
fn a_live_namesake_is_fatal_and_another_secret_does_not_join() {
    let mut hub = hub_for_hosts();
    hub.enable_cluster(ClusterTap::new("n1", 1 << 16));
    let mut node = Node::new(config("n1"), 5);
    let [_, cmd] = node.links();
    cmd.on_connecting(0);
    cmd.on_connected(0);
    node.pump(&mut hub, at(0));
    let [_, cmd] = node.links();
    out(cmd);
    // Claim refused, the fingerprint is another secret's.
    cmd.on_bytes(b"$-1\r\n$-1\r\n$3\r\nfp2\r\n", 1);
    node.pump(&mut hub, at(1));
    let status = &hub.cluster().unwrap().status;
    assert_eq!(
        status.not_ready.as_deref(),
        Some("the JWT secret differs from the cluster's")
    );
    let [_, cmd] = node.links();
    assert!(out(cmd).contains("GET"), "asks who holds the name");
    cmd.on_bytes(b"$2\r\ni9\r\n", 2);
    node.pump(&mut hub, at(2));
    assert!(node.fatal().is_some_and(|f| f.starts_with("cluster.node")));
}

#[test]
fn a_forward_too_big_for_the_links_is_dropped_and_counted() {
    let mut hub = hub_for_hosts();
    hub.enable_cluster(ClusterTap::new("n1", 1 << 16));
    let mut node = joined_node(&mut hub);
    let [_, cmd] = node.links();
    out(cmd);
    let room: Rc<str> = "lobby".into();
    let big: Rc<[u8]> = vec![b'x'; 5000].into();
    if let Some(tap) = hub.cluster_mut() {
        tap.forward(&room, crate::proto::cluster::RoomKind::Publish, &big);
    }
    node.pump(&mut hub, at(2));
    let [_, cmd] = node.links();
    assert!(!out(cmd).contains("PUBLISH"));
    assert_eq!(hub.cluster().unwrap().status.dropped, 1);
}

#[test]
fn a_burst_from_the_broker_is_delivered_in_bounded_batches_in_order() {
    use crate::proto::cluster::batch::BATCH_BYTES;
    let mut hub = hub_for_hosts();
    hub.enable_cluster(ClusterTap::new("n1", 1 << 16));
    let mut node = joined_node(&mut hub);
    for key in 0..2 {
        join(&mut hub, key, "a", &["publish"], &["lobby"]);
        send(
            &mut hub,
            key,
            T0,
            json!({"event":"subscribe","data":{"room":"lobby"}}),
        );
    }
    node.pump(&mut hub, at(2));
    hub.out.clear();
    // 400 messages of about 200 bytes arrive in one read.
    let mut bytes = Vec::new();
    for seq in 0..400 {
        let payload = format!(
            r#"{{"event":"n","data":{seq},"pad":"{}"}}"#,
            "p".repeat(170)
        );
        let mut env = Vec::new();
        envelope::encode(&mut env, "n2", Kind::Publish, "lobby", payload.as_bytes());
        bytes.extend(message("t:room:lobby", &env));
    }
    let [sub, _] = node.links();
    sub.on_bytes(&bytes, 3);
    let mut seen = Vec::new();
    let mut passes = 0;
    node.end_pass();
    for ms in 3..100 {
        node.pump(&mut hub, at(ms));
        let queued: usize = hub
            .out
            .actions
            .iter()
            .map(|a| match a {
                crate::proto::outbox::Action::Send { to: 0, body } => {
                    let m: serde_json::Value = serde_json::from_slice(hub.out.body(body)).unwrap();
                    seen.push(m["data"].as_u64().unwrap());
                    hub.out.body(body).len()
                }
                _ => 0,
            })
            .sum();
        // A member gets at most a batch (and the message that filled it)
        // per pass, however often the node is pumped in it; the shell
        // writes its socket before the next.
        assert!(queued < BATCH_BYTES + 300, "pass {passes}: {queued} bytes");
        hub.out.clear();
        node.pump(&mut hub, at(ms));
        assert!(hub.out.actions.is_empty(), "nothing more in the same pass");
        node.end_pass();
        passes += 1;
        if !node.has_backlog() {
            break;
        }
    }
    assert_eq!(seen, (0..400).collect::<Vec<_>>(), "all, in order, once");
    assert!(passes >= 3, "{passes} passes");
    assert_eq!(hub.cluster().unwrap().status.received, 400);
}

//! The node's history side driven over scripted broker replies, and its
//! parsers.

use super::*;

#[test]
fn numbered_payloads_and_read_answers_parse() {
    let payload = b"7 1700-5 a.100\n{\"event\":\"e\",\"offset\":7}";
    let (offset, epoch, sender, body) = split_numbered(payload).unwrap();
    assert_eq!((offset, epoch, sender), (7, "1700-5", "a.100"));
    assert_eq!(offset_of(body), Some(7));
    assert_eq!(split_numbered(b"x y z\n{}"), None);
    assert_eq!(split_numbered(b"7 e"), None);
    let value = Value::Array(Some(vec![
        Value::Integer(7),
        Value::Bulk(Some(b"1700-5".to_vec())),
        Value::Integer(1),
        Value::Array(Some(vec![Value::Bulk(Some(body.to_vec()))])),
    ]));
    let answer = answer_of(&value).unwrap();
    assert_eq!(
        (answer.offset, &*answer.epoch, answer.complete),
        (7, "1700-5", true)
    );
    assert_eq!(answer.messages.len(), 1);
    assert_eq!(answer_of(&Value::Integer(1)), None);
}

mod scripted {
    use crate::proto::cluster::numbering::ClusterHistoryConfig;
    use crate::proto::cluster::{envelope, ClusterTap, Node, NodeConfig};
    use crate::proto::hub::testing::{drain, join, send, T0};
    use crate::proto::hub::Hub;
    use crate::proto::redis::resp::{decode, Limits};
    use crate::proto::redis::{Link, Value};
    use crate::proto::Now;
    use serde_json::json;

    fn at(ms: u64) -> Now {
        Now { ms, unix: T0.unix }
    }

    /// The commands a link sent, each as its arguments.
    fn commands(link: &mut Link) -> Vec<Vec<Vec<u8>>> {
        let bytes = link.output().to_vec();
        link.consume(bytes.len());
        let limits = Limits {
            max_bulk: 1 << 20,
            max_elements: 64,
            max_depth: 1,
        };
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while let Ok(Some((Value::Array(Some(args)), used))) = decode(rest, &limits) {
            out.push(
                args.iter()
                    .map(|a| a.as_bytes().unwrap_or_default().to_vec())
                    .collect(),
            );
            rest = &rest[used..];
        }
        out
    }

    fn bulk(bytes: &[u8]) -> Vec<u8> {
        let mut out = format!("${}\r\n", bytes.len()).into_bytes();
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Answers every command the command link sent: `script` for the
    /// scripts (by their first argument), the join handshake, else OK.
    fn answer(node: &mut Node, script: &mut dyn FnMut(&[Vec<u8>]) -> Vec<u8>, ms: u64) {
        let [_, cmd] = node.links();
        let mut replies = Vec::new();
        for args in commands(cmd) {
            let verb = String::from_utf8_lossy(&args[0]).to_uppercase();
            let key = args.get(1).map(|k| String::from_utf8_lossy(k).into_owned());
            replies.extend(match (verb.as_str(), key.as_deref()) {
                ("SET", Some("t:jwt-fingerprint")) => b"$-1\r\n".to_vec(),
                ("GET", Some("t:jwt-fingerprint")) => bulk(b"fp1"),
                ("SCRIPT", _) | ("EVAL", _) | ("EVALSHA", _) => script(&args),
                _ => b"+OK\r\n".to_vec(),
            });
        }
        cmd.on_bytes(&replies, ms);
    }

    fn numbered_message(offset: u64) -> Vec<u8> {
        let mut env = Vec::new();
        let body = format!(r#"{{"event":"x","data":{offset},"room":"lobby","offset":{offset}}}"#);
        let payload = format!("{offset} e1 -\n{body}");
        envelope::encode(
            &mut env,
            "n2",
            envelope::Kind::NumberedPublish,
            "lobby",
            payload.as_bytes(),
        );
        let channel = b"t:room:lobby";
        let mut m = b"*3\r\n$7\r\nmessage\r\n".to_vec();
        m.extend(bulk(channel));
        m.extend(bulk(&env));
        m
    }

    /// A clustered hub with history and its node, joined, scripts loaded.
    fn ready() -> (Hub, Node) {
        let mut hub = crate::proto::hub::testing::hub_for_hosts();
        hub.enable_cluster(ClusterTap::new("n1", 1 << 16));
        let history = ClusterHistoryConfig {
            size: 10,
            ttl_s: 300,
        };
        hub.enable_cluster_history(history);
        let cfg = NodeConfig {
            history: Some(history),
            ..crate::proto::cluster::node::tests::config("n1")
        };
        let mut node = Node::new(cfg, 5);
        for link in node.links() {
            link.on_connecting(0);
            link.on_connected(0);
        }
        let mut load = |_: &[Vec<u8>]| bulk(&[b'f'; 40]);
        node.pump(&mut hub, at(0));
        answer(&mut node, &mut load, 1);
        node.pump(&mut hub, at(1));
        assert!(hub.cluster().unwrap().status.broker_up);
        answer(&mut node, &mut load, 2);
        node.pump(&mut hub, at(2));
        (hub, node)
    }

    #[test]
    fn a_subscribe_waits_for_redis_and_recovers_before_the_live_messages() {
        let (mut hub, mut node) = ready();
        // The scripts load; the first read is refused as if Redis had
        // forgotten them, and its EVAL retry answers.
        let mut evalsha_refused = false;
        let mut script = |args: &[Vec<u8>]| -> Vec<u8> {
            match &args[0][..] {
                b"SCRIPT" => bulk(&[b'f'; 40]),
                b"EVALSHA" if !evalsha_refused => {
                    evalsha_refused = true;
                    b"-NOSCRIPT No matching script.\r\n".to_vec()
                }
                _ => {
                    let mut reply = b"*4\r\n:3\r\n$2\r\ne1\r\n:1\r\n*2\r\n".to_vec();
                    for n in [2, 3] {
                        let m =
                            format!(r#"{{"event":"x","data":{n},"room":"lobby","offset":{n}}}"#);
                        reply.extend(bulk(m.as_bytes()));
                    }
                    reply
                }
            }
        };
        join(&mut hub, 0, "a", &[], &["lobby"]);
        drain(&mut hub);
        let since =
            json!({"event":"subscribe","data":{"room":"lobby","since":{"offset":1,"epoch":"e1"}}});
        assert_eq!(
            send(&mut hub, 0, T0, since),
            vec![],
            "the reply waits for Redis"
        );
        node.pump(&mut hub, at(3));
        let [_, cmd] = node.links();
        let sent = commands(cmd);
        assert!(sent.iter().any(|c| c[0] == b"EVALSHA"), "read by EVALSHA");
        let mut replies = Vec::new();
        for args in &sent {
            replies.extend(match &args[0][..] {
                b"EVALSHA" => script(args),
                _ => b"+OK\r\n".to_vec(),
            });
        }
        cmd.on_bytes(&replies, 4);
        // A live message comes before the read is answered: it is held.
        let [sub, _] = node.links();
        sub.on_bytes(&numbered_message(4), 4);
        node.pump(&mut hub, at(4));
        assert_eq!(drain(&mut hub), vec![], "held");
        let [_, cmd] = node.links();
        assert!(
            commands_peek(cmd).contains("$4\r\nEVAL\r\n"),
            "retried with EVAL"
        );
        answer(&mut node, &mut script, 5);
        node.pump(&mut hub, at(5));
        let out = drain(&mut hub);
        let offsets: Vec<u64> = out[1..]
            .iter()
            .map(|(_, m)| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(
            out[0].1,
            json!({"event":"subscribed","data":{"room":"lobby","offset":3,"epoch":"e1","recovered":true}})
        );
        assert_eq!(offsets, [2, 3, 4], "the replay, then what was held");
        // Later messages go straight to the member.
        let [sub, _] = node.links();
        sub.on_bytes(&numbered_message(5), 6);
        node.pump(&mut hub, at(6));
        assert_eq!(drain(&mut hub).len(), 1);
    }

    #[test]
    fn an_offset_that_skips_is_filled_from_the_stream_first() {
        let (mut hub, mut node) = ready();
        join(&mut hub, 0, "a", &[], &["lobby"]);
        node.pump(&mut hub, at(3));
        answer(&mut node, &mut |_| b"+OK\r\n".to_vec(), 3);
        drain(&mut hub);
        let [sub, _] = node.links();
        let mut live = numbered_message(1);
        live.extend(numbered_message(4));
        live.extend(numbered_message(5));
        sub.on_bytes(&live, 4);
        node.pump(&mut hub, at(4));
        let first: Vec<u64> = drain(&mut hub)
            .iter()
            .map(|(_, m)| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(first, [1], "4 and 5 wait for 2 and 3");
        let mut missed = |args: &[Vec<u8>]| {
            assert_eq!(&args[0][..], b"EVALSHA");
            let mut reply = b"*4\r\n:5\r\n$2\r\ne1\r\n:1\r\n*4\r\n".to_vec();
            for n in 2..=5 {
                let m = format!(r#"{{"event":"x","data":{n},"room":"lobby","offset":{n}}}"#);
                reply.extend(bulk(m.as_bytes()));
            }
            reply
        };
        answer(&mut node, &mut missed, 5);
        node.pump(&mut hub, at(5));
        let rest: Vec<u64> = drain(&mut hub)
            .iter()
            .map(|(_, m)| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(rest, [2, 3, 4, 5]);
    }

    /// Members a (who may publish) and b in the lobby, its channel subscribed.
    fn two_members() -> (Hub, Node) {
        let (mut hub, mut node) = ready();
        join(&mut hub, 0, "a", &["publish"], &["lobby"]);
        join(&mut hub, 1, "b", &[], &["lobby"]);
        node.pump(&mut hub, at(3));
        answer(&mut node, &mut |_| b"+OK\r\n".to_vec(), 3);
        drain(&mut hub);
        (hub, node)
    }

    /// Offsets (or -1) each member got, by member.
    fn got(hub: &mut Hub) -> Vec<(usize, i64)> {
        let out = drain(hub);
        out.iter()
            .filter(|(_, m)| m["event"] == "x")
            .map(|(k, m)| (*k, m["offset"].as_i64().unwrap_or(-1)))
            .collect()
    }

    #[test]
    fn a_gap_is_filled_as_the_live_path_delivers() {
        let (mut hub, mut node) = ready();
        join(&mut hub, 0, "a", &[], &["lobby"]);
        join(&mut hub, 1, "h", &["host"], &["lobby"]);
        let opened = drain(&mut hub);
        let sender = opened
            .iter()
            .find(|(k, m)| *k == 0 && m["data"]["clientId"].is_string())
            .map(|(_, m)| m["data"]["clientId"].as_str().unwrap().to_string())
            .unwrap();
        crate::proto::hub::testing::register(&mut hub, 1, json!({"play": null}));
        for ms in 3..6 {
            node.pump(&mut hub, at(ms));
            answer(&mut node, &mut |_| b":0\r\n".to_vec(), ms);
        }
        drain(&mut hub);
        let [sub, _] = node.links();
        let mut live = numbered_message(1);
        live.extend(numbered_message(4));
        sub.on_bytes(&live, 6);
        node.pump(&mut hub, at(6));
        assert_eq!(got(&mut hub), [(0, 1), (1, 1)]);
        // 2 was a host's broadcast (clients only), 3 member 0's publish.
        let mut missed = |args: &[Vec<u8>]| {
            assert_eq!(&args[0][..], b"EVALSHA");
            assert_eq!(&args[5][..], b"g", "a gap read heads kind and sender");
            let mut reply = b"*4\r\n:4\r\n$2\r\ne1\r\n:1\r\n*3\r\n".to_vec();
            for (n, head) in [
                (2, "b -".to_string()),
                (3, format!("p {sender}")),
                (4, "p -".into()),
            ] {
                let m = format!(
                    "{head}\n{{\"event\":\"x\",\"data\":{n},\"room\":\"lobby\",\"offset\":{n}}}"
                );
                reply.extend(bulk(m.as_bytes()));
            }
            reply
        };
        answer(&mut node, &mut missed, 7);
        node.pump(&mut hub, at(7));
        assert_eq!(got(&mut hub), [(0, 2), (1, 3), (0, 4), (1, 4)]);
    }

    #[test]
    fn rooms_delivered_to_while_the_broker_was_down_get_a_new_epoch_at_the_join() {
        let (mut hub, mut node) = two_members();
        for link in node.links() {
            link.on_closed(4, "test");
        }
        node.pump(&mut hub, at(4));
        assert!(!hub.cluster().unwrap().status.broker_up);
        let publish = json!({"event":"publish","data":{"room":"lobby","event":"x","data":1}});
        let published = send(&mut hub, 0, at(5), publish);
        assert_eq!(
            published.len(),
            2,
            "to b and the published reply, unnumbered"
        );
        // Back up: the join renews the lobby's epoch.
        for link in node.links() {
            link.on_timer(20_000);
            link.on_connecting(20_000);
            link.on_connected(20_000);
        }
        let mut renewed = Vec::new();
        let mut load = |args: &[Vec<u8>]| {
            if args[0] == b"EVAL" && args[1] == super::scripts::RENEW_EPOCH.as_bytes() {
                renewed.push(String::from_utf8_lossy(&args[3]).into_owned());
                return b":1\r\n".to_vec();
            }
            bulk(&[b'f'; 40])
        };
        for ms in 20_001..20_005 {
            node.pump(&mut hub, at(ms));
            answer(&mut node, &mut load, ms);
        }
        assert!(hub.cluster().unwrap().status.broker_up);
        assert_eq!(renewed, ["t:hist:lobby"]);
    }

    #[test]
    fn a_publish_lost_with_the_link_reaches_local_members_once() {
        let (mut hub, mut node) = two_members();
        let publish = json!({"event":"publish","data":{"room":"lobby","event":"x","data":1}});
        assert_eq!(send(&mut hub, 0, at(4), publish).len(), 1, "the reply only");
        node.pump(&mut hub, at(4));
        let [_, cmd] = node.links();
        let script = commands(cmd)
            .into_iter()
            .find(|c| c[0] == b"EVALSHA")
            .unwrap();
        // The link drops before the reply; the echo has not come: b gets it now.
        cmd.on_closed(5, "test");
        node.pump(&mut hub, at(5));
        assert_eq!(got(&mut hub), [(1, -1)], "unnumbered, to b only");
        // The node joins again; the script had run, and its echo comes
        // after all (echoes are ignored while not joined): passed over.
        let [_, cmd] = node.links();
        cmd.on_timer(20_000);
        cmd.on_connecting(20_000);
        cmd.on_connected(20_000);
        for ms in 20_001..20_004 {
            node.pump(&mut hub, at(ms));
            answer(&mut node, &mut |_| bulk(&[b'f'; 40]), ms);
        }
        assert!(hub.cluster().unwrap().status.broker_up);
        let (body, sender) = (&script[5], &script[11]);
        let mut payload = format!("1 e1 {}\n", String::from_utf8_lossy(sender)).into_bytes();
        payload.extend_from_slice(&body[..body.len() - 1]);
        payload.extend_from_slice(b",\"offset\":1}");
        let mut env = Vec::new();
        let kind = envelope::Kind::NumberedPublish;
        envelope::encode(&mut env, "n1", kind, "lobby", &payload);
        let mut m = b"*3\r\n$7\r\nmessage\r\n".to_vec();
        m.extend(bulk(b"t:room:lobby"));
        m.extend(bulk(&env));
        let [sub, _] = node.links();
        sub.on_bytes(&m, 20_005);
        node.pump(&mut hub, at(20_005));
        assert_eq!(got(&mut hub), [], "not twice");
    }

    fn commands_peek(link: &Link) -> String {
        String::from_utf8_lossy(link.output()).into_owned()
    }
}

#[test]
fn unnumbered_rooms_are_noted_within_a_bound_then_every_room() {
    use crate::proto::cluster::numbering::{HistoryTap, MAX_UNNUMBERED_ROOMS};
    let cfg = ClusterHistoryConfig { size: 10, ttl_s: 1 };
    let mut tap = HistoryTap::new(cfg, 1 << 16);
    tap.note_unnumbered("a");
    tap.note_unnumbered("a");
    assert_eq!(tap.take_unnumbered(), Some(vec!["a".into()]));
    assert_eq!(tap.take_unnumbered(), Some(vec![]), "taken out");
    for n in 0..=MAX_UNNUMBERED_ROOMS {
        tap.note_unnumbered(&n.to_string());
    }
    assert_eq!(tap.take_unnumbered(), None, "too many: every room");
    assert_eq!(tap.take_unnumbered(), Some(vec![]));
}

#[test]
fn gap_entries_carry_kind_and_sender() {
    let m = gap_entry(b"b n1.7\n{\"event\":\"x\",\"offset\":3}").unwrap();
    assert_eq!(
        (m.kind, &*m.sender, m.offset),
        (RoomKind::Broadcast, "n1.7", 3)
    );
    let bare = gap_entry(b"{\"event\":\"x\",\"offset\":4}").unwrap();
    assert_eq!(
        (bare.kind, &*bare.sender, bare.offset),
        (RoomKind::Publish, "-", 4)
    );
    assert!(gap_entry(b"p\n{}").is_none());
}

//! The packet codec: golden bytes pin the wire format; property tests show that every message
//! round-trips and that no input, random or mutated, makes the decoder panic.

use distributed_core::cluster::{
    Ack, Alive, Dead, DecodeMessageError, Direct, MemberState, Message, Nack, Ping, PingReq,
    PushMember, PushPull, Query, QueryFilter, QueryResponse, Suspect, UserEvent,
};
use distributed_core::identity::Incarnation;
use distributed_core::identity::{Key, KEY_BYTES};
use distributed_core::identity::{NodeId, NodeInfo, Tags};
use distributed_core::testing::{decode_packet, encode_packet, packet_len};
use distributed_core::transport::crypto::Keyring;
use distributed_core::transport::frame::{self, Security};
use proptest::prelude::*;
use rand::SeedableRng;
use std::net::SocketAddr;
use std::sync::Arc;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

#[test]
fn golden_ping_packet() {
    let msg = Message::Ping(Ping {
        seq: 1,
        target: id("b"),
        source: id("a"),
    });
    let bytes = encode_packet(std::slice::from_ref(&msg));
    // version 1, one message of 6 bytes: type 1, seq 1, "b", "a".
    assert_eq!(bytes, [1, 1, 6, 1, 1, 1, b'b', 1, b'a']);
    assert_eq!((msg.msg_type(), msg.kind()), (1, "ping"));
    assert_eq!(packet_len(&[msg]), bytes.len());
}

#[test]
fn golden_direct_message() {
    let msg = Message::Direct(Box::new(Direct {
        from: id("a"),
        payload: b"hi".to_vec(),
    }));
    let bytes = encode_packet(std::slice::from_ref(&msg));
    // version 1, one message of 6 bytes: type 11, "a", payload of 2 bytes.
    assert_eq!(bytes, [1, 1, 6, 11, 1, b'a', 2, b'h', b'i']);
    assert_eq!(packet_len(&[msg]), bytes.len());
}

#[test]
fn golden_alive_and_dead() {
    let info = NodeInfo {
        id: id("n1"),
        addr: "127.0.0.1:7946".parse().unwrap(),
        tags: Tags::new(),
    };
    let alive = Message::Alive(Alive {
        incarnation: Incarnation(300),
        info: Arc::new(info),
    });
    let dead = Message::Dead(Dead {
        incarnation: Incarnation(2),
        node: id("n1"),
        from: id("n2"),
    });
    let bytes = encode_packet(&[alive, dead]);
    let want: &[u8] = &[
        1, 2, // version, count
        14, 5, // len, type alive
        0xac, 0x02, // incarnation 300 (varint)
        2, b'n', b'1', // id
        0, 127, 0, 0, 1, 0x8a, 0x3e, // SocketAddr::V4 (variant 0), ip, port 7946 (varint)
        0,    // no tags
        8, 7, 2, 2, b'n', b'1', 2, b'n', b'2', // dead: len, type, inc, node, from
    ];
    assert_eq!(bytes, want);
}

#[test]
fn unknown_message_types_are_skipped_not_fatal() {
    let mut bytes = vec![1, 2, 2, 200, 0];
    bytes.extend_from_slice(&[2, 3, 7]); // ack seq 7
    let p = decode_packet(&bytes).unwrap();
    assert_eq!(p.unknown, 1);
    assert_eq!(p.messages, vec![Message::Ack(Ack { seq: 7 })]);
}

/// The largest packet by count, 255 messages (a two-byte count), round-trips; its length is
/// known before encoding.
#[test]
fn a_packet_of_255_messages_round_trips() {
    let msgs: Vec<Message> = (0..255u32).map(|seq| Message::Ack(Ack { seq })).collect();
    let bytes = encode_packet(&msgs);
    assert_eq!(&bytes[..3], &[1, 0xff, 0x01]);
    assert_eq!(bytes.len(), packet_len(&msgs));
    assert_eq!(decode_packet(&bytes).unwrap().messages, msgs);
}

#[test]
fn malformed_packets_name_their_fault() {
    assert_eq!(decode_packet(&[]), Err(DecodeMessageError::Truncated));
    assert_eq!(decode_packet(&[9, 0]), Err(DecodeMessageError::Version(9)));
    assert_eq!(
        decode_packet(&[1, 0xff, 0x01]),
        Err(DecodeMessageError::Truncated),
        "255 announced, none there"
    );
    assert_eq!(
        decode_packet(&[1, 0x80, 0x02]),
        Err(DecodeMessageError::TooManyMessages(256))
    );
    assert_eq!(
        decode_packet(&[1, 1, 5, 3]),
        Err(DecodeMessageError::Truncated)
    );
    assert_eq!(
        decode_packet(&[1, 1, 1, 3]),
        Err(DecodeMessageError::Body(3))
    );
    assert_eq!(decode_packet(&[1, 0, 0]), Err(DecodeMessageError::Trailing));
}

fn arb_id() -> impl Strategy<Value = NodeId> {
    "[a-z0-9-]{1,20}".prop_map(|s| NodeId::new(&s).unwrap())
}

fn arb_info() -> impl Strategy<Value = Arc<NodeInfo>> {
    (
        arb_id(),
        any::<[u8; 4]>(),
        any::<u16>(),
        proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,16}", 0..4),
    )
        .prop_map(|(id, ip, port, tags)| {
            Arc::new(NodeInfo {
                id,
                addr: SocketAddr::from((ip, port)),
                tags,
            })
        })
}

fn arb_state() -> impl Strategy<Value = MemberState> {
    prop_oneof![
        Just(MemberState::Alive),
        Just(MemberState::Suspect),
        Just(MemberState::Dead),
        Just(MemberState::Left)
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let inc = any::<u64>().prop_map(Incarnation);
    prop_oneof![
        (any::<u32>(), arb_id(), arb_id()).prop_map(|(seq, target, source)| Message::Ping(Ping {
            seq,
            target,
            source
        })),
        (any::<u32>(), arb_id(), arb_info(), arb_id(), any::<bool>()).prop_map(
            |(seq, target, i, source, nack)| {
                Message::PingReq(Box::new(PingReq {
                    seq,
                    target,
                    target_addr: i.addr,
                    source,
                    nack,
                }))
            }
        ),
        any::<u32>().prop_map(|seq| Message::Ack(Ack { seq })),
        any::<u32>().prop_map(|seq| Message::Nack(Nack { seq })),
        (inc.clone(), arb_info())
            .prop_map(|(incarnation, info)| Message::Alive(Alive { incarnation, info })),
        (inc.clone(), arb_id(), arb_id()).prop_map(|(incarnation, node, from)| Message::Suspect(
            Suspect {
                incarnation,
                node,
                from
            }
        )),
        (inc.clone(), arb_id(), arb_id()).prop_map(|(incarnation, node, from)| Message::Dead(
            Dead {
                incarnation,
                node,
                from
            }
        )),
        (
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
            proptest::collection::vec((arb_info(), inc, arb_state()), 0..5)
        )
            .prop_map(|(join, reply, event_ltime, rows)| {
                let members = rows
                    .into_iter()
                    .map(|(info, incarnation, state)| PushMember {
                        info,
                        incarnation,
                        state,
                    })
                    .collect();
                Message::PushPull(PushPull {
                    join,
                    reply,
                    event_ltime,
                    members,
                })
            }),
        (
            any::<u64>(),
            arb_id(),
            any::<u64>(),
            "[ -~]{0,20}",
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |(ltime, origin, wall_ms, name, payload)| Message::UserEvent(Box::new(UserEvent {
                    ltime,
                    origin,
                    wall_ms,
                    name,
                    payload
                }))
            ),
        (arb_id(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(from, payload)| { Message::Direct(Box::new(Direct { from, payload })) }),
        (
            (any::<u64>(), any::<u64>(), arb_id()),
            proptest::collection::vec(arb_filter(), 0..3),
            (any::<bool>(), any::<u8>(), any::<u32>()),
            "[ -~]{0,20}",
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |((ltime, id, origin), filters, (ack, relay_factor, timeout_ms), name, payload)| {
                    Message::Query(Box::new(Query {
                        ltime,
                        id,
                        origin,
                        filters,
                        ack,
                        relay_factor,
                        timeout_ms,
                        name,
                        payload,
                    }))
                }
            ),
        (
            (any::<u64>(), any::<u64>(), arb_id(), arb_id()),
            (any::<bool>(), any::<bool>()),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|((ltime, id, origin, from), (ack, relay), payload)| {
                Message::QueryResponse(Box::new(QueryResponse {
                    ltime,
                    id,
                    origin,
                    from,
                    ack,
                    relay,
                    payload,
                }))
            }),
    ]
}

fn arb_filter() -> impl Strategy<Value = QueryFilter> {
    prop_oneof![
        proptest::collection::vec(arb_id(), 0..4).prop_map(QueryFilter::Names),
        ("[a-z]{1,8}", "[ -~]{0,12}").prop_map(|(key, pattern)| QueryFilter::Tag { key, pattern }),
    ]
}

#[test]
fn golden_query_and_response() {
    let q = Message::Query(Box::new(Query {
        ltime: 2,
        id: 3,
        origin: id("a"),
        filters: vec![QueryFilter::Tag {
            key: "r".into(),
            pattern: "w".into(),
        }],
        ack: true,
        relay_factor: 1,
        timeout_ms: 300,
        name: "q".into(),
        payload: b"p".to_vec(),
    }));
    let bytes = encode_packet(std::slice::from_ref(&q));
    // type 13; ltime 2, id 3, "a", one filter (variant 1: tag "r" = "w"), ack, relay 1,
    // timeout 300 (varint ac 02), "q", payload "p".
    assert_eq!(
        bytes,
        [1, 1, 19, 13, 2, 3, 1, b'a', 1, 1, 1, b'r', 1, b'w', 1, 1, 0xac, 2, 1, b'q', 1, b'p']
    );
    let r = Message::QueryResponse(Box::new(QueryResponse {
        ltime: 2,
        id: 3,
        origin: id("a"),
        from: id("b"),
        ack: false,
        relay: true,
        payload: b"ok".to_vec(),
    }));
    let bytes = encode_packet(std::slice::from_ref(&r));
    assert_eq!(
        bytes,
        [1, 1, 12, 14, 2, 3, 1, b'a', 1, b'b', 0, 1, 2, b'o', b'k']
    );
    assert_eq!(packet_len(&[q, r]), 1 + 1 + 20 + 13);
}

proptest! {
    #[test]
    fn every_message_round_trips(msgs in proptest::collection::vec(arb_message(), 0..8)) {
        let bytes = encode_packet(&msgs);
        prop_assert_eq!(bytes.len(), packet_len(&msgs));
        let back = decode_packet(&bytes).unwrap();
        prop_assert_eq!(back.messages, msgs);
        prop_assert_eq!(back.unknown, 0);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_packet(&bytes);
    }

    #[test]
    fn mutated_packets_never_panic(
        msgs in proptest::collection::vec(arb_message(), 1..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut bytes = encode_packet(&msgs);
        for (pos, val) in flips {
            let i = pos % bytes.len();
            bytes[i] = val;
        }
        let cut = cut % (bytes.len() + 1);
        // Whatever the mutated (and cut) bytes decode to must survive a round trip unchanged:
        // the decoder accepts only what it could have written.
        for input in [&bytes[..], &bytes[..cut]] {
            if let Ok(p) = decode_packet(input) {
                let again = decode_packet(&encode_packet(&p.messages)).unwrap();
                prop_assert_eq!(again.messages, p.messages);
            }
        }
    }
}

fn ring() -> Keyring {
    Keyring::new(Key::from_bytes([9; KEY_BYTES]))
}

fn sealed(ring: &Keyring) -> Security<'_> {
    Security::Encrypted {
        keyring: ring,
        label: b"prod",
        accept_plain: false,
    }
}

proptest! {
    /// Sealed frames: random bytes never panic the opener, and any change to a sealed frame
    /// (one byte or a cut) makes it fail to open: nothing forged or damaged gets through.
    #[test]
    fn sealed_frames_refuse_every_mutation(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        junk in proptest::collection::vec(any::<u8>(), 0..700),
        pos in any::<usize>(),
        xor in 1u8..,
        cut in any::<usize>(),
        seed in any::<u64>(),
    ) {
        let ring = ring();
        let _ = frame::open(&junk, sealed(&ring));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let f = frame::seal(&body, sealed(&ring), seed, &mut rng);
        let opened = frame::open(&f, sealed(&ring)).unwrap();
        prop_assert_eq!(&*opened.body, &body[..]);
        prop_assert_eq!(opened.stamp.unwrap().sent_ms, seed);
        let mut flipped = f.clone();
        flipped[pos % f.len()] ^= xor;
        prop_assert!(frame::open(&flipped, sealed(&ring)).is_err());
        let cut = cut % f.len();
        prop_assert!(frame::open(&f[..cut], sealed(&ring)).is_err());
    }
}

#[test]
fn golden_plain_frames_with_and_without_a_label() {
    let mut rng = rand::thread_rng();
    // No label: the frame is the header and the packet, as before labels were checked.
    let f = frame::seal(&[1, 0], Security::PLAIN, 0, &mut rng);
    assert_eq!(f, [b'D', b'C', 1, 0, 1, 0]);
    // Label "prod": flag bit 1, then the first 8 bytes of SHA-256("prod").
    let f = frame::seal(&[1, 0], Security::Plain { label: b"prod" }, 0, &mut rng);
    let want: &[u8] = &[
        b'D', b'C', 1, 2, // header, flags = labelled
        0x67, 0x54, 0xaf, 0x96, 0x32, 0xa2, 0x74, 0x5e, // label tag
        1, 0, // packet: version 1, no messages
    ];
    assert_eq!(f, want);
    assert_eq!(frame::label_tag(b"prod"), want[4..12]);
}

#[test]
fn golden_sealed_frame_layout() {
    let ring = ring();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let sent_ms = 1_700_000_000_123;
    let f = frame::seal(&[1, 0], sealed(&ring), sent_ms, &mut rng);
    // header, key id, 24-byte nonce, ciphertext of [sent_ms: u64 BE][packet], 16-byte tag.
    assert_eq!(f.len(), 4 + 1 + 24 + 8 + 2 + 16);
    assert_eq!(f.len(), 4 + frame::ENCRYPTION_OVERHEAD_BYTES + 2);
    assert_eq!(frame::ENCRYPTION_OVERHEAD_BYTES, 49);
    assert_eq!(
        f[..5],
        [b'D', b'C', 1, 1, Key::from_bytes([9; KEY_BYTES]).id()]
    );
    // The plaintext is the stamp then the packet: decrypt with the keyring alone (the
    // associated data is the header and the label).
    let plain = ring.open(&[&f[..4], b"prod"].concat(), &f[4..]).unwrap();
    assert_eq!(plain[..8], sent_ms.to_be_bytes());
    assert_eq!(plain[8..], [1, 0]);
    let opened = frame::open(&f, sealed(&ring)).unwrap();
    assert_eq!(opened.stamp.unwrap().nonce[..], f[5..29]);
}

#[test]
fn a_sealed_frame_opens_once_and_only_while_fresh() {
    use distributed_core::transport::frame::{FrameSealer, OpenFrameError};
    use distributed_core::transport::replay::{ReplayError, ReplayWindow};
    let sealer = || {
        FrameSealer::new(Some(ring()), "prod".into())
            .with_replay_window(ReplayWindow::new(std::time::Duration::from_secs(60), 1024))
    };
    let (a, b) = (sealer(), sealer());
    let now = 1_700_000_000_000;
    let f = a.seal_at(&[1, 0], now);
    assert_eq!(b.open_at(&f, now + 1).unwrap(), [1, 0]);
    assert_eq!(
        b.open_at(&f, now + 2),
        Err(OpenFrameError::Replay(ReplayError::Replayed))
    );
    assert_eq!(
        b.open_at(&f, now + 60_001),
        Err(OpenFrameError::Replay(ReplayError::Stale {
            sent_ms: now,
            now_ms: now + 60_001
        }))
    );
    let ahead = a.seal_at(&[1, 0], now + 60_001);
    assert!(matches!(
        b.open_at(&ahead, now),
        Err(OpenFrameError::Replay(ReplayError::Stale { .. }))
    ));
}

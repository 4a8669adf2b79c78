//! Property tests: no parser panics, whatever bytes it is given.
//!
//! Each parser gets random byte strings and random mutations (byte changes,
//! truncations, insertions) of valid messages. The only requirement is that
//! it returns, with `Ok` or `Err`. Case counts keep the run to a few seconds.

mod common;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use pq_proto::replication::{
    HotStandbyFeedback, PrimaryKeepalive, ServerReplicationMessage, StandbyReplicationMessage,
    StandbyStatusUpdate, XLogData,
};
use pq_proto::{FeMessage, FeStartupPacket, PgTimestamp, PostgresBackend};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use utils::lsn::Lsn;
use utils::signals::CancellationToken;

/// Message limit used when decoding random input, small enough to hit often.
const MAX_TEST_MESSAGE_LEN_BYTES: usize = 4096;
/// Longest random input.
const MAX_INPUT_LEN_BYTES: usize = 512;

/// Decodes startup packets until the input runs out or fails to parse.
fn decode_all_startup(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = FeStartupPacket::decode(&mut buf) {}
}

/// Decodes typed messages until the input runs out or fails to parse.
fn decode_all_messages(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = FeMessage::decode(&mut buf, MAX_TEST_MESSAGE_LEN_BYTES) {}
}

/// Every replication decoder on one payload.
fn decode_replication(bytes: &[u8]) {
    let b = Bytes::copy_from_slice(bytes);
    let _ = ServerReplicationMessage::decode(b.clone());
    let _ = StandbyReplicationMessage::decode(b.clone());
    let _ = XLogData::decode(b.clone());
    let _ = PrimaryKeepalive::decode(b.clone());
    let _ = StandbyStatusUpdate::decode(b.clone());
    let _ = HotStandbyFeedback::decode(b);
}

/// Valid startup packets.
fn valid_startup_packets() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    frontend::startup_message([("user", "alice"), ("database", "db")], &mut buf).unwrap();
    out.push(buf.split().to_vec());
    frontend::ssl_request(&mut buf);
    out.push(buf.split().to_vec());
    frontend::cancel_request(1, 2, &mut buf);
    out.push(buf.split().to_vec());
    out.push(vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);
    out
}

/// One valid message of every frontend type.
fn valid_messages() -> Vec<Vec<u8>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    frontend::query("SELECT 1", &mut buf).unwrap();
    out.push(buf.split().to_vec());
    frontend::parse("s", "SELECT $1, $2", [23, 25], &mut buf).unwrap();
    out.push(buf.split().to_vec());
    let values = [Some(&b"42"[..]), None];
    let serialize = |v: Option<&[u8]>, b: &mut BytesMut| match v {
        Some(v) => {
            b.extend_from_slice(v);
            Ok(IsNull::No)
        }
        None => Ok(IsNull::Yes),
    };
    let bound = frontend::bind("p", "s", [0, 1], values, serialize, [1], &mut buf);
    assert!(bound.is_ok());
    out.push(buf.split().to_vec());
    frontend::describe(b'S', "s", &mut buf).unwrap();
    out.push(buf.split().to_vec());
    frontend::execute("p", 0, &mut buf).unwrap();
    out.push(buf.split().to_vec());
    frontend::close(b'P', "p", &mut buf).unwrap();
    out.push(buf.split().to_vec());
    frontend::password_message(b"pw", &mut buf).unwrap();
    out.push(buf.split().to_vec());
    frontend::CopyData::new(&b"data"[..])
        .unwrap()
        .write(&mut buf);
    out.push(buf.split().to_vec());
    frontend::copy_fail("why", &mut buf).unwrap();
    out.push(buf.split().to_vec());
    for write in [
        frontend::sync,
        frontend::flush,
        frontend::terminate,
        frontend::copy_done,
    ] {
        write(&mut buf);
        out.push(buf.split().to_vec());
    }
    out
}

/// One valid payload of every replication message.
fn valid_replication_payloads() -> Vec<Vec<u8>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    XLogData {
        wal_start: Lsn(1),
        wal_end: Lsn(2),
        timestamp: PgTimestamp(3),
        data: Bytes::from_static(b"wal"),
    }
    .encode(&mut buf);
    out.push(buf.split().to_vec());
    PrimaryKeepalive {
        wal_end: Lsn(1),
        timestamp: PgTimestamp(2),
        reply_requested: true,
    }
    .encode(&mut buf);
    out.push(buf.split().to_vec());
    StandbyStatusUpdate {
        write_lsn: Lsn(1),
        flush_lsn: Lsn(2),
        apply_lsn: Lsn(3),
        timestamp: PgTimestamp(4),
        reply_requested: false,
    }
    .encode(&mut buf);
    out.push(buf.split().to_vec());
    HotStandbyFeedback {
        timestamp: PgTimestamp(1),
        xmin: 2,
        xmin_epoch: 3,
        catalog_xmin: 4,
        catalog_xmin_epoch: 5,
    }
    .encode(&mut buf);
    out.push(buf.split().to_vec());
    out
}

/// A random edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Set(i, b) if len > 0 => bytes[i % len] = b,
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                bytes.remove(i % len);
            }
            _ => {}
        }
    }
    bytes
}

/// A valid message (picked by index), mutated.
fn mutated(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    (0..n, prop::collection::vec(mutation(), 1..6))
        .prop_map(move |(i, muts)| mutate(valid[i].clone(), &muts))
}

fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..MAX_INPUT_LEN_BYTES)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn startup_parser_never_panics(bytes in random_bytes()) {
        decode_all_startup(&bytes);
    }

    #[test]
    fn mutated_startup_packets_never_panic(bytes in mutated(valid_startup_packets())) {
        decode_all_startup(&bytes);
    }

    #[test]
    fn message_parser_never_panics(bytes in random_bytes()) {
        decode_all_messages(&bytes);
    }

    #[test]
    fn message_bodies_never_panic(tag in any::<u8>(), body in random_bytes()) {
        let _ = FeMessage::parse(tag, Bytes::from(body));
    }

    #[test]
    fn mutated_messages_never_panic(bytes in mutated(valid_messages())) {
        decode_all_messages(&bytes);
    }

    #[test]
    fn replication_parsers_never_panic(bytes in random_bytes()) {
        decode_replication(&bytes);
    }

    #[test]
    fn mutated_replication_messages_never_panic(
        bytes in mutated(valid_replication_payloads())
    ) {
        decode_replication(&bytes);
    }
}

/// Runs the whole driver on `input` sent by a client that then hangs up.
fn drive(input: Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut pgb =
                PostgresBackend::new(server).with_max_message_len(MAX_TEST_MESSAGE_LEN_BYTES);
            let _ = pgb
                .run(&mut common::ToyHandler, &CancellationToken::new())
                .await;
        });
        let _ = client.write_all(&input).await;
        let _ = client.shutdown().await;
        // Drain the server's output so it never blocks on a full pipe.
        let drain = async {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut client, &mut sink).await;
        };
        let (res, ()) = tokio::join!(server, drain);
        res.expect("driver did not panic");
    });
}

/// A valid session start followed by mutated messages.
fn session_input() -> impl Strategy<Value = Vec<u8>> {
    let startup = valid_startup_packets().swap_remove(0);
    prop::collection::vec(mutated(valid_messages()), 0..4).prop_map(move |msgs| {
        let mut input = startup.clone();
        for m in msgs {
            input.extend_from_slice(&m);
        }
        input
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn driver_never_panics_on_random_input(input in random_bytes()) {
        drive(input);
    }

    #[test]
    fn driver_never_panics_on_mutated_sessions(input in session_input()) {
        drive(input);
    }
}

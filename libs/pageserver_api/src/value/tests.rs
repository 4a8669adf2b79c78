use super::*;
use proptest::prelude::*;

fn enc(v: &Value) -> Vec<u8> {
    let out = v.encode_to_vec().unwrap();
    assert_eq!(out.len() as u64, v.ser_size(), "ser_size of {v:?}");
    out
}

#[test]
fn encoding_is_pinned() {
    let cases: Vec<(Value, Vec<u8>)> = vec![
        (
            Value::Image(Bytes::from_static(b"ab")),
            vec![0, 0, 0, 0, 2, b'a', b'b'],
        ),
        (
            Value::WalRecord(NeonWalRecord::Postgres {
                will_init: true,
                rec: Bytes::from_static(b"x"),
            }),
            vec![1, 0, 1, 0, 0, 0, 1, b'x'],
        ),
        (
            Value::WalRecord(NeonWalRecord::ClearVisibilityMapFlags {
                new_heap_blkno: Some(0x0102_0304),
                old_heap_blkno: None,
                flags: 3,
            }),
            vec![1, 1, 1, 1, 2, 3, 4, 0, 3],
        ),
        (
            Value::WalRecord(NeonWalRecord::TruncateVisibilityMap {
                trunc_byte: 7,
                trunc_offs: 2,
            }),
            vec![1, 2, 0, 0, 0, 7, 2],
        ),
        (
            Value::WalRecord(NeonWalRecord::ClogSetCommitted {
                xids: vec![5],
                timestamp: -2,
            }),
            vec![
                1, 3, 0, 0, 0, 1, 0, 0, 0, 5, 255, 255, 255, 255, 255, 255, 255, 254,
            ],
        ),
        (
            Value::WalRecord(NeonWalRecord::ClogSetAborted { xids: vec![] }),
            vec![1, 4, 0, 0, 0, 0],
        ),
        (
            Value::WalRecord(NeonWalRecord::MultixactOffsetCreate { mid: 1, moff: 2 }),
            vec![1, 5, 0, 0, 0, 1, 0, 0, 0, 2],
        ),
        (
            Value::WalRecord(NeonWalRecord::MultixactMembersCreate {
                moff: 9,
                members: vec![MultiXactMember { xid: 4, status: 5 }],
            }),
            vec![1, 6, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 4, 5],
        ),
    ];
    for (value, bytes) in cases {
        assert_eq!(enc(&value), bytes, "{value:?}");
        assert_eq!(Value::decode(&bytes).unwrap(), value);
    }
}

#[test]
fn strict_decoding() {
    use ValueDecodeError::*;
    assert_eq!(
        Value::decode(&[]),
        Err(Truncated {
            offset: 0,
            needed: 1,
            len: 0
        })
    );
    assert_eq!(Value::decode(&[2]), Err(UnknownValueTag(2)));
    assert_eq!(Value::decode(&[1, 7]), Err(UnknownRecordTag(7)));
    assert_eq!(
        Value::decode(&[1, 0, 2, 0, 0, 0, 0]),
        Err(BadFlag { offset: 2, byte: 2 })
    );
    assert_eq!(
        Value::decode(&[1, 1, 9, 0, 0]),
        Err(BadFlag { offset: 2, byte: 9 })
    );
    assert_eq!(Value::decode(&[0, 0, 0, 0, 0, 0]), Err(TrailingBytes(1)));
    // A count far beyond the input is rejected before anything is allocated.
    assert_eq!(
        Value::decode(&[1, 4, 255, 255, 255, 255, 0, 0, 0, 0]),
        Err(Truncated {
            offset: 6,
            needed: 4 * u32::MAX as usize,
            len: 10
        })
    );
    assert!(matches!(
        Value::decode(&[0, 255, 255, 255, 255]),
        Err(Truncated { .. })
    ));
}

#[test]
fn decode_bytes_shares_memory() {
    let value = Value::Image(Bytes::from(vec![7u8; 100]));
    let buf = Bytes::from(enc(&value));
    let decoded = Value::decode_bytes(&buf).unwrap();
    let Value::Image(img) = &decoded else {
        panic!("not an image: {decoded:?}");
    };
    assert_eq!(img.as_ptr(), buf[5..].as_ptr());
    assert_eq!(decoded, value);
}

#[test]
fn will_init() {
    assert!(Value::Image(Bytes::new()).will_init());
    let rec = |will_init| {
        Value::WalRecord(NeonWalRecord::Postgres {
            will_init,
            rec: Bytes::new(),
        })
    };
    assert!(rec(true).will_init());
    assert!(!rec(false).will_init());
    assert!(!Value::WalRecord(NeonWalRecord::ClogSetAborted { xids: vec![1] }).will_init());
}

fn any_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn any_record() -> impl Strategy<Value = NeonWalRecord> {
    let xids = || proptest::collection::vec(any::<u32>(), 0..16);
    prop_oneof![
        (any::<bool>(), any_bytes())
            .prop_map(|(will_init, rec)| NeonWalRecord::Postgres { will_init, rec }),
        (any::<Option<u32>>(), any::<Option<u32>>(), any::<u8>()).prop_map(|(n, o, flags)| {
            NeonWalRecord::ClearVisibilityMapFlags {
                new_heap_blkno: n,
                old_heap_blkno: o,
                flags,
            }
        }),
        (any::<u32>(), any::<u8>()).prop_map(|(trunc_byte, trunc_offs)| {
            NeonWalRecord::TruncateVisibilityMap {
                trunc_byte,
                trunc_offs,
            }
        }),
        (xids(), any::<i64>())
            .prop_map(|(xids, timestamp)| NeonWalRecord::ClogSetCommitted { xids, timestamp }),
        xids().prop_map(|xids| NeonWalRecord::ClogSetAborted { xids }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(mid, moff)| NeonWalRecord::MultixactOffsetCreate { mid, moff }),
        (
            any::<u32>(),
            proptest::collection::vec((any::<u32>(), any::<u8>()), 0..8)
        )
            .prop_map(|(moff, members)| NeonWalRecord::MultixactMembersCreate {
                moff,
                members: members
                    .into_iter()
                    .map(|(xid, status)| MultiXactMember { xid, status })
                    .collect(),
            }),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_bytes().prop_map(Value::Image),
        any_record().prop_map(Value::WalRecord),
    ]
}

proptest! {
    #[test]
    fn round_trip(value in any_value()) {
        let bytes = enc(&value);
        prop_assert_eq!(Value::decode(&bytes), Ok(value.clone()));
        // Every proper prefix is short; any extra byte is trailing.
        for len in 0..bytes.len() {
            let is_truncated =
                matches!(Value::decode(&bytes[..len]), Err(ValueDecodeError::Truncated { .. }));
            prop_assert!(is_truncated, "prefix {} decoded", len);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(Value::decode(&longer), Err(ValueDecodeError::TrailingBytes(1)));
        // Encoding appends.
        let mut out = vec![0xAA];
        value.encode(&mut out).unwrap();
        prop_assert_eq!(&out[1..], &bytes[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(value) = Value::decode(&bytes) {
            // Anything accepted is the one encoding of what it decodes to.
            prop_assert_eq!(enc(&value), bytes);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(value in any_value(), pos in any::<usize>(), byte: u8) {
        let mut bytes = enc(&value);
        let i = pos % bytes.len();
        bytes[i] = byte;
        if let Ok(decoded) = Value::decode(&bytes) {
            prop_assert_eq!(enc(&decoded), bytes);
        }
    }
}

//! Property tests: the decoders never panic, whatever the input.

use postgres_ffi::controlfile::{ControlFileData, CONTROL_FILE_CRC_OFFSET, PG_CONTROL_VERSION};
use postgres_ffi::records::{decode_main_data, CheckPoint};
use postgres_ffi::relfile::parse_relation_path;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_main_data_never_panics(
        rmid in prop_oneof![0u8..=21, any::<u8>()],
        info in any::<u8>(),
        xid in any::<u32>(),
        data in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        let _ = decode_main_data(rmid, info, xid, &data);
    }

    /// Small counts in the first words make the array paths (subxacts, relfilenodes, members,
    /// offsets ...) reachable instead of failing on the first count.
    #[test]
    fn decode_main_data_small_counts_never_panic(
        rmid in prop::sample::select(vec![0u8, 1, 2, 3, 4, 6, 7, 8, 9, 10, 21]),
        info in any::<u8>(),
        words in proptest::collection::vec(0u32..4, 0..48),
    ) {
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let _ = decode_main_data(rmid, info, 0, &data);
    }

    #[test]
    fn checkpoint_decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(cp) = CheckPoint::decode(&data) {
            prop_assert_eq!(CheckPoint::decode(&cp.encode()).unwrap(), cp);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn control_file_decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = ControlFileData::decode(&data);
        let _ = ControlFileData::decode_unchecked(&data);
    }

    /// Random contents with a valid version, CRC and state decode, and their encoding is a fixed
    /// point (padding and bools are normalised; `floatFormat` may be a NaN, so compare bytes).
    #[test]
    fn control_file_with_valid_crc(mut data in proptest::collection::vec(any::<u8>(), 296..=296), state in 0u8..7) {
        data[8..12].copy_from_slice(&PG_CONTROL_VERSION.to_le_bytes());
        data[16..20].copy_from_slice(&u32::from(state).to_le_bytes());
        let crc = crc32c::crc32c(&data[..CONTROL_FILE_CRC_OFFSET]);
        data[CONTROL_FILE_CRC_OFFSET..CONTROL_FILE_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        let decoded = ControlFileData::decode_unchecked(&data).unwrap();
        let reencoded = decoded.encode();
        prop_assert_eq!(ControlFileData::decode_unchecked(&reencoded).unwrap().encode(), reencoded);
        let _ = ControlFileData::decode(&data);
    }

    #[test]
    fn relation_path_parse_never_panics(path in "[a-zA-Z0-9_./]{0,40}") {
        if let Ok(parsed) = parse_relation_path(&path) {
            let canonical = parsed.to_path();
            prop_assert_eq!(parse_relation_path(&canonical).unwrap(), parsed);
        }
    }
}

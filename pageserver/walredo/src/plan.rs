//! Planning a redo request (pure functions): check the request, and split its records into
//! steps, each either one round trip to the wal-redo process (a run of consecutive
//! PostgreSQL records, bounded in bytes) or one Neon record applied in Rust.

use std::ops::Range;

use pageserver_api::value::NeonWalRecord;
use utils::lsn::Lsn;

use crate::protocol;

/// One step of a redo request, over indexes of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these PostgreSQL records to the wal-redo process in one batch.
    Process(Range<usize>),
    /// Apply this Neon record in Rust.
    Neon(usize),
}

/// Why a request cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("record {index} ends at {lsn}, not after the previous record or base image at {prev}")]
    OutOfOrder { index: usize, lsn: Lsn, prev: Lsn },
    #[error("record {index} ends at {lsn}, after the requested LSN {request_lsn}")]
    BeyondRequest {
        index: usize,
        lsn: Lsn,
        request_lsn: Lsn,
    },
    #[error("a batch with record {index} ({bytes} bytes) would exceed {max_batch_bytes} bytes")]
    RecordTooLarge {
        index: usize,
        bytes: usize,
        max_batch_bytes: usize,
    },
}

/// Checks that record LSNs increase strictly after `base_lsn` and do not pass `request_lsn`.
pub fn check_order(
    request_lsn: Lsn,
    base_lsn: Option<Lsn>,
    records: &[(Lsn, NeonWalRecord)],
) -> Result<(), PlanError> {
    let mut prev = base_lsn;
    for (index, (lsn, _)) in records.iter().enumerate() {
        if let Some(p) = prev {
            if *lsn <= p {
                return Err(PlanError::OutOfOrder {
                    index,
                    lsn: *lsn,
                    prev: p,
                });
            }
        }
        if *lsn > request_lsn {
            return Err(PlanError::BeyondRequest {
                index,
                lsn: *lsn,
                request_lsn,
            });
        }
        prev = Some(*lsn);
    }
    Ok(())
}

/// Splits `records` into steps. A batch of PostgreSQL records is cut so that its encoded
/// request (with the base image) stays within `max_batch_bytes`; the next batch then starts
/// from the page the previous one produced.
pub fn plan_steps(
    records: &[(Lsn, NeonWalRecord)],
    max_batch_bytes: usize,
) -> Result<Vec<Step>, PlanError> {
    let mut steps = Vec::new();
    let mut batch: Option<(usize, usize)> = None; // (start index, encoded bytes so far)
    for (index, (_, record)) in records.iter().enumerate() {
        let NeonWalRecord::Postgres { rec, .. } = record else {
            if let Some((start, _)) = batch.take() {
                steps.push(Step::Process(start..index));
            }
            steps.push(Step::Neon(index));
            continue;
        };
        let bytes = protocol::apply_record_bytes(rec.len());
        if protocol::FIXED_REQUEST_BYTES + bytes > max_batch_bytes {
            return Err(PlanError::RecordTooLarge {
                index,
                bytes,
                max_batch_bytes,
            });
        }
        batch = match batch {
            Some((start, total)) if total + bytes <= max_batch_bytes => {
                Some((start, total + bytes))
            }
            Some((start, _)) => {
                steps.push(Step::Process(start..index));
                Some((index, protocol::FIXED_REQUEST_BYTES + bytes))
            }
            None => Some((index, protocol::FIXED_REQUEST_BYTES + bytes)),
        };
    }
    if let Some((start, _)) = batch {
        steps.push(Step::Process(start..records.len()));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn pg(len: usize) -> NeonWalRecord {
        NeonWalRecord::Postgres {
            will_init: false,
            rec: Bytes::from(vec![0u8; len]),
        }
    }

    fn clog() -> NeonWalRecord {
        NeonWalRecord::ClogSetAborted { xids: vec![1] }
    }

    fn at(lsns_and_records: Vec<(u64, NeonWalRecord)>) -> Vec<(Lsn, NeonWalRecord)> {
        lsns_and_records
            .into_iter()
            .map(|(l, r)| (Lsn(l), r))
            .collect()
    }

    #[test]
    fn mixed_records_keep_their_order() {
        let records = at(vec![
            (10, pg(100)),
            (20, pg(100)),
            (30, clog()),
            (40, pg(100)),
            (50, clog()),
            (60, clog()),
        ]);
        let steps = plan_steps(&records, 1 << 20).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Process(0..2),
                Step::Neon(2),
                Step::Process(3..4),
                Step::Neon(4),
                Step::Neon(5)
            ]
        );
        assert_eq!(plan_steps(&[], 1 << 20).unwrap(), vec![]);
    }

    #[test]
    fn batches_are_bounded() {
        let one = protocol::apply_record_bytes(1000);
        // room for exactly two records per batch
        let max = protocol::FIXED_REQUEST_BYTES + 2 * one;
        let records = at((1..=5).map(|i| (i * 10, pg(1000))).collect());
        let steps = plan_steps(&records, max).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Process(0..2),
                Step::Process(2..4),
                Step::Process(4..5)
            ]
        );
        let err = plan_steps(&at(vec![(10, pg(5000))]), max).unwrap_err();
        assert!(matches!(err, PlanError::RecordTooLarge { index: 0, .. }));
    }

    #[test]
    fn order_is_checked() {
        let records = at(vec![(10, clog()), (20, clog())]);
        assert!(check_order(Lsn(20), Some(Lsn(5)), &records).is_ok());
        assert!(check_order(Lsn(20), None, &records).is_ok());
        assert!(matches!(
            check_order(Lsn(20), Some(Lsn(10)), &records),
            Err(PlanError::OutOfOrder { index: 0, .. })
        ));
        assert!(matches!(
            check_order(Lsn(19), None, &records),
            Err(PlanError::BeyondRequest { index: 1, .. })
        ));
        let same = at(vec![(10, clog()), (10, clog())]);
        assert!(matches!(
            check_order(Lsn(20), None, &same),
            Err(PlanError::OutOfOrder { index: 1, .. })
        ));
    }
}

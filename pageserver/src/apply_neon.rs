//! Applies the records the pageserver invents itself ([`NeonWalRecord`] variants other than
//! `Postgres`) to a page stored under a [`Key`]. The bit layouts live in one place,
//! [`pageserver_walredo::apply_neon`]; this module only maps the key to its redo target and
//! checks the page size. `Postgres` records need `postgres --wal-redo` and are refused.

use pageserver_api::key::Key;
use pageserver_api::value::NeonWalRecord;
use pageserver_walredo::apply_neon as walredo_apply;
use pageserver_walredo::{ApplyNeonError, RedoTarget};

use crate::pg_consts::BLCKSZ;

/// Why a record could not be applied to a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("page is {0} bytes, expected {BLCKSZ}")]
    BadPageSize(usize),
    #[error("key {0} is not a relation block or an SLRU page")]
    NotABlock(Key),
    #[error(transparent)]
    Record(#[from] ApplyNeonError),
}

/// Applies `rec` to `page` (which must be [`BLCKSZ`] bytes), the current version of `key`.
pub fn apply_neon_record(key: Key, page: &mut [u8], rec: &NeonWalRecord) -> Result<(), ApplyError> {
    let len = page.len();
    let page: &mut [u8; BLCKSZ] = page.try_into().map_err(|_| ApplyError::BadPageSize(len))?;
    let target = RedoTarget::from_key(&key).ok_or(ApplyError::NotABlock(key))?;
    walredo_apply::apply_neon_record(page, &target, rec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg_consts::{TRANSACTION_STATUS_ABORTED, TRANSACTION_STATUS_COMMITTED};
    use pageserver_api::key::{slru_block_to_key, SlruKind, CONTROLFILE_KEY};
    use pageserver_walredo::apply_neon::clog_status;

    fn clog_key(pageno: u32) -> Key {
        slru_block_to_key(SlruKind::Clog, pageno / 32, pageno % 32)
    }

    #[test]
    fn applies_through_the_key_target() {
        let mut page = vec![0u8; BLCKSZ];
        let commit = NeonWalRecord::ClogSetCommitted {
            xids: vec![5],
            timestamp: 0,
        };
        apply_neon_record(clog_key(0), &mut page, &commit).unwrap();
        let abort = NeonWalRecord::ClogSetAborted { xids: vec![6] };
        apply_neon_record(clog_key(0), &mut page, &abort).unwrap();
        assert_eq!(clog_status(&page, 5), TRANSACTION_STATUS_COMMITTED);
        assert_eq!(clog_status(&page, 6), TRANSACTION_STATUS_ABORTED);
        // The same record stored under another CLOG page has nothing on it.
        assert!(matches!(
            apply_neon_record(clog_key(1), &mut page, &commit),
            Err(ApplyError::Record(ApplyNeonError::NothingOnPage { .. }))
        ));
    }

    #[test]
    fn refuses_postgres_records_short_pages_and_non_block_keys() {
        let rec = NeonWalRecord::Postgres {
            will_init: false,
            rec: bytes::Bytes::new(),
        };
        let mut page = vec![0u8; BLCKSZ];
        assert_eq!(
            apply_neon_record(clog_key(0), &mut page, &rec),
            Err(ApplyError::Record(ApplyNeonError::PostgresRecord))
        );
        let mut short = vec![0u8; 10];
        assert_eq!(
            apply_neon_record(clog_key(0), &mut short, &rec),
            Err(ApplyError::BadPageSize(10))
        );
        let not_a_block = CONTROLFILE_KEY;
        assert_eq!(
            apply_neon_record(not_a_block, &mut page, &rec),
            Err(ApplyError::NotABlock(not_a_block))
        );
    }
}

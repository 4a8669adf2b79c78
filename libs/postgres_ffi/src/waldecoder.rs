//! A streaming decoder of PostgreSQL 15 WAL.
//!
//! Feed it the WAL bytes from its start position onwards, in pieces of any size, and poll
//! it for records. It validates page headers the way xlogreader.c's
//! `XLogReaderValidatePageHeader` does, reassembles records split across pages and
//! segments, verifies each record (`ValidXLogRecordHeader`, `ValidXLogRecord`), and
//! decodes its body ([`crate::walrecord::decode_record`]).
//!
//! [`WalStreamDecoder::poll_decode`] returns `Ok(Some(record))` for a record, `Ok(None)`
//! when it needs more bytes, and `Err` when the WAL is invalid at the current position.
//! As for PostgreSQL, invalid WAL (zeros, a bad CRC, a stale page) is how WAL normally
//! ends: the error tells where. Once it returned an error the decoder keeps returning it.

use bytes::{Buf, Bytes, BytesMut};
use utils::lsn::Lsn;

use crate::pg_constants::{
    maxalign, rmgr_id_is_valid, MAX_RECORD_LEN_BYTES, XLOG_BLCKSZ, XLOG_PAGE_MAGIC,
    XLOG_SIZE_OF_XLOG_RECORD, XLP_ALL_FLAGS, XLP_FIRST_IS_CONTRECORD,
    XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER,
};
use crate::records::reader::Reader;
use crate::walrecord::{
    decode_record, record_crc32c, DecodedWalRecord, RecordDecodeError, XLogRecordHeader,
};
use crate::xlog_utils::{XLogLongPageHeaderData, XLogPageHeaderData};

const PAGE_BYTES: u64 = XLOG_BLCKSZ as u64;
const SHORT_PHD: usize = XLogPageHeaderData::SIZE;
const LONG_PHD: usize = XLogLongPageHeaderData::SIZE;
const RECORD_HEADER: usize = XLOG_SIZE_OF_XLOG_RECORD;

/// Why the WAL is invalid, with PostgreSQL's wording where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalDecodeErrorKind {
    #[error("invalid magic number {0:04X}")]
    BadMagic(u16),
    #[error("invalid info bits {0:04X}")]
    BadPageInfo(u16),
    #[error("first page of segment has no long header (info bits {0:04X})")]
    MissingLongHeader(u16),
    #[error("incorrect segment size {0} in page header")]
    WrongSegmentSize(u32),
    #[error("incorrect XLOG_BLCKSZ {0} in page header")]
    WrongBlockSize(u32),
    #[error("WAL file is from different database system: system identifier {found}, expected {expected}")]
    SystemIdMismatch { expected: u64, found: u64 },
    #[error("unexpected pageaddr {0}")]
    UnexpectedPageAddr(Lsn),
    #[error("out-of-sequence timeline ID {tli} (after {prev_tli})")]
    TimelineBackwards { tli: u32, prev_tli: u32 },
    #[error("xlp_rem_len {0} without XLP_FIRST_IS_CONTRECORD")]
    RemLenWithoutContrecord(u32),
    #[error("contrecord is requested")]
    UnexpectedContrecord,
    #[error("there is no contrecord flag")]
    MissingContrecord,
    #[error("invalid contrecord length {rem_len} (expected {expected})")]
    ContrecordLength { rem_len: u32, expected: u64 },
    #[error("invalid record offset")]
    InvalidRecordOffset,
    #[error("invalid record length: wanted {wanted}, got {0}", wanted = XLOG_SIZE_OF_XLOG_RECORD)]
    RecordTooShort(u32),
    #[error("record length {0} exceeds the maximum {max}", max = MAX_RECORD_LEN_BYTES)]
    RecordTooLong(u32),
    #[error("invalid resource manager ID {0}")]
    InvalidRmgr(u8),
    #[error("record with incorrect prev-link {0}")]
    BadPrevLink(Lsn),
    #[error(
        "incorrect resource manager data checksum (stored {stored:08X}, computed {computed:08X})"
    )]
    BadCrc { stored: u32, computed: u32 },
    #[error("{0}")]
    BadRecord(#[from] RecordDecodeError),
    #[error("LSN overflow")]
    LsnOverflow,
    #[error("invalid WAL segment size {0} bytes")]
    BadSegmentSize(u64),
}

/// Invalid WAL at `lsn`: the page or record that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL at {lsn}: {kind}")]
pub struct WalDecodeError {
    /// The page (for page header errors) or record start where the problem is.
    pub lsn: Lsn,
    /// What is wrong.
    pub kind: WalDecodeErrorKind,
}

impl WalDecodeError {
    fn new(lsn: Lsn, kind: WalDecodeErrorKind) -> Self {
        WalDecodeError { lsn, kind }
    }

    /// True if the WAL ends in zeros here: a zero record length, or a zeroed page header.
    pub fn is_zeroed(&self) -> bool {
        matches!(
            self.kind,
            WalDecodeErrorKind::RecordTooShort(0) | WalDecodeErrorKind::BadMagic(0)
        )
    }
}

/// A record being reassembled.
#[derive(Debug)]
struct PartialRecord {
    start: Lsn,
    total_len: u32,
    /// The record bytes collected so far (page headers stripped).
    buf: BytesMut,
    header_checked: bool,
}

#[derive(Debug)]
enum State {
    /// The next record starts at `pos` once MAXALIGNed (after a page header if on a boundary).
    RecordStart,
    /// At a page boundary; skip data continued from an earlier record (XLogFindNextRecord).
    FindFirstRecord,
    /// Collecting a record.
    InRecord(PartialRecord),
    /// Ignoring bytes up to `target`, then continuing in FindFirstRecord or RecordStart.
    SkipTo { target: Lsn, find_first: bool },
}

/// Outcome of one decoding step.
enum Step {
    Progress,
    NeedMore,
    Record(Box<DecodedWalRecord>),
}

/// Streaming WAL decoder; see the module documentation.
#[derive(Debug)]
pub struct WalStreamDecoder {
    seg_size_bytes: u64,
    /// LSN of `inbuf[0]`.
    pos: Lsn,
    inbuf: BytesMut,
    state: State,
    /// Start of the last record returned: the next record's xl_prev must equal it.
    prev_record: Option<Lsn>,
    latest_page: Lsn,
    latest_page_tli: u32,
    sysid: Option<u64>,
    error: Option<WalDecodeError>,
}

impl WalStreamDecoder {
    /// A decoder for WAL starting at `start_lsn`: a record start, or the page boundary just
    /// before one (its page header is then expected first). `wal_seg_size` is the segment
    /// size in bytes (see [`crate::xlog_utils::check_segment_size`]).
    ///
    /// The first record's xl_prev is only checked to lie before it, unless
    /// [`Self::set_prev_record_lsn`] is called.
    pub fn new(start_lsn: Lsn, wal_seg_size: u64) -> Self {
        Self::with_state(start_lsn, wal_seg_size, State::RecordStart)
    }

    /// A decoder that starts at the page boundary `page_lsn` and, like PostgreSQL's
    /// XLogFindNextRecord, skips the continuation of a record begun on earlier pages
    /// (using xlp_rem_len), so that the first record returned is the first one that starts
    /// at or after `page_lsn`.
    pub fn new_find_first(page_lsn: Lsn, wal_seg_size: u64) -> Self {
        Self::with_state(page_lsn, wal_seg_size, State::FindFirstRecord)
    }

    fn with_state(start: Lsn, seg_size_bytes: u64, state: State) -> Self {
        let mut dec = WalStreamDecoder {
            seg_size_bytes,
            pos: start,
            inbuf: BytesMut::new(),
            state,
            prev_record: None,
            latest_page: Lsn::INVALID,
            latest_page_tli: 0,
            sysid: None,
            error: None,
        };
        let bad_start = match dec.state {
            State::FindFirstRecord => !start.0.is_multiple_of(PAGE_BYTES),
            _ => !dec.is_plausible_record_start(start),
        };
        let kind = if crate::xlog_utils::check_segment_size(seg_size_bytes).is_err() {
            Some(WalDecodeErrorKind::BadSegmentSize(seg_size_bytes))
        } else if bad_start {
            Some(WalDecodeErrorKind::InvalidRecordOffset)
        } else {
            None
        };
        dec.error = kind.map(|kind| WalDecodeError::new(start, kind));
        dec
    }

    /// Requires the first record's xl_prev to be exactly `prev` (PostgreSQL's sequential
    /// reading check), for callers that know the previous record.
    pub fn set_prev_record_lsn(&mut self, prev: Lsn) {
        self.prev_record = Some(prev);
    }

    /// Requires every long page header to carry this system identifier. Without it, the
    /// first long header seen sets the identifier the others must match.
    pub fn set_system_id(&mut self, sysid: u64) {
        self.sysid = Some(sysid);
    }

    /// Appends WAL bytes; they must continue exactly where the previous ones ended.
    pub fn feed_bytes(&mut self, buf: &[u8]) {
        let end = self.available_lsn().0.checked_add(buf.len() as u64);
        if end.is_none() && self.error.is_none() {
            let err = WalDecodeError::new(self.available_lsn(), WalDecodeErrorKind::LsnOverflow);
            self.error = Some(err);
        }
        if self.error.is_none() {
            self.inbuf.extend_from_slice(buf);
        }
    }

    /// The LSN just after the last byte fed.
    pub fn available_lsn(&self) -> Lsn {
        Lsn(self.pos.0.saturating_add(self.inbuf.len() as u64))
    }

    /// The position up to which input has been consumed.
    pub fn position(&self) -> Lsn {
        self.pos
    }

    /// The start of the record being reassembled, if the decoder is inside one.
    pub fn partial_record_lsn(&self) -> Option<Lsn> {
        match &self.state {
            State::InRecord(p) => Some(p.start),
            _ => None,
        }
    }

    /// Start of the last record returned, if any (or the one set with
    /// [`Self::set_prev_record_lsn`]).
    pub fn prev_record_lsn(&self) -> Option<Lsn> {
        self.prev_record
    }

    /// Decodes the next record if all its bytes are there. `Ok(None)` means more bytes are
    /// needed; `Err` means the WAL is invalid here (usually: it ends here).
    pub fn poll_decode(&mut self) -> Result<Option<DecodedWalRecord>, WalDecodeError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        loop {
            match self.step() {
                Ok(Step::Progress) => continue,
                Ok(Step::NeedMore) => return Ok(None),
                Ok(Step::Record(rec)) => return Ok(Some(*rec)),
                Err(err) => {
                    self.error = Some(err.clone());
                    return Err(err);
                }
            }
        }
    }

    fn step(&mut self) -> Result<Step, WalDecodeError> {
        if let State::SkipTo { target, find_first } = self.state {
            return Ok(self.skip_to(target, find_first));
        }
        if self.pos.0.is_multiple_of(PAGE_BYTES) {
            return self.process_page_header();
        }
        match self.state {
            State::RecordStart => self.start_record(),
            State::InRecord(_) => self.continue_record(),
            // FindFirstRecord always sits on a page boundary, and SkipTo is handled above.
            State::FindFirstRecord | State::SkipTo { .. } => {
                Err(self.error_here(WalDecodeErrorKind::InvalidRecordOffset))
            }
        }
    }

    fn error_here(&self, kind: WalDecodeErrorKind) -> WalDecodeError {
        WalDecodeError::new(self.pos, kind)
    }

    /// Consumes `n` input bytes (which must be buffered).
    fn consume(&mut self, n: usize) {
        self.inbuf.advance(n);
        self.pos = Lsn(self.pos.0 + n as u64);
    }

    fn skip_to(&mut self, target: Lsn, find_first: bool) -> Step {
        let wanted = target.0.saturating_sub(self.pos.0);
        let n = wanted.min(self.inbuf.len() as u64) as usize;
        self.consume(n);
        if self.pos < target {
            return Step::NeedMore;
        }
        self.state = if find_first {
            State::FindFirstRecord
        } else {
            State::RecordStart
        };
        Step::Progress
    }

    /// A record can start at a MAXALIGNed position past the page header (or on a page
    /// boundary, meaning right after that page's header).
    fn is_plausible_record_start(&self, lsn: Lsn) -> bool {
        let page_off = (lsn.0 % PAGE_BYTES) as usize;
        let min_off = if self.seg_size_bytes != 0 && lsn.0 % self.seg_size_bytes == page_off as u64
        {
            LONG_PHD
        } else {
            SHORT_PHD
        };
        page_off == 0 || page_off >= min_off
    }

    /// Parses, validates and consumes the header of the page starting at `pos`.
    fn process_page_header(&mut self) -> Result<Step, WalDecodeError> {
        if self.inbuf.len() < SHORT_PHD {
            return Ok(Step::NeedMore);
        }
        let hdr = XLogPageHeaderData::from_bytes(&self.inbuf)
            .map_err(|_| self.error_here(WalDecodeErrorKind::InvalidRecordOffset))?;
        let hdr_len = if hdr.xlp_info & XLP_LONG_HEADER != 0 {
            LONG_PHD
        } else {
            SHORT_PHD
        };
        if self.inbuf.len() < hdr_len {
            return Ok(Step::NeedMore);
        }
        self.validate_page_header(&hdr)?;
        self.check_contrecord(&hdr, hdr_len)?;
        self.consume(hdr_len);
        Ok(Step::Progress)
    }

    /// The checks of XLogReaderValidatePageHeader.
    fn validate_page_header(&mut self, hdr: &XLogPageHeaderData) -> Result<(), WalDecodeError> {
        use WalDecodeErrorKind as K;
        if hdr.xlp_magic != XLOG_PAGE_MAGIC {
            return Err(self.error_here(K::BadMagic(hdr.xlp_magic)));
        }
        if hdr.xlp_info & !XLP_ALL_FLAGS != 0 {
            return Err(self.error_here(K::BadPageInfo(hdr.xlp_info)));
        }
        if hdr.xlp_info & XLP_LONG_HEADER != 0 {
            self.validate_long_header()?;
        } else if self.pos.0.is_multiple_of(self.seg_size_bytes) {
            return Err(self.error_here(K::MissingLongHeader(hdr.xlp_info)));
        }
        if hdr.xlp_pageaddr != self.pos {
            return Err(self.error_here(K::UnexpectedPageAddr(hdr.xlp_pageaddr)));
        }
        if self.pos > self.latest_page && hdr.xlp_tli < self.latest_page_tli {
            return Err(self.error_here(K::TimelineBackwards {
                tli: hdr.xlp_tli,
                prev_tli: self.latest_page_tli,
            }));
        }
        self.latest_page = self.pos;
        self.latest_page_tli = hdr.xlp_tli;
        Ok(())
    }

    fn validate_long_header(&mut self) -> Result<(), WalDecodeError> {
        use WalDecodeErrorKind as K;
        let long = XLogLongPageHeaderData::from_bytes(&self.inbuf)
            .map_err(|_| self.error_here(K::InvalidRecordOffset))?;
        match self.sysid {
            Some(expected) if expected != long.xlp_sysid => {
                return Err(self.error_here(K::SystemIdMismatch {
                    expected,
                    found: long.xlp_sysid,
                }));
            }
            Some(_) => {}
            None => self.sysid = Some(long.xlp_sysid),
        }
        if u64::from(long.xlp_seg_size) != self.seg_size_bytes {
            return Err(self.error_here(K::WrongSegmentSize(long.xlp_seg_size)));
        }
        if long.xlp_xlog_blcksz as usize != XLOG_BLCKSZ {
            return Err(self.error_here(K::WrongBlockSize(long.xlp_xlog_blcksz)));
        }
        Ok(())
    }

    /// Checks the page's continuation flags against what the decoder expects, and moves to
    /// the state that follows the header.
    fn check_contrecord(
        &mut self,
        hdr: &XLogPageHeaderData,
        hdr_len: usize,
    ) -> Result<(), WalDecodeError> {
        use WalDecodeErrorKind as K;
        let is_cont = hdr.xlp_info & XLP_FIRST_IS_CONTRECORD != 0;
        if !is_cont && hdr.xlp_rem_len != 0 {
            return Err(self.error_here(K::RemLenWithoutContrecord(hdr.xlp_rem_len)));
        }
        if let State::InRecord(partial) = &self.state {
            if hdr.xlp_info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                // The record we were reading was aborted and overwritten: read the page as
                // a fresh start. xl_prev of the next record points before the aborted one.
                self.state = State::RecordStart;
            } else if !is_cont {
                return Err(WalDecodeError::new(partial.start, K::MissingContrecord));
            } else {
                let expected = u64::from(partial.total_len) - partial.buf.len() as u64;
                if hdr.xlp_rem_len == 0 || u64::from(hdr.xlp_rem_len) != expected {
                    return Err(WalDecodeError::new(
                        partial.start,
                        K::ContrecordLength {
                            rem_len: hdr.xlp_rem_len,
                            expected,
                        },
                    ));
                }
                return Ok(());
            }
        }
        match self.state {
            State::FindFirstRecord if is_cont => {
                let page = self.pos.0;
                let skip = maxalign(hdr.xlp_rem_len as usize) as u64;
                self.state = if skip >= PAGE_BYTES - hdr_len as u64 {
                    State::SkipTo {
                        target: Lsn(page + PAGE_BYTES),
                        find_first: true,
                    }
                } else {
                    State::SkipTo {
                        target: Lsn(page + hdr_len as u64 + skip),
                        find_first: false,
                    }
                };
                Ok(())
            }
            State::FindFirstRecord => {
                self.state = State::RecordStart;
                Ok(())
            }
            _ if is_cont => Err(WalDecodeError::new(
                Lsn(self.pos.0 + hdr_len as u64),
                K::UnexpectedContrecord,
            )),
            _ => Ok(()),
        }
    }

    /// At a possible record start: skip alignment padding, read xl_tot_len and, if the whole
    /// header is on this page, validate it (like XLogDecodeNextRecord).
    fn start_record(&mut self) -> Result<Step, WalDecodeError> {
        let aligned = maxalign((self.pos.0 % PAGE_BYTES) as usize) as u64;
        let padding = aligned - self.pos.0 % PAGE_BYTES;
        if padding > 0 {
            if (self.inbuf.len() as u64) < padding {
                return Ok(Step::NeedMore);
            }
            self.consume(padding as usize);
            return Ok(Step::Progress);
        }
        if !self.is_plausible_record_start(self.pos) {
            return Err(self.error_here(WalDecodeErrorKind::InvalidRecordOffset));
        }
        let page_remaining = (PAGE_BYTES - self.pos.0 % PAGE_BYTES) as usize;
        if self.inbuf.len() < RECORD_HEADER.min(page_remaining) {
            return Ok(Step::NeedMore);
        }
        // xl_tot_len never crosses a page: records start MAXALIGNed.
        let Ok(total_len) = Reader::new(&self.inbuf).u32("xl_tot_len") else {
            return Ok(Step::NeedMore);
        };
        let mut header_checked = false;
        if let Some(hdr) =
            XLogRecordHeader::from_bytes(&self.inbuf[..page_remaining.min(self.inbuf.len())])
        {
            self.validate_record_header(self.pos, &hdr)?;
            header_checked = true;
        } else {
            self.check_total_len(self.pos, total_len)?;
        }
        self.state = State::InRecord(PartialRecord {
            start: self.pos,
            total_len,
            buf: BytesMut::new(),
            header_checked,
        });
        Ok(Step::Progress)
    }

    fn check_total_len(&self, start: Lsn, total_len: u32) -> Result<(), WalDecodeError> {
        if (total_len as usize) < RECORD_HEADER {
            return Err(WalDecodeError::new(
                start,
                WalDecodeErrorKind::RecordTooShort(total_len),
            ));
        }
        if total_len as usize > MAX_RECORD_LEN_BYTES {
            return Err(WalDecodeError::new(
                start,
                WalDecodeErrorKind::RecordTooLong(total_len),
            ));
        }
        Ok(())
    }

    /// ValidXLogRecordHeader: length, resource manager and prev-link.
    fn validate_record_header(
        &self,
        start: Lsn,
        hdr: &XLogRecordHeader,
    ) -> Result<(), WalDecodeError> {
        self.check_total_len(start, hdr.xl_tot_len)?;
        if !rmgr_id_is_valid(hdr.xl_rmid) {
            return Err(WalDecodeError::new(
                start,
                WalDecodeErrorKind::InvalidRmgr(hdr.xl_rmid),
            ));
        }
        let prev_ok = match self.prev_record {
            Some(prev) => hdr.xl_prev == prev,
            None => hdr.xl_prev < start,
        };
        if !prev_ok {
            return Err(WalDecodeError::new(
                start,
                WalDecodeErrorKind::BadPrevLink(hdr.xl_prev),
            ));
        }
        Ok(())
    }

    /// Collects the record's bytes on the current page; finishes it when complete.
    fn continue_record(&mut self) -> Result<Step, WalDecodeError> {
        let mut partial = match std::mem::replace(&mut self.state, State::RecordStart) {
            State::InRecord(partial) => partial,
            other => {
                self.state = other;
                return Ok(Step::Progress);
            }
        };
        let got_bytes = self.collect_record_bytes(&mut partial);
        if !partial.header_checked {
            // The header was split across pages: validate it once it is complete.
            if let Some(hdr) = XLogRecordHeader::from_bytes(&partial.buf) {
                self.validate_record_header(partial.start, &hdr)?;
                partial.header_checked = true;
            }
        }
        if partial.buf.len() == partial.total_len as usize {
            return self.finish_record(partial);
        }
        self.state = State::InRecord(partial);
        Ok(if got_bytes {
            Step::Progress
        } else {
            Step::NeedMore
        })
    }

    /// Moves the record's bytes on the current page from the input into `partial`, without
    /// copying when the whole record is on this page. Returns false if no bytes were there.
    fn collect_record_bytes(&mut self, partial: &mut PartialRecord) -> bool {
        let remaining = partial.total_len as usize - partial.buf.len();
        let page_remaining = (PAGE_BYTES - self.pos.0 % PAGE_BYTES) as usize;
        if partial.buf.is_empty() && remaining <= page_remaining {
            if self.inbuf.len() < remaining {
                return false;
            }
            partial.buf = self.inbuf.split_to(remaining);
            self.pos = Lsn(self.pos.0 + remaining as u64);
            return true;
        }
        let n = remaining.min(page_remaining).min(self.inbuf.len());
        partial.buf.extend_from_slice(&self.inbuf[..n]);
        self.consume(n);
        n > 0
    }

    /// Verifies the CRC of the complete record, decodes it, and sets up for the next one.
    fn finish_record(&mut self, partial: PartialRecord) -> Result<Step, WalDecodeError> {
        let start = partial.start;
        let record: Bytes = partial.buf.freeze();
        let header = XLogRecordHeader::from_bytes(&record)
            .ok_or_else(|| WalDecodeError::new(start, WalDecodeErrorKind::RecordTooShort(0)))?;
        let computed = record_crc32c(&record);
        if computed != header.xl_crc {
            return Err(WalDecodeError::new(
                start,
                WalDecodeErrorKind::BadCrc {
                    stored: header.xl_crc,
                    computed,
                },
            ));
        }
        let end_lsn = self.end_lsn_of(&header)?;
        let decoded = decode_record(start, end_lsn, header, record)
            .map_err(|e| WalDecodeError::new(start, e.into()))?;
        self.prev_record = Some(start);
        if header.is_xlog_switch() {
            self.state = State::SkipTo {
                target: end_lsn,
                find_first: false,
            };
        }
        Ok(Step::Record(Box::new(decoded)))
    }

    /// EndRecPtr of a record whose last byte was just consumed: MAXALIGNed, and rounded up
    /// to the next segment for XLOG SWITCH.
    fn end_lsn_of(&self, header: &XLogRecordHeader) -> Result<Lsn, WalDecodeError> {
        let overflow = || self.error_here(WalDecodeErrorKind::LsnOverflow);
        let aligned = self.pos.0.checked_add(7).ok_or_else(overflow)? & !7;
        if !header.is_xlog_switch() {
            return Ok(Lsn(aligned));
        }
        let seg = self.seg_size_bytes;
        let rounded = aligned.checked_add(seg - 1).ok_or_else(overflow)? / seg * seg;
        Ok(Lsn(rounded))
    }
}

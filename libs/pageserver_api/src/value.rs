//! What the pageserver stores under a key at an LSN: a full image, or a WAL record to apply
//! on top of the previous version.
//!
//! # Binary encoding
//!
//! Our own format (not bincode). All integers are big-endian; `bool` and option flags are one
//! byte, 0 or 1; byte strings and lists carry a `u32` count. A value is exactly one encoding:
//! decoding rejects unknown tags, other flag bytes, short input and trailing bytes, and the
//! whole encoding is at most [`MAX_VALUE_BYTES`].
//!
//! ```text
//! Value := 0x00 len:u32 bytes[len]                            Image
//!        | 0x01 NeonWalRecord                                 WalRecord
//! NeonWalRecord :=
//!     0x00 will_init:bool len:u32 rec[len]                    Postgres
//!   | 0x01 new_heap_blkno:opt_u32 old_heap_blkno:opt_u32 flags:u8
//!                                                             ClearVisibilityMapFlags
//!   | 0x02 trunc_byte:u32 trunc_offs:u8                       TruncateVisibilityMap
//!   | 0x03 n:u32 xid:u32 × n timestamp:i64                    ClogSetCommitted
//!   | 0x04 n:u32 xid:u32 × n                                  ClogSetAborted
//!   | 0x05 mid:u32 moff:u32                                   MultixactOffsetCreate
//!   | 0x06 moff:u32 n:u32 (xid:u32 status:u8) × n             MultixactMembersCreate
//! opt_u32 := 0x00 | 0x01 u32
//! ```

use bytes::Bytes;

/// Largest encoded value: any WAL record the decoder accepts (1 GiB, PostgreSQL's allocation
/// limit) plus room for the envelope.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024 * 1024 + 1024;

const VALUE_TAG_IMAGE: u8 = 0;
const VALUE_TAG_WAL_RECORD: u8 = 1;

const REC_TAG_POSTGRES: u8 = 0;
const REC_TAG_CLEAR_VM_FLAGS: u8 = 1;
const REC_TAG_TRUNCATE_VM: u8 = 2;
const REC_TAG_CLOG_COMMITTED: u8 = 3;
const REC_TAG_CLOG_ABORTED: u8 = 4;
const REC_TAG_MULTIXACT_OFFSET: u8 = 5;
const REC_TAG_MULTIXACT_MEMBERS: u8 = 6;

/// Encoded size of one multixact member.
const MEMBER_BYTES: usize = 5;

/// A stored version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// The whole object (e.g. an 8 KiB page, a relation size, a relmap file).
    Image(Bytes),
    /// A change to apply to the previous version.
    WalRecord(NeonWalRecord),
}

/// Why bytes are not an encoded [`Value`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueDecodeError {
    #[error("value is {0} bytes, more than the maximum {MAX_VALUE_BYTES}")]
    TooLarge(usize),
    #[error("value ends at byte {len} but {needed} more bytes are needed at {offset}")]
    Truncated {
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("unknown value tag {0}")]
    UnknownValueTag(u8),
    #[error("unknown WAL record tag {0}")]
    UnknownRecordTag(u8),
    #[error("byte {byte} at {offset} is not a flag (0 or 1)")]
    BadFlag { offset: usize, byte: u8 },
    #[error("{0} bytes after the end of the value")]
    TrailingBytes(usize),
}

/// Why a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueEncodeError {
    #[error("value would encode to {0} bytes, more than the maximum {MAX_VALUE_BYTES}")]
    TooLarge(u64),
}

impl Value {
    /// Whether this version can be rebuilt without any older version.
    pub fn will_init(&self) -> bool {
        match self {
            Value::Image(_) => true,
            Value::WalRecord(rec) => rec.will_init(),
        }
    }

    /// Size of the encoding in bytes (computed without encoding; may exceed the maximum).
    pub fn ser_size(&self) -> u64 {
        1 + match self {
            Value::Image(img) => 4 + img.len() as u64,
            Value::WalRecord(rec) => rec.ser_size(),
        }
    }

    /// Appends the encoding to `out`; appends nothing if it would exceed [`MAX_VALUE_BYTES`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ValueEncodeError> {
        let size = self.ser_size();
        if size > MAX_VALUE_BYTES as u64 {
            return Err(ValueEncodeError::TooLarge(size));
        }
        out.reserve(size as usize);
        // Every length below fits in u32: the whole value is at most MAX_VALUE_BYTES < 4 GiB.
        match self {
            Value::Image(img) => {
                out.push(VALUE_TAG_IMAGE);
                put_bytes(out, img);
            }
            Value::WalRecord(rec) => {
                out.push(VALUE_TAG_WAL_RECORD);
                rec.encode_body(out);
            }
        }
        Ok(())
    }

    /// The encoding as a new buffer.
    pub fn encode_to_vec(&self) -> Result<Vec<u8>, ValueEncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one value filling all of `buf` (copying its byte strings).
    pub fn decode(buf: &[u8]) -> Result<Value, ValueDecodeError> {
        Value::decode_bytes(&Bytes::copy_from_slice(buf))
    }

    /// Like [`Value::decode`], but byte strings share `buf`'s memory.
    pub fn decode_bytes(buf: &Bytes) -> Result<Value, ValueDecodeError> {
        if buf.len() > MAX_VALUE_BYTES {
            return Err(ValueDecodeError::TooLarge(buf.len()));
        }
        let mut r = Reader { buf, pos: 0 };
        let value = match r.u8()? {
            VALUE_TAG_IMAGE => Value::Image(r.bytes()?),
            VALUE_TAG_WAL_RECORD => Value::WalRecord(NeonWalRecord::decode_body(&mut r)?),
            tag => return Err(ValueDecodeError::UnknownValueTag(tag)),
        };
        match buf.len() - r.pos {
            0 => Ok(value),
            extra => Err(ValueDecodeError::TrailingBytes(extra)),
        }
    }
}

/// Status of a multixact member (MultiXactStatus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiXactMember {
    pub xid: u32,
    pub status: u8,
}

/// A change to a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeonWalRecord {
    /// A PostgreSQL WAL record, replayed by `postgres --wal-redo`. `rec` is the whole record
    /// (header and body, exactly xl_tot_len bytes); it is applied with the record's end LSN.
    /// `will_init`: the record rebuilds the page without reading it (WILL_INIT or an FPI).
    Postgres { will_init: bool, rec: Bytes },
    /// Clear visibility-map bits of heap blocks (heap records clear them during redo without
    /// registering the VM page). `flags`: VISIBILITYMAP_ALL_VISIBLE (1) | ALL_FROZEN (2).
    ClearVisibilityMapFlags {
        new_heap_blkno: Option<u32>,
        old_heap_blkno: Option<u32>,
        flags: u8,
    },
    /// Truncation of the visibility map: clear the bits past `trunc_byte`/`trunc_offs` on the
    /// last remaining VM page.
    TruncateVisibilityMap { trunc_byte: u32, trunc_offs: u8 },
    /// Mark xids committed in a CLOG page (with the commit timestamp, PostgreSQL epoch µs).
    ClogSetCommitted { xids: Vec<u32>, timestamp: i64 },
    /// Mark xids aborted in a CLOG page.
    ClogSetAborted { xids: Vec<u32> },
    /// Set a multixact's starting member offset in a pg_multixact/offsets page.
    MultixactOffsetCreate { mid: u32, moff: u32 },
    /// Write multixact members into a pg_multixact/members page.
    MultixactMembersCreate {
        moff: u32,
        members: Vec<MultiXactMember>,
    },
}

impl NeonWalRecord {
    pub fn will_init(&self) -> bool {
        matches!(
            self,
            NeonWalRecord::Postgres {
                will_init: true,
                ..
            }
        )
    }

    /// Encoded size including the record tag.
    fn ser_size(&self) -> u64 {
        let opt = |o: &Option<u32>| if o.is_some() { 5 } else { 1 };
        1 + match self {
            NeonWalRecord::Postgres { rec, .. } => 1 + 4 + rec.len() as u64,
            NeonWalRecord::ClearVisibilityMapFlags {
                new_heap_blkno,
                old_heap_blkno,
                ..
            } => opt(new_heap_blkno) + opt(old_heap_blkno) + 1,
            NeonWalRecord::TruncateVisibilityMap { .. } => 4 + 1,
            NeonWalRecord::ClogSetCommitted { xids, .. } => 4 + 4 * xids.len() as u64 + 8,
            NeonWalRecord::ClogSetAborted { xids } => 4 + 4 * xids.len() as u64,
            NeonWalRecord::MultixactOffsetCreate { .. } => 4 + 4,
            NeonWalRecord::MultixactMembersCreate { members, .. } => {
                4 + 4 + (MEMBER_BYTES * members.len()) as u64
            }
        }
    }

    /// Appends the record tag and fields. The caller has checked the size bound.
    fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            NeonWalRecord::Postgres { will_init, rec } => {
                out.push(REC_TAG_POSTGRES);
                out.push(u8::from(*will_init));
                put_bytes(out, rec);
            }
            NeonWalRecord::ClearVisibilityMapFlags {
                new_heap_blkno,
                old_heap_blkno,
                flags,
            } => {
                out.push(REC_TAG_CLEAR_VM_FLAGS);
                put_opt_u32(out, *new_heap_blkno);
                put_opt_u32(out, *old_heap_blkno);
                out.push(*flags);
            }
            NeonWalRecord::TruncateVisibilityMap {
                trunc_byte,
                trunc_offs,
            } => {
                out.push(REC_TAG_TRUNCATE_VM);
                out.extend_from_slice(&trunc_byte.to_be_bytes());
                out.push(*trunc_offs);
            }
            NeonWalRecord::ClogSetCommitted { xids, timestamp } => {
                out.push(REC_TAG_CLOG_COMMITTED);
                put_u32_list(out, xids);
                out.extend_from_slice(&timestamp.to_be_bytes());
            }
            NeonWalRecord::ClogSetAborted { xids } => {
                out.push(REC_TAG_CLOG_ABORTED);
                put_u32_list(out, xids);
            }
            NeonWalRecord::MultixactOffsetCreate { mid, moff } => {
                out.push(REC_TAG_MULTIXACT_OFFSET);
                out.extend_from_slice(&mid.to_be_bytes());
                out.extend_from_slice(&moff.to_be_bytes());
            }
            NeonWalRecord::MultixactMembersCreate { moff, members } => {
                out.push(REC_TAG_MULTIXACT_MEMBERS);
                out.extend_from_slice(&moff.to_be_bytes());
                put_len(out, members.len());
                for m in members {
                    out.extend_from_slice(&m.xid.to_be_bytes());
                    out.push(m.status);
                }
            }
        }
    }

    /// Reads the record tag and fields.
    fn decode_body(r: &mut Reader<'_>) -> Result<NeonWalRecord, ValueDecodeError> {
        Ok(match r.u8()? {
            REC_TAG_POSTGRES => NeonWalRecord::Postgres {
                will_init: r.flag()?,
                rec: r.bytes()?,
            },
            REC_TAG_CLEAR_VM_FLAGS => NeonWalRecord::ClearVisibilityMapFlags {
                new_heap_blkno: r.opt_u32()?,
                old_heap_blkno: r.opt_u32()?,
                flags: r.u8()?,
            },
            REC_TAG_TRUNCATE_VM => NeonWalRecord::TruncateVisibilityMap {
                trunc_byte: r.u32()?,
                trunc_offs: r.u8()?,
            },
            REC_TAG_CLOG_COMMITTED => NeonWalRecord::ClogSetCommitted {
                xids: r.u32_list()?,
                timestamp: i64::from_be_bytes(r.array()?),
            },
            REC_TAG_CLOG_ABORTED => NeonWalRecord::ClogSetAborted {
                xids: r.u32_list()?,
            },
            REC_TAG_MULTIXACT_OFFSET => NeonWalRecord::MultixactOffsetCreate {
                mid: r.u32()?,
                moff: r.u32()?,
            },
            REC_TAG_MULTIXACT_MEMBERS => NeonWalRecord::MultixactMembersCreate {
                moff: r.u32()?,
                members: r.members()?,
            },
            tag => return Err(ValueDecodeError::UnknownRecordTag(tag)),
        })
    }
}

/// A count or length; callers guarantee it fits (see [`MAX_VALUE_BYTES`]).
fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("bounded by MAX_VALUE_BYTES");
    out.extend_from_slice(&len.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put_opt_u32(out: &mut Vec<u8>, v: Option<u32>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn put_u32_list(out: &mut Vec<u8>, list: &[u32]) {
    put_len(out, list.len());
    for v in list {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A bounds-checked cursor over an encoded value.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    /// The next `n` bytes, if there are that many.
    fn take(&mut self, n: usize) -> Result<&[u8], ValueDecodeError> {
        let rest = self.buf.len() - self.pos;
        if n > rest {
            return Err(ValueDecodeError::Truncated {
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            });
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ValueDecodeError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self) -> Result<u8, ValueDecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, ValueDecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, ValueDecodeError> {
        let offset = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(ValueDecodeError::BadFlag { offset, byte }),
        }
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, ValueDecodeError> {
        Ok(if self.flag()? {
            Some(self.u32()?)
        } else {
            None
        })
    }

    /// A `u32` count of items of `item_bytes` each, checked against the remaining input
    /// before anything is allocated.
    fn count(&mut self, item_bytes: usize) -> Result<usize, ValueDecodeError> {
        let n = self.u32()? as usize;
        let needed = n.saturating_mul(item_bytes);
        if needed > self.buf.len() - self.pos {
            return Err(ValueDecodeError::Truncated {
                offset: self.pos,
                needed,
                len: self.buf.len(),
            });
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Bytes, ValueDecodeError> {
        let n = self.count(1)?;
        let start = self.pos;
        self.pos += n;
        Ok(self.buf.slice(start..start + n))
    }

    fn u32_list(&mut self) -> Result<Vec<u32>, ValueDecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.u32()).collect()
    }

    fn members(&mut self) -> Result<Vec<MultiXactMember>, ValueDecodeError> {
        let n = self.count(MEMBER_BYTES)?;
        (0..n)
            .map(|_| {
                Ok(MultiXactMember {
                    xid: self.u32()?,
                    status: self.u8()?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

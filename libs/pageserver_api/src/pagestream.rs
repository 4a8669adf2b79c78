//! The "pagestream" protocol between compute and pageserver, Neon's version 3.
//!
//! After `pagestream_v3 <tenant_id> <timeline_id>` and CopyBothResponse, each request and each
//! response is one libpq CopyData message holding exactly one of the messages below. All
//! integers are big-endian; LSNs are u64; `bool` is one byte, 0 or 1.
//!
//! ```text
//! header   := tag:u8 reqid:u64 request_lsn:u64 not_modified_since:u64
//! rel      := spcnode:u32 dbnode:u32 relnode:u32 forknum:u8
//! requests:  0 Exists          header rel
//!            1 Nblocks         header rel
//!            2 GetPage         header rel blkno:u32
//!            3 DbSize          header dbnode:u32
//!            4 GetSlruSegment  header kind:u8 segno:u32      (kind 0 clog, 1 members, 2 offsets)
//! responses (the header and body of the request echoed, under the response tag):
//!          100 Exists          header rel exists:bool
//!          101 Nblocks         header rel n_blocks:u32
//!          102 GetPage         header rel blkno:u32 page[8192]
//!          103 Error           header message-bytes 0x00     (the request header only)
//!          104 DbSize          header dbnode:u32 db_size:i64
//!          105 GetSlruSegment  header kind:u8 segno:u32 n_blocks:u32 data[n_blocks*8192]
//! ```
//!
//! Parsing is strict: an unknown tag, a message shorter or longer than its layout, a flag other
//! than 0/1, an unknown SLRU kind, an error message that is not UTF-8, contains a NUL or is
//! longer than [`MAX_ERROR_MESSAGE_BYTES`], or an SLRU segment of more than
//! [`MAX_SLRU_SEGMENT_BLOCKS`] blocks is an error.

use bytes::{BufMut, Bytes, BytesMut};
use postgres_ffi::pg_constants::BLCKSZ;
use utils::lsn::Lsn;

use crate::reltag::{RelTag, SlruKind};

/// Size of a page in GetPage and GetSlruSegment responses.
pub const PAGE_SZ: usize = BLCKSZ;
/// Blocks in an SLRU segment (SLRU_PAGES_PER_SEGMENT).
pub const MAX_SLRU_SEGMENT_BLOCKS: u32 = 32;
/// Longest error message, in bytes without the NUL terminator.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest message of the protocol (a full SLRU segment response).
pub const MAX_PAGESTREAM_MESSAGE_BYTES: usize =
    HEADER_BYTES + 1 + 4 + 4 + MAX_SLRU_SEGMENT_BLOCKS as usize * PAGE_SZ;

/// Size of the common header.
const HEADER_BYTES: usize = 1 + 8 + 8 + 8;
/// Size of a relation in a message.
const REL_BYTES: usize = 4 + 4 + 4 + 1;

const TAG_EXISTS: u8 = 0;
const TAG_NBLOCKS: u8 = 1;
const TAG_GET_PAGE: u8 = 2;
const TAG_DB_SIZE: u8 = 3;
const TAG_GET_SLRU_SEGMENT: u8 = 4;
const TAG_EXISTS_RESPONSE: u8 = 100;
const TAG_NBLOCKS_RESPONSE: u8 = 101;
const TAG_GET_PAGE_RESPONSE: u8 = 102;
const TAG_ERROR_RESPONSE: u8 = 103;
const TAG_DB_SIZE_RESPONSE: u8 = 104;
const TAG_GET_SLRU_SEGMENT_RESPONSE: u8 = 105;

/// Why bytes are not a pagestream message, or a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagestreamError {
    #[error("empty pagestream message")]
    Empty,
    #[error("unknown pagestream message tag {0}")]
    UnknownTag(u8),
    #[error("pagestream message with tag {tag} is {len} bytes, too short for its layout")]
    Truncated { tag: u8, len: usize },
    #[error("pagestream message with tag {tag} has {extra} bytes after its end")]
    TrailingBytes { tag: u8, extra: usize },
    #[error("byte {0} is not a boolean (0 or 1)")]
    BadFlag(u8),
    #[error("unknown SLRU kind {0}")]
    BadSlruKind(u8),
    #[error("page is {0} bytes, expected 8192")]
    BadPageSize(usize),
    #[error("SLRU segment of {0} bytes is not a whole number of at most 32 pages")]
    BadSegmentSize(usize),
    #[error("SLRU segment response claims {0} blocks, more than 32")]
    TooManySlruBlocks(u32),
    #[error("error message has no NUL terminator")]
    MissingNul,
    #[error("error message contains a NUL byte")]
    NulInMessage,
    #[error("error message is not UTF-8")]
    MessageNotUtf8,
    #[error("error message is {0} bytes, more than {MAX_ERROR_MESSAGE_BYTES}")]
    MessageTooLong(usize),
}

/// The fields every request carries and every response echoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagestreamRequestHeader {
    /// Chosen by the compute to match responses to requests.
    pub reqid: u64,
    /// Read as of this LSN; `u64::MAX` means the latest.
    pub request_lsn: Lsn,
    /// The object was not modified in (not_modified_since, request_lsn].
    pub not_modified_since: Lsn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagestreamExistsRequest {
    pub hdr: PagestreamRequestHeader,
    pub rel: RelTag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagestreamNblocksRequest {
    pub hdr: PagestreamRequestHeader,
    pub rel: RelTag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagestreamGetPageRequest {
    pub hdr: PagestreamRequestHeader,
    pub rel: RelTag,
    pub blkno: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagestreamDbSizeRequest {
    pub hdr: PagestreamRequestHeader,
    pub dbnode: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagestreamGetSlruSegmentRequest {
    pub hdr: PagestreamRequestHeader,
    pub kind: SlruKind,
    pub segno: u32,
}

/// A request, compute → pageserver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagestreamFeMessage {
    Exists(PagestreamExistsRequest),
    Nblocks(PagestreamNblocksRequest),
    GetPage(PagestreamGetPageRequest),
    DbSize(PagestreamDbSizeRequest),
    GetSlruSegment(PagestreamGetSlruSegmentRequest),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagestreamExistsResponse {
    pub req: PagestreamExistsRequest,
    pub exists: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagestreamNblocksResponse {
    pub req: PagestreamNblocksRequest,
    pub n_blocks: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagestreamGetPageResponse {
    pub req: PagestreamGetPageRequest,
    /// Exactly [`PAGE_SZ`] bytes.
    pub page: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagestreamErrorResponse {
    pub req: PagestreamRequestHeader,
    /// UTF-8 without NUL bytes, at most [`MAX_ERROR_MESSAGE_BYTES`].
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagestreamDbSizeResponse {
    pub req: PagestreamDbSizeRequest,
    /// Total size of the database's relations in bytes.
    pub db_size: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagestreamGetSlruSegmentResponse {
    pub req: PagestreamGetSlruSegmentRequest,
    /// The segment's pages: a multiple of [`PAGE_SZ`], at most [`MAX_SLRU_SEGMENT_BLOCKS`] pages.
    pub segment: Bytes,
}

/// A response, pageserver → compute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PagestreamBeMessage {
    Exists(PagestreamExistsResponse),
    Nblocks(PagestreamNblocksResponse),
    GetPage(PagestreamGetPageResponse),
    Error(PagestreamErrorResponse),
    DbSize(PagestreamDbSizeResponse),
    GetSlruSegment(PagestreamGetSlruSegmentResponse),
}

impl PagestreamFeMessage {
    /// The message's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            PagestreamFeMessage::Exists(_) => TAG_EXISTS,
            PagestreamFeMessage::Nblocks(_) => TAG_NBLOCKS,
            PagestreamFeMessage::GetPage(_) => TAG_GET_PAGE,
            PagestreamFeMessage::DbSize(_) => TAG_DB_SIZE,
            PagestreamFeMessage::GetSlruSegment(_) => TAG_GET_SLRU_SEGMENT,
        }
    }

    pub fn header(&self) -> &PagestreamRequestHeader {
        match self {
            PagestreamFeMessage::Exists(r) => &r.hdr,
            PagestreamFeMessage::Nblocks(r) => &r.hdr,
            PagestreamFeMessage::GetPage(r) => &r.hdr,
            PagestreamFeMessage::DbSize(r) => &r.hdr,
            PagestreamFeMessage::GetSlruSegment(r) => &r.hdr,
        }
    }

    /// The body of a CopyData message carrying this request.
    pub fn serialize(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_BYTES + REL_BYTES + 4);
        put_header(&mut out, self.tag(), self.header());
        self.put_body(&mut out);
        out.freeze()
    }

    /// The request's fields after the header (echoed in the response).
    fn put_body(&self, out: &mut BytesMut) {
        match self {
            PagestreamFeMessage::Exists(r) => put_rel(out, &r.rel),
            PagestreamFeMessage::Nblocks(r) => put_rel(out, &r.rel),
            PagestreamFeMessage::GetPage(r) => {
                put_rel(out, &r.rel);
                out.put_u32(r.blkno);
            }
            PagestreamFeMessage::DbSize(r) => out.put_u32(r.dbnode),
            PagestreamFeMessage::GetSlruSegment(r) => {
                out.put_u8(r.kind.as_u32() as u8);
                out.put_u32(r.segno);
            }
        }
    }

    /// Parses the body of one CopyData message.
    pub fn parse(buf: &[u8]) -> Result<PagestreamFeMessage, PagestreamError> {
        let mut r = Reader::new(buf)?;
        let tag = r.tag;
        let hdr = r.header()?;
        let msg = match tag {
            TAG_EXISTS => {
                PagestreamFeMessage::Exists(PagestreamExistsRequest { hdr, rel: r.rel()? })
            }
            TAG_NBLOCKS => {
                PagestreamFeMessage::Nblocks(PagestreamNblocksRequest { hdr, rel: r.rel()? })
            }
            TAG_GET_PAGE => PagestreamFeMessage::GetPage(r.get_page_request(hdr)?),
            TAG_DB_SIZE => PagestreamFeMessage::DbSize(PagestreamDbSizeRequest {
                hdr,
                dbnode: r.u32()?,
            }),
            TAG_GET_SLRU_SEGMENT => PagestreamFeMessage::GetSlruSegment(r.slru_request(hdr)?),
            _ => return Err(PagestreamError::UnknownTag(tag)),
        };
        r.finish()?;
        Ok(msg)
    }
}

impl PagestreamBeMessage {
    /// An error response to the request with header `req`. The message is cleaned to fit the
    /// protocol: NUL bytes become spaces and it is cut (at a character boundary) to at most
    /// [`MAX_ERROR_MESSAGE_BYTES`].
    pub fn error(req: PagestreamRequestHeader, message: impl std::fmt::Display) -> Self {
        let mut message = message.to_string().replace('\0', " ");
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        PagestreamBeMessage::Error(PagestreamErrorResponse { req, message })
    }

    /// The message's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            PagestreamBeMessage::Exists(_) => TAG_EXISTS_RESPONSE,
            PagestreamBeMessage::Nblocks(_) => TAG_NBLOCKS_RESPONSE,
            PagestreamBeMessage::GetPage(_) => TAG_GET_PAGE_RESPONSE,
            PagestreamBeMessage::Error(_) => TAG_ERROR_RESPONSE,
            PagestreamBeMessage::DbSize(_) => TAG_DB_SIZE_RESPONSE,
            PagestreamBeMessage::GetSlruSegment(_) => TAG_GET_SLRU_SEGMENT_RESPONSE,
        }
    }

    /// The echoed request header.
    pub fn header(&self) -> &PagestreamRequestHeader {
        match self {
            PagestreamBeMessage::Exists(r) => &r.req.hdr,
            PagestreamBeMessage::Nblocks(r) => &r.req.hdr,
            PagestreamBeMessage::GetPage(r) => &r.req.hdr,
            PagestreamBeMessage::Error(r) => &r.req,
            PagestreamBeMessage::DbSize(r) => &r.req.hdr,
            PagestreamBeMessage::GetSlruSegment(r) => &r.req.hdr,
        }
    }

    /// The request this response echoes (`None` for an error, which echoes only the header).
    pub fn request(&self) -> Option<PagestreamFeMessage> {
        Some(match self {
            PagestreamBeMessage::Exists(r) => PagestreamFeMessage::Exists(r.req),
            PagestreamBeMessage::Nblocks(r) => PagestreamFeMessage::Nblocks(r.req),
            PagestreamBeMessage::GetPage(r) => PagestreamFeMessage::GetPage(r.req),
            PagestreamBeMessage::Error(_) => return None,
            PagestreamBeMessage::DbSize(r) => PagestreamFeMessage::DbSize(r.req),
            PagestreamBeMessage::GetSlruSegment(r) => PagestreamFeMessage::GetSlruSegment(r.req),
        })
    }

    /// Whether this is a response to `req`: the same header, and for anything but an error the
    /// same kind of request with the same fields.
    pub fn answers(&self, req: &PagestreamFeMessage) -> bool {
        match self.request() {
            Some(echoed) => echoed == *req,
            None => self.header() == req.header(),
        }
    }

    /// The body of a CopyData message carrying this response. Fails if a page is not exactly
    /// [`PAGE_SZ`] bytes, a segment is not whole pages or too long, or an error message breaks
    /// the rules of [`PagestreamErrorResponse::message`].
    pub fn serialize(&self) -> Result<Bytes, PagestreamError> {
        self.check()?;
        let mut out = BytesMut::with_capacity(HEADER_BYTES + REL_BYTES + 8 + self.payload_len());
        put_header(&mut out, self.tag(), self.header());
        if let Some(req) = self.request() {
            req.put_body(&mut out);
        }
        match self {
            PagestreamBeMessage::Exists(r) => out.put_u8(u8::from(r.exists)),
            PagestreamBeMessage::Nblocks(r) => out.put_u32(r.n_blocks),
            PagestreamBeMessage::GetPage(r) => out.put_slice(&r.page),
            PagestreamBeMessage::Error(r) => {
                out.put_slice(r.message.as_bytes());
                out.put_u8(0);
            }
            PagestreamBeMessage::DbSize(r) => out.put_i64(r.db_size),
            PagestreamBeMessage::GetSlruSegment(r) => {
                out.put_u32((r.segment.len() / PAGE_SZ) as u32);
                out.put_slice(&r.segment);
            }
        }
        Ok(out.freeze())
    }

    /// Bytes of page data or message text.
    fn payload_len(&self) -> usize {
        match self {
            PagestreamBeMessage::GetPage(r) => r.page.len(),
            PagestreamBeMessage::Error(r) => r.message.len() + 1,
            PagestreamBeMessage::GetSlruSegment(r) => r.segment.len(),
            _ => 0,
        }
    }

    /// Checks what the types cannot express.
    fn check(&self) -> Result<(), PagestreamError> {
        match self {
            PagestreamBeMessage::GetPage(r) if r.page.len() != PAGE_SZ => {
                Err(PagestreamError::BadPageSize(r.page.len()))
            }
            PagestreamBeMessage::GetSlruSegment(r)
                if r.segment.len() % PAGE_SZ != 0
                    || r.segment.len() > MAX_SLRU_SEGMENT_BLOCKS as usize * PAGE_SZ =>
            {
                Err(PagestreamError::BadSegmentSize(r.segment.len()))
            }
            PagestreamBeMessage::Error(r) => check_message(r.message.as_bytes()),
            _ => Ok(()),
        }
    }

    /// Parses the body of one CopyData message.
    pub fn parse(buf: &[u8]) -> Result<PagestreamBeMessage, PagestreamError> {
        let mut r = Reader::new(buf)?;
        let tag = r.tag;
        let hdr = r.header()?;
        let msg = match tag {
            TAG_EXISTS_RESPONSE => PagestreamBeMessage::Exists(PagestreamExistsResponse {
                req: PagestreamExistsRequest { hdr, rel: r.rel()? },
                exists: r.flag()?,
            }),
            TAG_NBLOCKS_RESPONSE => PagestreamBeMessage::Nblocks(PagestreamNblocksResponse {
                req: PagestreamNblocksRequest { hdr, rel: r.rel()? },
                n_blocks: r.u32()?,
            }),
            TAG_GET_PAGE_RESPONSE => PagestreamBeMessage::GetPage(PagestreamGetPageResponse {
                req: r.get_page_request(hdr)?,
                page: Bytes::copy_from_slice(r.take(PAGE_SZ)?),
            }),
            TAG_ERROR_RESPONSE => PagestreamBeMessage::Error(PagestreamErrorResponse {
                req: hdr,
                message: r.message()?,
            }),
            TAG_DB_SIZE_RESPONSE => PagestreamBeMessage::DbSize(PagestreamDbSizeResponse {
                req: PagestreamDbSizeRequest {
                    hdr,
                    dbnode: r.u32()?,
                },
                db_size: i64::from_be_bytes(r.array()?),
            }),
            TAG_GET_SLRU_SEGMENT_RESPONSE => {
                PagestreamBeMessage::GetSlruSegment(PagestreamGetSlruSegmentResponse {
                    req: r.slru_request(hdr)?,
                    segment: r.segment()?,
                })
            }
            _ => return Err(PagestreamError::UnknownTag(tag)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Checks an error message against the protocol's rules.
fn check_message(message: &[u8]) -> Result<(), PagestreamError> {
    if message.len() > MAX_ERROR_MESSAGE_BYTES {
        return Err(PagestreamError::MessageTooLong(message.len()));
    }
    if message.contains(&0) {
        return Err(PagestreamError::NulInMessage);
    }
    Ok(())
}

fn put_header(out: &mut BytesMut, tag: u8, hdr: &PagestreamRequestHeader) {
    out.put_u8(tag);
    out.put_u64(hdr.reqid);
    out.put_u64(hdr.request_lsn.0);
    out.put_u64(hdr.not_modified_since.0);
}

fn put_rel(out: &mut BytesMut, rel: &RelTag) {
    out.put_u32(rel.spcnode);
    out.put_u32(rel.dbnode);
    out.put_u32(rel.relnode);
    out.put_u8(rel.forknum);
}

/// A bounds-checked cursor over one message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    tag: u8,
}

impl<'a> Reader<'a> {
    /// A reader positioned after the tag byte.
    fn new(buf: &'a [u8]) -> Result<Reader<'a>, PagestreamError> {
        let tag = *buf.first().ok_or(PagestreamError::Empty)?;
        Ok(Reader { buf, pos: 1, tag })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PagestreamError> {
        if n > self.buf.len() - self.pos {
            return Err(PagestreamError::Truncated {
                tag: self.tag,
                len: self.buf.len(),
            });
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PagestreamError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self) -> Result<u8, PagestreamError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, PagestreamError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, PagestreamError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, PagestreamError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(PagestreamError::BadFlag(b)),
        }
    }

    fn header(&mut self) -> Result<PagestreamRequestHeader, PagestreamError> {
        Ok(PagestreamRequestHeader {
            reqid: self.u64()?,
            request_lsn: Lsn(self.u64()?),
            not_modified_since: Lsn(self.u64()?),
        })
    }

    fn rel(&mut self) -> Result<RelTag, PagestreamError> {
        Ok(RelTag {
            spcnode: self.u32()?,
            dbnode: self.u32()?,
            relnode: self.u32()?,
            forknum: self.u8()?,
        })
    }

    fn get_page_request(
        &mut self,
        hdr: PagestreamRequestHeader,
    ) -> Result<PagestreamGetPageRequest, PagestreamError> {
        Ok(PagestreamGetPageRequest {
            hdr,
            rel: self.rel()?,
            blkno: self.u32()?,
        })
    }

    fn slru_request(
        &mut self,
        hdr: PagestreamRequestHeader,
    ) -> Result<PagestreamGetSlruSegmentRequest, PagestreamError> {
        let kind = self.u8()?;
        Ok(PagestreamGetSlruSegmentRequest {
            hdr,
            kind: SlruKind::from_u32(u32::from(kind)).ok_or(PagestreamError::BadSlruKind(kind))?,
            segno: self.u32()?,
        })
    }

    /// `n_blocks:u32` and that many pages.
    fn segment(&mut self) -> Result<Bytes, PagestreamError> {
        let n_blocks = self.u32()?;
        if n_blocks > MAX_SLRU_SEGMENT_BLOCKS {
            return Err(PagestreamError::TooManySlruBlocks(n_blocks));
        }
        Ok(Bytes::copy_from_slice(
            self.take(n_blocks as usize * PAGE_SZ)?,
        ))
    }

    /// A NUL-terminated message that must end the buffer.
    fn message(&mut self) -> Result<String, PagestreamError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(PagestreamError::MissingNul)?;
        let text = &rest[..nul];
        check_message(text)?;
        let text = std::str::from_utf8(text).map_err(|_| PagestreamError::MessageNotUtf8)?;
        self.pos += nul + 1;
        Ok(text.to_string())
    }

    /// Fails unless the whole buffer was read.
    fn finish(&self) -> Result<(), PagestreamError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(PagestreamError::TrailingBytes {
                tag: self.tag,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests;

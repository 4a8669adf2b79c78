use super::*;
use proptest::prelude::*;

fn hdr() -> PagestreamRequestHeader {
    PagestreamRequestHeader {
        reqid: 0x0102_0304_0506_0708,
        request_lsn: Lsn(u64::MAX),
        not_modified_since: Lsn(0x16B_5A50),
    }
}

fn rel() -> RelTag {
    RelTag {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
        forknum: 0,
    }
}

fn header_bytes(tag: u8) -> Vec<u8> {
    let mut v = vec![tag, 1, 2, 3, 4, 5, 6, 7, 8];
    v.extend_from_slice(&[0xFF; 8]);
    v.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x6B, 0x5A, 0x50]);
    v
}

const REL_WIRE: [u8; 13] = [0, 0, 6, 0x7F, 0, 0, 0, 5, 0, 0, 0x40, 0, 0];

#[test]
fn get_page_request_layout() {
    let msg = PagestreamFeMessage::GetPage(PagestreamGetPageRequest {
        hdr: hdr(),
        rel: rel(),
        blkno: 9,
    });
    let mut expect = header_bytes(2);
    expect.extend_from_slice(&REL_WIRE);
    expect.extend_from_slice(&[0, 0, 0, 9]);
    assert_eq!(&msg.serialize()[..], &expect[..]);
    assert_eq!(PagestreamFeMessage::parse(&expect), Ok(msg));
}

#[test]
fn request_layouts() {
    let cases: Vec<(PagestreamFeMessage, Vec<u8>)> = vec![
        (
            PagestreamFeMessage::Exists(PagestreamExistsRequest {
                hdr: hdr(),
                rel: rel(),
            }),
            [header_bytes(0), REL_WIRE.to_vec()].concat(),
        ),
        (
            PagestreamFeMessage::Nblocks(PagestreamNblocksRequest {
                hdr: hdr(),
                rel: rel(),
            }),
            [header_bytes(1), REL_WIRE.to_vec()].concat(),
        ),
        (
            PagestreamFeMessage::DbSize(PagestreamDbSizeRequest {
                hdr: hdr(),
                dbnode: 5,
            }),
            [header_bytes(3), vec![0, 0, 0, 5]].concat(),
        ),
        (
            PagestreamFeMessage::GetSlruSegment(PagestreamGetSlruSegmentRequest {
                hdr: hdr(),
                kind: SlruKind::MultiXactOffsets,
                segno: 3,
            }),
            [header_bytes(4), vec![2, 0, 0, 0, 3]].concat(),
        ),
    ];
    for (msg, bytes) in cases {
        assert_eq!(&msg.serialize()[..], &bytes[..], "{msg:?}");
        assert_eq!(PagestreamFeMessage::parse(&bytes), Ok(msg));
    }
}

#[test]
fn response_layouts() {
    let page = Bytes::from(vec![0xAB; PAGE_SZ]);
    let get_page = PagestreamGetPageRequest {
        hdr: hdr(),
        rel: rel(),
        blkno: 9,
    };
    let slru = PagestreamGetSlruSegmentRequest {
        hdr: hdr(),
        kind: SlruKind::Clog,
        segno: 1,
    };
    let cases: Vec<(PagestreamBeMessage, Vec<u8>)> = vec![
        (
            PagestreamBeMessage::Exists(PagestreamExistsResponse {
                req: PagestreamExistsRequest {
                    hdr: hdr(),
                    rel: rel(),
                },
                exists: true,
            }),
            [header_bytes(100), REL_WIRE.to_vec(), vec![1]].concat(),
        ),
        (
            PagestreamBeMessage::Nblocks(PagestreamNblocksResponse {
                req: PagestreamNblocksRequest {
                    hdr: hdr(),
                    rel: rel(),
                },
                n_blocks: 258,
            }),
            [header_bytes(101), REL_WIRE.to_vec(), vec![0, 0, 1, 2]].concat(),
        ),
        (
            PagestreamBeMessage::GetPage(PagestreamGetPageResponse {
                req: get_page,
                page: page.clone(),
            }),
            [
                header_bytes(102),
                REL_WIRE.to_vec(),
                vec![0, 0, 0, 9],
                page.to_vec(),
            ]
            .concat(),
        ),
        (
            PagestreamBeMessage::error(hdr(), "no such\0 rel"),
            [header_bytes(103), b"no such  rel\0".to_vec()].concat(),
        ),
        (
            PagestreamBeMessage::DbSize(PagestreamDbSizeResponse {
                req: PagestreamDbSizeRequest {
                    hdr: hdr(),
                    dbnode: 5,
                },
                db_size: 8192,
            }),
            [
                header_bytes(104),
                vec![0, 0, 0, 5],
                vec![0, 0, 0, 0, 0, 0, 0x20, 0],
            ]
            .concat(),
        ),
        (
            PagestreamBeMessage::GetSlruSegment(PagestreamGetSlruSegmentResponse {
                req: slru,
                segment: page.clone(),
            }),
            [
                header_bytes(105),
                vec![0, 0, 0, 0, 1],
                vec![0, 0, 0, 1],
                page.to_vec(),
            ]
            .concat(),
        ),
    ];
    for (msg, bytes) in cases {
        assert_eq!(&msg.serialize().unwrap()[..], &bytes[..], "{msg:?}");
        assert_eq!(PagestreamBeMessage::parse(&bytes), Ok(msg));
    }
}

#[test]
fn strict_parsing() {
    use PagestreamError::*;
    let good = PagestreamFeMessage::DbSize(PagestreamDbSizeRequest {
        hdr: hdr(),
        dbnode: 5,
    })
    .serialize()
    .to_vec();
    assert_eq!(PagestreamFeMessage::parse(&[]), Err(Empty));
    assert_eq!(
        PagestreamFeMessage::parse(&good[..good.len() - 1]),
        Err(Truncated { tag: 3, len: 28 })
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        PagestreamFeMessage::parse(&long),
        Err(TrailingBytes { tag: 3, extra: 1 })
    );
    let mut unknown = good.clone();
    unknown[0] = 99;
    assert_eq!(PagestreamFeMessage::parse(&unknown), Err(UnknownTag(99)));
    // Requests are not responses and vice versa.
    assert_eq!(PagestreamBeMessage::parse(&good), Err(UnknownTag(3)));
    let slru = [header_bytes(4), vec![3, 0, 0, 0, 3]].concat();
    assert_eq!(PagestreamFeMessage::parse(&slru), Err(BadSlruKind(3)));
    let exists = [header_bytes(100), REL_WIRE.to_vec(), vec![2]].concat();
    assert_eq!(PagestreamBeMessage::parse(&exists), Err(BadFlag(2)));
    let short_page = [header_bytes(102), REL_WIRE.to_vec(), vec![0; 4 + 8191]].concat();
    assert_eq!(
        PagestreamBeMessage::parse(&short_page),
        Err(Truncated {
            tag: 102,
            len: short_page.len()
        })
    );
    let too_many = [header_bytes(105), vec![0, 0, 0, 0, 1, 0, 0, 0, 33]].concat();
    assert_eq!(
        PagestreamBeMessage::parse(&too_many),
        Err(TooManySlruBlocks(33))
    );
    let no_nul = [header_bytes(103), b"oops".to_vec()].concat();
    assert_eq!(PagestreamBeMessage::parse(&no_nul), Err(MissingNul));
    let after_nul = [header_bytes(103), b"oo\0ps\0".to_vec()].concat();
    assert_eq!(
        PagestreamBeMessage::parse(&after_nul),
        Err(TrailingBytes { tag: 103, extra: 3 })
    );
    let not_utf8 = [header_bytes(103), vec![0xC3, 0x28, 0]].concat();
    assert_eq!(PagestreamBeMessage::parse(&not_utf8), Err(MessageNotUtf8));
}

#[test]
fn serialize_checks_sizes() {
    let page = |n| {
        PagestreamBeMessage::GetPage(PagestreamGetPageResponse {
            req: PagestreamGetPageRequest {
                hdr: hdr(),
                rel: rel(),
                blkno: 0,
            },
            page: Bytes::from(vec![0; n]),
        })
    };
    assert_eq!(
        page(8191).serialize(),
        Err(PagestreamError::BadPageSize(8191))
    );
    assert!(page(8192).serialize().is_ok());
    let seg = |n| {
        PagestreamBeMessage::GetSlruSegment(PagestreamGetSlruSegmentResponse {
            req: PagestreamGetSlruSegmentRequest {
                hdr: hdr(),
                kind: SlruKind::Clog,
                segno: 0,
            },
            segment: Bytes::from(vec![0; n]),
        })
    };
    assert_eq!(
        seg(100).serialize(),
        Err(PagestreamError::BadSegmentSize(100))
    );
    assert_eq!(
        seg(33 * PAGE_SZ).serialize(),
        Err(PagestreamError::BadSegmentSize(33 * PAGE_SZ))
    );
    let full = seg(32 * PAGE_SZ).serialize().unwrap();
    assert_eq!(full.len(), MAX_PAGESTREAM_MESSAGE_BYTES);
    assert!(seg(0).serialize().is_ok());
    let nul = PagestreamBeMessage::Error(PagestreamErrorResponse {
        req: hdr(),
        message: "a\0b".to_string(),
    });
    assert_eq!(nul.serialize(), Err(PagestreamError::NulInMessage));
    let long = PagestreamBeMessage::error(hdr(), "é".repeat(MAX_ERROR_MESSAGE_BYTES));
    let PagestreamBeMessage::Error(e) = &long else {
        panic!("not an error");
    };
    assert_eq!(e.message.len(), MAX_ERROR_MESSAGE_BYTES);
    assert!(long.serialize().is_ok());
}

#[test]
fn answers_matches_echo() {
    let req = PagestreamFeMessage::GetPage(PagestreamGetPageRequest {
        hdr: hdr(),
        rel: rel(),
        blkno: 9,
    });
    let resp = |blkno| {
        PagestreamBeMessage::GetPage(PagestreamGetPageResponse {
            req: PagestreamGetPageRequest {
                hdr: hdr(),
                rel: rel(),
                blkno,
            },
            page: Bytes::from(vec![0; PAGE_SZ]),
        })
    };
    assert!(resp(9).answers(&req));
    assert!(!resp(10).answers(&req));
    assert!(PagestreamBeMessage::error(hdr(), "x").answers(&req));
    let other = PagestreamRequestHeader { reqid: 1, ..hdr() };
    assert!(!PagestreamBeMessage::error(other, "x").answers(&req));
}

fn any_hdr() -> impl Strategy<Value = PagestreamRequestHeader> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(reqid, a, b)| PagestreamRequestHeader {
        reqid,
        request_lsn: Lsn(a),
        not_modified_since: Lsn(b),
    })
}

fn any_rel() -> impl Strategy<Value = RelTag> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u8>()).prop_map(
        |(spcnode, dbnode, relnode, forknum)| RelTag {
            spcnode,
            dbnode,
            relnode,
            forknum,
        },
    )
}

fn any_request() -> impl Strategy<Value = PagestreamFeMessage> {
    let kind = prop::sample::select(SlruKind::ALL.to_vec());
    prop_oneof![
        (any_hdr(), any_rel()).prop_map(|(hdr, rel)| PagestreamFeMessage::Exists(
            PagestreamExistsRequest { hdr, rel }
        )),
        (any_hdr(), any_rel()).prop_map(|(hdr, rel)| PagestreamFeMessage::Nblocks(
            PagestreamNblocksRequest { hdr, rel }
        )),
        (any_hdr(), any_rel(), any::<u32>()).prop_map(|(hdr, rel, blkno)| {
            PagestreamFeMessage::GetPage(PagestreamGetPageRequest { hdr, rel, blkno })
        }),
        (any_hdr(), any::<u32>()).prop_map(|(hdr, dbnode)| PagestreamFeMessage::DbSize(
            PagestreamDbSizeRequest { hdr, dbnode }
        )),
        (any_hdr(), kind, any::<u32>()).prop_map(|(hdr, kind, segno)| {
            PagestreamFeMessage::GetSlruSegment(PagestreamGetSlruSegmentRequest {
                hdr,
                kind,
                segno,
            })
        }),
    ]
}

/// A response to `req` (or an error) with payload derived from the other inputs.
fn response_to(
    req: PagestreamFeMessage,
    fill: u8,
    n: u32,
    error: Option<String>,
) -> PagestreamBeMessage {
    if let Some(msg) = error {
        return PagestreamBeMessage::error(*req.header(), msg);
    }
    match req {
        PagestreamFeMessage::Exists(req) => PagestreamBeMessage::Exists(PagestreamExistsResponse {
            req,
            exists: n % 2 == 1,
        }),
        PagestreamFeMessage::Nblocks(req) => {
            PagestreamBeMessage::Nblocks(PagestreamNblocksResponse { req, n_blocks: n })
        }
        PagestreamFeMessage::GetPage(req) => {
            PagestreamBeMessage::GetPage(PagestreamGetPageResponse {
                req,
                page: Bytes::from(vec![fill; PAGE_SZ]),
            })
        }
        PagestreamFeMessage::DbSize(req) => PagestreamBeMessage::DbSize(PagestreamDbSizeResponse {
            req,
            db_size: i64::from(n) * -3,
        }),
        PagestreamFeMessage::GetSlruSegment(req) => {
            let blocks = (n % (MAX_SLRU_SEGMENT_BLOCKS + 1)) as usize;
            PagestreamBeMessage::GetSlruSegment(PagestreamGetSlruSegmentResponse {
                req,
                segment: Bytes::from(vec![fill; blocks * PAGE_SZ]),
            })
        }
    }
}

proptest! {
    #[test]
    fn request_round_trip(req in any_request()) {
        let bytes = req.serialize();
        prop_assert_eq!(PagestreamFeMessage::parse(&bytes), Ok(req));
        prop_assert_eq!(bytes[0], req.tag());
        for len in 0..bytes.len() {
            prop_assert!(PagestreamFeMessage::parse(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn response_round_trip(req in any_request(), fill: u8, n: u32,
                           error in proptest::option::of("[^\0]{0,40}")) {
        let resp = response_to(req, fill, n, error);
        prop_assert!(resp.answers(&req));
        let bytes = resp.serialize().unwrap();
        prop_assert!(bytes.len() <= MAX_PAGESTREAM_MESSAGE_BYTES);
        prop_assert_eq!(bytes[0], resp.tag());
        prop_assert_eq!(PagestreamBeMessage::parse(&bytes), Ok(resp));
        let mut longer = bytes.to_vec();
        longer.push(0);
        prop_assert!(PagestreamBeMessage::parse(&longer).is_err());
        for len in [0, 1, 24, 25, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(PagestreamBeMessage::parse(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(tag in prop_oneof![0u8..6, 99u8..107, any::<u8>()],
                                   rest in proptest::collection::vec(any::<u8>(), 0..80)) {
        let bytes = [vec![tag], rest].concat();
        if let Ok(req) = PagestreamFeMessage::parse(&bytes) {
            prop_assert_eq!(&req.serialize()[..], &bytes[..]);
        }
        if let Ok(resp) = PagestreamBeMessage::parse(&bytes) {
            prop_assert_eq!(&resp.serialize().unwrap()[..], &bytes[..]);
        }
    }
}

/*
 * communicator.c: pagestream requests and responses, and the prefetch ring.
 *
 * Every request a backend sends goes through its ring of neon.readahead_buffer_size
 * slots, in order: slots [ring_receive, ring_head) are sent and await their responses,
 * which arrive in the same order; slots [ring_tail, ring_receive) hold received
 * responses not consumed yet (prefetched pages).  So a read that was interrupted (query
 * cancel) leaves the ring consistent: its response is received later and recycled.
 *
 * Message layouts: docs/formats.md "Pagestream" (big-endian; a response echoes the
 * request's header and fields, which are checked).  A lost connection discards the
 * in-flight requests; synchronous requests are sent again after reconnecting (at most
 * neon.max_reconnect_attempts + 1 times), prefetches are simply dropped.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "utils/memutils.h"

#include "neon.h"

/* Request and response tags */
#define T_EXISTS 0
#define T_NBLOCKS 1
#define T_GETPAGE 2
#define T_DBSIZE 3
#define T_EXISTS_RESPONSE 100
#define T_NBLOCKS_RESPONSE 101
#define T_GETPAGE_RESPONSE 102
#define T_ERROR_RESPONSE 103
#define T_DBSIZE_RESPONSE 104

#define HEADER_BYTES (1 + 8 + 8 + 8)
#define REL_BYTES (4 + 4 + 4 + 1)
#define MAX_REQUEST_BYTES (HEADER_BYTES + REL_BYTES + 4)
#define MAX_ERROR_MESSAGE_BYTES 1024

typedef enum SlotStatus
{
	SLOT_EMPTY,					/* free, or its response was consumed or dropped */
	SLOT_REQUESTED,				/* sent, response not received yet */
	SLOT_RECEIVED				/* response received, not consumed */
} SlotStatus;

typedef struct RingSlot
{
	SlotStatus	status;
	uint8		tag;
	uint64		reqid;
	NeonRequestLsns lsns;
	RelFileNode rnode;
	ForkNumber	forknum;
	BlockNumber blkno;
	Oid			dbnode;
	/* the response */
	bool		is_error;
	char		error[MAX_ERROR_MESSAGE_BYTES];
	bool		exists;
	BlockNumber nblocks;
	int64		dbsize;
	char	   *page;			/* BLCKSZ bytes, GetPage only */
} RingSlot;

static RingSlot *ring = NULL;
static int	ring_size = 0;
static uint64 ring_tail = 0;
static uint64 ring_receive = 0;
static uint64 ring_head = 0;
static bool ring_unflushed = false;
static uint64 next_reqid = 0;

/*
 * Connections the pageserver ended with an error, one after the other: a request it
 * rejects every time fails after MAX_SERVER_ERRORS_IN_A_ROW attempts rather than after
 * every reconnect attempt.
 */
#define MAX_SERVER_ERRORS_IN_A_ROW 3
static int	server_errors_in_a_row = 0;

#define SLOT(i) (&ring[(i) % ring_size])

static void
ring_init(void)
{
	MemoryContext old;

	if (ring != NULL)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	ring_size = neon_readahead_buffer_size;
	ring = palloc0(sizeof(RingSlot) * ring_size);
	for (int i = 0; i < ring_size; i++)
		ring[i].page = palloc(BLCKSZ);
	MemoryContextSwitchTo(old);
	next_reqid = ((uint64) MyProcPid) << 32;
}

/* The connection broke: every request in flight is lost. */
static void
ring_disconnected(void)
{
	for (uint64 i = ring_receive; i < ring_head; i++)
		SLOT(i)->status = SLOT_EMPTY;
	ring_receive = ring_head;
	ring_unflushed = false;
	pagestore_disconnect();
}

void
neon_prefetch_forget_all(void)
{
	if (ring == NULL)
		return;
	ring_disconnected();
	for (uint64 i = ring_tail; i < ring_head; i++)
		SLOT(i)->status = SLOT_EMPTY;
	ring_tail = ring_receive = ring_head;
}

/* ---- serialisation ---- */

static char *
put_u8(char *p, uint8 v)
{
	*p = (char) v;
	return p + 1;
}

static char *
put_u32(char *p, uint32 v)
{
	v = pg_hton32(v);
	memcpy(p, &v, 4);
	return p + 4;
}

static char *
put_u64(char *p, uint64 v)
{
	v = pg_hton64(v);
	memcpy(p, &v, 8);
	return p + 8;
}

static int
serialize_request(const RingSlot *s, char *buf)
{
	char	   *p = buf;

	p = put_u8(p, s->tag);
	p = put_u64(p, s->reqid);
	p = put_u64(p, s->lsns.request_lsn);
	p = put_u64(p, s->lsns.not_modified_since);
	if (s->tag == T_DBSIZE)
		return put_u32(p, s->dbnode) - buf;
	p = put_u32(p, s->rnode.spcNode);
	p = put_u32(p, s->rnode.dbNode);
	p = put_u32(p, s->rnode.relNode);
	p = put_u8(p, (uint8) s->forknum);
	if (s->tag == T_GETPAGE)
		p = put_u32(p, s->blkno);
	return p - buf;
}

/* A reader over a response; reads past the end set ok = false. */
typedef struct Reader
{
	const char *p;
	int			left;
	bool		ok;
} Reader;

static const char *
take(Reader *r, int n)
{
	const char *p = r->p;

	if (!r->ok || r->left < n)
	{
		r->ok = false;
		return NULL;
	}
	r->p += n;
	r->left -= n;
	return p;
}

static uint8
get_u8(Reader *r)
{
	const char *p = take(r, 1);

	return p ? (uint8) *p : 0;
}

static uint32
get_u32(Reader *r)
{
	const char *p = take(r, 4);
	uint32		v = 0;

	if (p)
		memcpy(&v, p, 4);
	return pg_ntoh32(v);
}

static uint64
get_u64(Reader *r)
{
	const char *p = take(r, 8);
	uint64		v = 0;

	if (p)
		memcpy(&v, p, 8);
	return pg_ntoh64(v);
}

static const char *
tag_name(uint8 tag)
{
	switch (tag)
	{
		case T_EXISTS:
			return "Exists";
		case T_NBLOCKS:
			return "Nblocks";
		case T_GETPAGE:
			return "GetPage";
		case T_DBSIZE:
			return "DbSize";
	}
	return "?";
}

/* A description of a slot's request, for messages. */
static char *
describe(const RingSlot *s)
{
	if (s->tag == T_DBSIZE)
		return psprintf("%s db %u at request LSN %X/%X not modified since %X/%X",
						tag_name(s->tag), s->dbnode,
						LSN_FORMAT_ARGS(s->lsns.request_lsn),
						LSN_FORMAT_ARGS(s->lsns.not_modified_since));
	return psprintf("%s rel %u/%u/%u fork %d%s%s at request LSN %X/%X not modified since %X/%X",
					tag_name(s->tag), s->rnode.spcNode, s->rnode.dbNode,
					s->rnode.relNode, s->forknum,
					s->tag == T_GETPAGE ? " block " : "",
					s->tag == T_GETPAGE ? psprintf("%u", s->blkno) : "",
					LSN_FORMAT_ARGS(s->lsns.request_lsn),
					LSN_FORMAT_ARGS(s->lsns.not_modified_since));
}

/* The tag of the response to a request with tag req_tag. */
static uint8
response_tag(uint8 req_tag)
{
	switch (req_tag)
	{
		case T_EXISTS:
			return T_EXISTS_RESPONSE;
		case T_NBLOCKS:
			return T_NBLOCKS_RESPONSE;
		case T_GETPAGE:
			return T_GETPAGE_RESPONSE;
		case T_DBSIZE:
			return T_DBSIZE_RESPONSE;
	}
	return T_ERROR_RESPONSE;
}

/*
 * Parses a response into slot s, checking that it answers s's request.  false (with
 * *why set) on a malformed or mismatched response.
 */
static bool
parse_response(RingSlot *s, const char *msg, int len, const char **why)
{
	Reader		r = {msg, len, true};
	uint8		tag = get_u8(&r);
	bool		echo_ok;

	echo_ok = get_u64(&r) == s->reqid &&
		get_u64(&r) == s->lsns.request_lsn &&
		get_u64(&r) == s->lsns.not_modified_since;
	if (!r.ok || !echo_ok)
	{
		*why = "its header does not echo the request";
		return false;
	}
	if (tag == T_ERROR_RESPONSE)
	{
		int			n = Min(r.left, MAX_ERROR_MESSAGE_BYTES - 1);

		memcpy(s->error, r.p, n);
		s->error[n] = '\0';
		s->is_error = true;
		return true;
	}
	if (tag != response_tag(s->tag))
	{
		*why = "its tag does not match the request";
		return false;
	}
	s->is_error = false;
	if (s->tag == T_DBSIZE)
	{
		if (get_u32(&r) != s->dbnode)
			r.ok = false;
		s->dbsize = (int64) get_u64(&r);
	}
	else
	{
		if (get_u32(&r) != s->rnode.spcNode || get_u32(&r) != s->rnode.dbNode ||
			get_u32(&r) != s->rnode.relNode || get_u8(&r) != (uint8) s->forknum)
			r.ok = false;
		if (s->tag == T_EXISTS)
			s->exists = get_u8(&r) != 0;
		else if (s->tag == T_NBLOCKS)
			s->nblocks = get_u32(&r);
		else
		{
			const char *page;

			if (get_u32(&r) != s->blkno)
				r.ok = false;
			page = take(&r, BLCKSZ);
			if (page)
				memcpy(s->page, page, BLCKSZ);
		}
	}
	if (!r.ok || r.left != 0)
	{
		*why = "its body does not match the request or has the wrong length";
		return false;
	}
	return true;
}

/* ---- the ring ---- */

/* Receives the next response; false if the connection broke (requests are lost). */
static bool
receive_next(void)
{
	RingSlot   *s = SLOT(ring_receive);
	char	   *msg;
	int			len;
	const char *why = NULL;
	bool		ok;

	Assert(ring_receive < ring_head);
	if (ring_unflushed)
	{
		if (!pagestore_flush())
		{
			ring_disconnected();
			return false;
		}
		ring_unflushed = false;
	}
	len = pagestore_receive(&msg);
	if (len < 0)
	{
		ring_disconnected();
		server_errors_in_a_row = len == -2 ? server_errors_in_a_row + 1 : 0;
		return false;
	}
	server_errors_in_a_row = 0;
	ok = parse_response(s, msg, len, &why);
	pagestore_free(msg);
	if (!ok)
	{
		char	   *what = describe(s);

		ring_disconnected();
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unexpected response from the pageserver to %s: %s", what, why)));
	}
	s->status = SLOT_RECEIVED;
	ring_receive++;
	return true;
}

/* Receives up to and including slot idx; false if the connection broke. */
static bool
wait_for_slot(uint64 idx)
{
	while (ring_receive <= idx)
	{
		if (!receive_next())
			return false;
	}
	return true;
}

/*
 * Sends the request in *req from the next slot, making room by dropping the oldest
 * slot; the slot's index, or -1 if the connection is broken (not connected, or the
 * send failed).  Flushes unless "lazy".
 */
static int64
send_request(const RingSlot *req, bool lazy)
{
	RingSlot   *s;
	char		buf[MAX_REQUEST_BYTES];
	int			len;
	uint64		idx;

	if (!pagestore_connected())
		return -1;
	if (ring_head - ring_tail == (uint64) ring_size)
	{
		if (ring_receive == ring_tail && !wait_for_slot(ring_tail))
			return -1;
		SLOT(ring_tail)->status = SLOT_EMPTY;
		ring_tail++;
	}
	idx = ring_head;
	s = SLOT(idx);
	{
		char	   *page = s->page;

		*s = *req;
		s->page = page;
	}
	s->reqid = next_reqid++;
	s->status = SLOT_REQUESTED;
	len = serialize_request(s, buf);
	if (!pagestore_send(buf, len))
	{
		s->status = SLOT_EMPTY;
		ring_disconnected();
		return -1;
	}
	ring_head++;
	ring_unflushed = true;
	if (!lazy)
	{
		if (!pagestore_flush())
		{
			ring_disconnected();
			return -1;
		}
		ring_unflushed = false;
	}
	return (int64) idx;
}

/*
 * Sends req and waits for its response, reconnecting and resending when the
 * connection breaks; the slot holding the response (ERROR if the pageserver answered
 * with an error).  The caller marks the slot consumed.
 */
static RingSlot *
request_and_wait(const RingSlot *req)
{
	RingSlot   *s;

	ring_init();
	for (int attempt = 0;; attempt++)
	{
		int64		idx;

		pagestore_connect_with_backoff();
		idx = send_request(req, false);
		if (idx >= 0 && wait_for_slot((uint64) idx))
		{
			s = SLOT(idx);
			break;
		}
		if (server_errors_in_a_row >= MAX_SERVER_ERRORS_IN_A_ROW)
		{
			server_errors_in_a_row = 0;
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the pageserver ended the connection with an error at %s: %s",
							describe(req), pagestore_server_error)));
		}
		if (attempt >= neon_max_reconnect_attempts)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("lost the pageserver connection %d times while sending %s",
							attempt + 1, describe(req))));
	}
	if (s->is_error)
	{
		s->status = SLOT_EMPTY;
		ereport(ERROR,
				(errcode(ERRCODE_IO_ERROR),
				 errmsg("pageserver error for %s: %s", describe(s), s->error)));
	}
	s->status = SLOT_EMPTY;
	return s;
}

static void
init_rel_request(RingSlot *req, uint8 tag, RelFileNode rnode, ForkNumber forknum,
				 NeonRequestLsns lsns)
{
	memset(req, 0, sizeof(*req));
	req->tag = tag;
	req->rnode = rnode;
	req->forknum = forknum;
	req->lsns = lsns;
}

bool
neon_exists_request(RelFileNode rnode, ForkNumber forknum, NeonRequestLsns lsns)
{
	RingSlot	req;

	init_rel_request(&req, T_EXISTS, rnode, forknum, lsns);
	return request_and_wait(&req)->exists;
}

BlockNumber
neon_nblocks_request(RelFileNode rnode, ForkNumber forknum, NeonRequestLsns lsns)
{
	RingSlot	req;

	init_rel_request(&req, T_NBLOCKS, rnode, forknum, lsns);
	return request_and_wait(&req)->nblocks;
}

int64
neon_dbsize_request(Oid dbNode, NeonRequestLsns lsns)
{
	RingSlot	req;

	memset(&req, 0, sizeof(req));
	req.tag = T_DBSIZE;
	req.dbnode = dbNode;
	req.lsns = lsns;
	return request_and_wait(&req)->dbsize;
}

/*
 * A prefetched response serves a read if it shows the page at least as new as the
 * read's not_modified_since and, for a replica (a request LSN other than "latest"), not
 * newer than the read's request LSN.
 */
static bool
response_valid_for(const RingSlot *s, NeonRequestLsns lsns)
{
	if (s->lsns.effective_lsn < lsns.not_modified_since)
		return false;
	if (lsns.request_lsn != PG_UINT64_MAX && s->lsns.effective_lsn > lsns.request_lsn)
		return false;
	return true;
}

/* The newest unconsumed GetPage slot for a page, or -1. */
static int64
find_in_ring(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno)
{
	if (ring == NULL)
		return -1;
	for (uint64 i = ring_head; i > ring_tail; i--)
	{
		RingSlot   *s = SLOT(i - 1);

		if (s->status != SLOT_EMPTY && s->tag == T_GETPAGE && s->blkno == blkno &&
			s->forknum == forknum && RelFileNodeEquals(s->rnode, rnode))
			return (int64) (i - 1);
	}
	return -1;
}

bool
neon_prefetch_in_ring(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno)
{
	return find_in_ring(rnode, forknum, blkno) >= 0;
}

/*
 * Reads a page: from a valid prefetched response if there is one, else with a
 * synchronous GetPage.
 */
void
neon_getpage(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
			 NeonRequestLsns lsns, char *page)
{
	RingSlot	req;
	RingSlot   *s;
	int64		idx;

	ring_init();
	idx = find_in_ring(rnode, forknum, blkno);
	if (idx >= 0 && response_valid_for(SLOT(idx), lsns) &&
		wait_for_slot((uint64) idx) && SLOT(idx)->status == SLOT_RECEIVED &&
		!SLOT(idx)->is_error)
	{
		memcpy(page, SLOT(idx)->page, BLCKSZ);
		SLOT(idx)->status = SLOT_EMPTY;
		return;
	}
	if (idx >= 0 && SLOT(idx)->status == SLOT_RECEIVED)
		SLOT(idx)->status = SLOT_EMPTY; /* stale or failed: asked again below */

	init_rel_request(&req, T_GETPAGE, rnode, forknum, lsns);
	req.blkno = blkno;
	s = request_and_wait(&req);
	memcpy(page, s->page, BLCKSZ);
}

/* Sends a GetPage for later (if connected and not asked already). */
void
neon_prefetch_page(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
				   NeonRequestLsns lsns)
{
	RingSlot	req;
	int64		idx;

	ring_init();
	if (!pagestore_connected())
		return;
	idx = find_in_ring(rnode, forknum, blkno);
	if (idx >= 0 && response_valid_for(SLOT(idx), lsns))
		return;
	init_rel_request(&req, T_GETPAGE, rnode, forknum, lsns);
	req.blkno = blkno;
	(void) send_request(&req, false);
}

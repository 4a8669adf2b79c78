/*
 * pagestore_smgr.c: the compute's storage manager.
 *
 * Permanent relations live in the pageserver: reads, sizes and existence are asked
 * over the pagestream protocol; writes and extensions send nothing (the pageserver
 * rebuilds pages from WAL) but record the page's LSN in the last-written-LSN cache, and
 * pages whose changes are not WAL-logged (FSM and visibility-map pages, pages without an
 * LSN) are WAL-logged as they leave shared buffers.  Temporary and unlogged relations,
 * and a permanent index during an unlogged build in this backend, stay on local disk
 * (md.c).  A relation of unknown persistence (a buffer flushed without a relcache entry)
 * is local if it has a local file, else permanent.
 *
 * Request LSNs (neon-internals 2.6): on a primary request_lsn = latest and
 * not_modified_since = the last-written LSN, after flushing WAL up to it; on a standby
 * or static compute (in recovery) request_lsn = the replay LSN.
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogrecovery.h"
#include "catalog/pg_class.h"
#include "storage/bufpage.h"
#include "storage/md.h"
#include "storage/smgr.h"

#include "neon.h"

typedef enum UnloggedBuildPhase
{
	UNLOGGED_BUILD_NONE,
	UNLOGGED_BUILD_PHASE_1,		/* pages written without WAL: kept local */
	UNLOGGED_BUILD_PHASE_2		/* pages being WAL-logged: still read locally */
} UnloggedBuildPhase;

/* The unlogged index build running in this backend (at most one). */
static UnloggedBuildPhase unlogged_build_phase = UNLOGGED_BUILD_NONE;
static RelFileNode unlogged_build_rel;

/* Sequential-read detection for readahead. */
static RelFileNode last_read_rel;
static ForkNumber last_read_fork = InvalidForkNumber;
static BlockNumber last_read_blkno = InvalidBlockNumber;
static BlockNumber readahead_next = InvalidBlockNumber;

/* ---- routing ---- */

static bool
in_unlogged_build(SMgrRelation reln)
{
	return unlogged_build_phase != UNLOGGED_BUILD_NONE &&
		reln->smgr_rnode.backend == InvalidBackendId &&
		RelFileNodeEquals(reln->smgr_rnode.node, unlogged_build_rel);
}

/* Whether the fork is kept on local disk (md.c) rather than in the pageserver. */
static bool
is_local(SMgrRelation reln, ForkNumber forknum)
{
	if (SmgrIsTemp(reln) || in_unlogged_build(reln))
		return true;
	switch (reln->smgr_relpersistence)
	{
		case RELPERSISTENCE_TEMP:
		case RELPERSISTENCE_UNLOGGED:
			return true;
		case RELPERSISTENCE_PERMANENT:
			return false;
		default:
			/* unknown: unlogged relations and unlogged builds have local files */
			return mdexists(reln, forknum) ||
				(forknum != MAIN_FORKNUM && mdexists(reln, MAIN_FORKNUM));
	}
}

/* ---- request LSNs ---- */

/*
 * An LSN right after a page header (where GetXLogInsertRecPtr() points when a page is
 * empty) is moved back to the page start: nothing lies between the two.
 */
static XLogRecPtr
adjust_lsn(XLogRecPtr lsn)
{
	if (lsn % XLOG_BLCKSZ == SizeOfXLogShortPHD &&
		XLogSegmentOffset(lsn, wal_segment_size) > XLOG_BLCKSZ)
		lsn -= SizeOfXLogShortPHD;
	else if (XLogSegmentOffset(lsn, wal_segment_size) == SizeOfXLogLongPHD)
		lsn -= SizeOfXLogLongPHD;
	return lsn;
}

static NeonRequestLsns
request_lsns(XLogRecPtr lwlsn)
{
	NeonRequestLsns r;

	lwlsn = adjust_lsn(lwlsn);
	if (RecoveryInProgress())
	{
		XLogRecPtr	replay = GetXLogReplayRecPtr(NULL);

		r.request_lsn = Max(replay, lwlsn);
		if (r.request_lsn == InvalidXLogRecPtr)
			ereport(ERROR,
					(errmsg("no LSN to read pages at: nothing replayed yet")));
		r.not_modified_since = lwlsn;
		r.effective_lsn = r.request_lsn;
	}
	else
	{
		/* the pageserver gets WAL only once it is flushed */
		if (lwlsn > GetFlushRecPtr(NULL))
			XLogFlush(lwlsn);
		r.request_lsn = PG_UINT64_MAX;
		r.not_modified_since = lwlsn;
		r.effective_lsn = lwlsn;
	}
	return r;
}

static NeonRequestLsns
page_request_lsns(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno)
{
	return request_lsns(lwlsn_get(rnode, forknum, blkno));
}

/* ---- WAL-logging pages that leave shared buffers without WAL ---- */

/*
 * WAL-logs a copy of a page that is about to leave shared buffers if the pageserver
 * would not otherwise have its content: FSM and visibility-map pages (changed without
 * WAL) and pages without a real LSN.  The LSN to record for the page.
 */
static XLogRecPtr
log_page_if_needed(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno,
				   char *buffer)
{
	XLogRecPtr	lsn = PageGetLSN((Page) buffer);
	PGAlignedBlock copy;

	if (PageIsNew((Page) buffer))
		return InvalidXLogRecPtr;	/* all zeros: the pageserver's default */
	if (forknum != FSM_FORKNUM && forknum != VISIBILITYMAP_FORKNUM &&
		lsn >= FirstNormalUnloggedLSN)
		return lsn;
	if (!XLogInsertAllowed())
		return lsn;				/* read-only (standby, static): nothing to keep */
	if (forknum != FSM_FORKNUM && forknum != VISIBILITYMAP_FORKNUM)
		elog(DEBUG1, "WAL-logging page %u of relation %u/%u/%u fork %d: it has no LSN",
			 blkno, reln->smgr_rnode.node.spcNode, reln->smgr_rnode.node.dbNode,
			 reln->smgr_rnode.node.relNode, forknum);
	memcpy(copy.data, buffer, BLCKSZ);
	/* not page_std: FSM and VM pages keep their data in the pd_lower..pd_upper hole */
	return log_newpage(&reln->smgr_rnode.node, forknum, blkno, copy.data, false);
}

/* ---- f_smgr callbacks ---- */

static void
neon_open(SMgrRelation reln)
{
	mdopen(reln);
}

static void
neon_close(SMgrRelation reln, ForkNumber forknum)
{
	mdclose(reln, forknum);
}

static void
neon_create(SMgrRelation reln, ForkNumber forknum, bool isRedo)
{
	RelFileNode rnode = reln->smgr_rnode.node;
	BlockNumber size;

	if (is_local(reln, forknum))
	{
		mdcreate(reln, forknum, isRedo);
		return;
	}
	if (!isRedo || !relsize_get(rnode, forknum, &size))
		relsize_set(rnode, forknum, 0);
	if (!RecoveryInProgress())
		lwlsn_set_relation(GetXLogInsertRecPtr(), rnode, forknum);
}

static bool
neon_exists(SMgrRelation reln, ForkNumber forknum)
{
	RelFileNode rnode = reln->smgr_rnode.node;
	BlockNumber size;

	if (is_local(reln, forknum))
		return mdexists(reln, forknum);
	if (relsize_get(rnode, forknum, &size))
		return true;
	return neon_exists_request(rnode, forknum,
							   page_request_lsns(rnode, forknum, LWLSN_REL_METADATA_BLOCK));
}

static void
neon_unlink(RelFileNodeBackend rnode, ForkNumber forknum, bool isRedo)
{
	/* local files: temporary, unlogged, or left by an unlogged build */
	mdunlink(rnode, forknum, isRedo);
	if (!RelFileNodeBackendIsTemp(rnode))
		relsize_forget(rnode.node, forknum);
}

static void
neon_extend(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno,
			char *buffer, bool skipFsync)
{
	RelFileNode rnode = reln->smgr_rnode.node;
	XLogRecPtr	lsn;

	if (is_local(reln, forknum))
	{
		mdextend(reln, forknum, blkno, buffer, skipFsync);
		return;
	}
	if (blkno == InvalidBlockNumber)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot extend relation %u/%u/%u beyond %u blocks",
						rnode.spcNode, rnode.dbNode, rnode.relNode, InvalidBlockNumber)));
	lsn = log_page_if_needed(reln, forknum, blkno, buffer);
	relsize_extend(rnode, forknum, blkno + 1);
	if (lsn != InvalidXLogRecPtr)
	{
		lwlsn_set_block(lsn, rnode, forknum, blkno);
		lwlsn_set_relation(lsn, rnode, forknum);
	}
}

/* Requests the blocks after blkno ahead of a sequential scan. */
static void
seqscan_readahead(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno)
{
	RelFileNode rnode = reln->smgr_rnode.node;
	bool		sequential;
	BlockNumber size;
	BlockNumber distance = Min(neon_seqscan_readahead, neon_readahead_buffer_size / 2);

	sequential = forknum == last_read_fork && blkno == last_read_blkno + 1 &&
		RelFileNodeEquals(rnode, last_read_rel);
	last_read_rel = rnode;
	last_read_fork = forknum;
	last_read_blkno = blkno;
	if (!sequential || distance == 0 || !relsize_get(rnode, forknum, &size))
	{
		readahead_next = InvalidBlockNumber;
		return;
	}
	if (readahead_next == InvalidBlockNumber || readahead_next <= blkno)
		readahead_next = blkno + 1;
	while (readahead_next <= blkno + distance && readahead_next < size)
	{
		neon_prefetch_page(rnode, forknum, readahead_next,
						   page_request_lsns(rnode, forknum, readahead_next));
		readahead_next++;
	}
}

static bool
neon_prefetch(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno)
{
	RelFileNode rnode = reln->smgr_rnode.node;

	if (is_local(reln, forknum))
		return mdprefetch(reln, forknum, blkno);
	neon_prefetch_page(rnode, forknum, blkno, page_request_lsns(rnode, forknum, blkno));
	return true;
}

static void
neon_read(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno, char *buffer)
{
	RelFileNode rnode = reln->smgr_rnode.node;

	if (is_local(reln, forknum))
	{
		mdread(reln, forknum, blkno, buffer);
		return;
	}
	neon_getpage(rnode, forknum, blkno, page_request_lsns(rnode, forknum, blkno), buffer);
	seqscan_readahead(reln, forknum, blkno);
}

static void
neon_write(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno,
		   char *buffer, bool skipFsync)
{
	RelFileNode rnode = reln->smgr_rnode.node;
	XLogRecPtr	lsn;

	if (is_local(reln, forknum))
	{
		mdwrite(reln, forknum, blkno, buffer, skipFsync);
		return;
	}
	lsn = log_page_if_needed(reln, forknum, blkno, buffer);
	if (lsn != InvalidXLogRecPtr)
	{
		lwlsn_set_block(lsn, rnode, forknum, blkno);
		/* the pageserver knows the fork has blkno + 1 blocks from lsn on */
		lwlsn_set_relation(lsn, rnode, forknum);
	}
}

static void
neon_writeback(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno,
			   BlockNumber nblocks)
{
	if (is_local(reln, forknum))
		mdwriteback(reln, forknum, blkno, nblocks);
}

static BlockNumber
neon_nblocks(SMgrRelation reln, ForkNumber forknum)
{
	RelFileNode rnode = reln->smgr_rnode.node;
	BlockNumber size;

	if (is_local(reln, forknum))
		return mdnblocks(reln, forknum);
	if (relsize_get(rnode, forknum, &size))
		return size;
	size = neon_nblocks_request(rnode, forknum,
								page_request_lsns(rnode, forknum, LWLSN_REL_METADATA_BLOCK));
	relsize_learn(rnode, forknum, size);
	/* a size set meanwhile by an extension or truncation wins */
	(void) relsize_get(rnode, forknum, &size);
	return size;
}

static void
neon_truncate(SMgrRelation reln, ForkNumber forknum, BlockNumber old_blocks,
			  BlockNumber nblocks)
{
	RelFileNode rnode = reln->smgr_rnode.node;

	if (is_local(reln, forknum))
	{
		mdtruncate(reln, forknum, old_blocks, nblocks);
		return;
	}
	relsize_set(rnode, forknum, nblocks);
	/* the truncate record was just inserted (RelationTruncate, patch 0011) */
	if (!RecoveryInProgress())
		lwlsn_set_relation(GetXLogInsertRecPtr(), rnode, forknum);
}

static void
neon_immedsync(SMgrRelation reln, ForkNumber forknum)
{
	if (is_local(reln, forknum))
		mdimmedsync(reln, forknum);
}

/* ---- unlogged index builds (patch 0006) ---- */

static void
neon_start_unlogged_build(SMgrRelation reln)
{
	if (SmgrIsTemp(reln) || reln->smgr_relpersistence != RELPERSISTENCE_PERMANENT)
		return;					/* local anyway */
	if (unlogged_build_phase != UNLOGGED_BUILD_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("an unlogged index build is already in progress in this backend")));
	/* the local file other processes see when they write the relation's buffers */
	mdcreate(reln, MAIN_FORKNUM, true);
	unlogged_build_rel = reln->smgr_rnode.node;
	unlogged_build_phase = UNLOGGED_BUILD_PHASE_1;
}

static void
neon_finish_unlogged_build_phase_1(SMgrRelation reln)
{
	if (in_unlogged_build(reln))
		unlogged_build_phase = UNLOGGED_BUILD_PHASE_2;
}

static void
neon_end_unlogged_build(SMgrRelation reln)
{
	RelFileNode rnode = reln->smgr_rnode.node;
	RelFileNodeBackend rnodeb = reln->smgr_rnode;
	BlockNumber nblocks;
	XLogRecPtr	lsn;

	if (!in_unlogged_build(reln))
		return;
	nblocks = mdnblocks(reln, MAIN_FORKNUM);
	/* every page is WAL-logged by now: the pageserver has them at lsn */
	lsn = GetXLogInsertRecPtr();
	lwlsn_set_range(lsn, rnode, MAIN_FORKNUM, 0, nblocks);
	lwlsn_set_relation(lsn, rnode, MAIN_FORKNUM);
	relsize_set(rnode, MAIN_FORKNUM, nblocks);
	unlogged_build_phase = UNLOGGED_BUILD_NONE;
	mdclose(reln, MAIN_FORKNUM);
	mdunlink(rnodeb, MAIN_FORKNUM, true);
}

/* Transaction abort: the index being built is dropped with its local file. */
void
neon_smgr_xact_callback(void)
{
	unlogged_build_phase = UNLOGGED_BUILD_NONE;
}

static const f_smgr neon_smgr = {
	.smgr_init = NULL,
	.smgr_shutdown = NULL,
	.smgr_open = neon_open,
	.smgr_close = neon_close,
	.smgr_create = neon_create,
	.smgr_exists = neon_exists,
	.smgr_unlink = neon_unlink,
	.smgr_extend = neon_extend,
	.smgr_prefetch = neon_prefetch,
	.smgr_read = neon_read,
	.smgr_write = neon_write,
	.smgr_writeback = neon_writeback,
	.smgr_nblocks = neon_nblocks,
	.smgr_truncate = neon_truncate,
	.smgr_immedsync = neon_immedsync,
	.smgr_start_unlogged_build = neon_start_unlogged_build,
	.smgr_finish_unlogged_build_phase_1 = neon_finish_unlogged_build_phase_1,
	.smgr_end_unlogged_build = neon_end_unlogged_build,
};

/* smgr_hook: temporary relations go straight to md.c, everything else here. */
const f_smgr *
neon_smgr_choose(BackendId backend, RelFileNode rnode)
{
	if (backend != InvalidBackendId)
		return smgr_standard(backend, rnode);
	return &neon_smgr;
}

void
neon_smgr_init(void)
{
	smgr_init_standard();
}

void
neon_smgr_shutdown(void)
{
	pagestore_disconnect();
	smgr_shutdown_standard();
}

/* dbsize_hook: the pageserver sums the sizes of the database's relations. */
int64
neon_dbsize(Oid dbOid)
{
	return neon_dbsize_request(dbOid, request_lsns(lwlsn_get_max()));
}

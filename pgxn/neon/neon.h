/*
 * neon.h: declarations shared by the files of the neon extension.
 *
 * neon.c            _PG_init, GUCs, shared memory
 * libpagestore.c    the libpq connection to the pageserver (connect, send, receive, backoff)
 * communicator.c    pagestream messages and the per-backend prefetch ring
 * pagestore_smgr.c  the storage manager (f_smgr) and the request-LSN rules
 * lwlsn_cache.c     last-written-LSN cache (shared memory)
 * relsize_cache.c   relation-size cache (shared memory)
 */
#ifndef NEON_H
#define NEON_H

#include "access/xlogdefs.h"
#include "common/relpath.h"
#include "storage/block.h"
#include "storage/relfilenode.h"
#include "storage/smgr.h"

/* ---- GUCs (neon.c) ---- */
extern char *neon_pageserver_connstring;
extern char *neon_tenant_id;
extern char *neon_timeline_id;
extern int	neon_max_reconnect_attempts;
extern int	neon_readahead_buffer_size;
extern int	neon_seqscan_readahead;
extern int	neon_lwlsn_cache_size;
extern int	neon_relsize_cache_size;

/* Upper bounds of the GUCs above (units in the names). */
#define NEON_MAX_READAHEAD_BUFFER_ENTRIES 1024
#define NEON_MAX_RECONNECT_ATTEMPTS 1000
#define NEON_MAX_CACHE_ENTRIES (16 * 1024 * 1024)

/* ---- libpagestore.c: one connection per backend ---- */
extern bool pagestore_connected(void);
extern void pagestore_connect_with_backoff(void);
extern void pagestore_disconnect(void);
extern bool pagestore_send(const char *msg, int len);
extern bool pagestore_flush(void);
extern int	pagestore_receive(char **msg);
#define PAGESTORE_SERVER_ERROR_BYTES 512
extern char pagestore_server_error[PAGESTORE_SERVER_ERROR_BYTES];
extern void pagestore_free(char *msg);

/* ---- communicator.c: requests, responses, prefetch ring ---- */

/* The LSNs that go with a request (neon-internals 2.6). */
typedef struct NeonRequestLsns
{
	XLogRecPtr	request_lsn;	/* PG_UINT64_MAX: latest */
	XLogRecPtr	not_modified_since;
	XLogRecPtr	effective_lsn;	/* the version the response is valid for */
} NeonRequestLsns;

extern bool neon_exists_request(RelFileNode rnode, ForkNumber forknum,
								NeonRequestLsns lsns);
extern BlockNumber neon_nblocks_request(RelFileNode rnode, ForkNumber forknum,
										NeonRequestLsns lsns);
extern int64 neon_dbsize_request(Oid dbNode, NeonRequestLsns lsns);
extern void neon_getpage(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
						 NeonRequestLsns lsns, char *page);
extern void neon_prefetch_page(RelFileNode rnode, ForkNumber forknum,
							   BlockNumber blkno, NeonRequestLsns lsns);
extern bool neon_prefetch_in_ring(RelFileNode rnode, ForkNumber forknum,
								  BlockNumber blkno);
extern void neon_prefetch_forget_all(void);

/* ---- lwlsn_cache.c ---- */

/* The pseudo block number under which a relation fork's size change is kept. */
#define LWLSN_REL_METADATA_BLOCK InvalidBlockNumber

extern Size lwlsn_shmem_size(void);
extern void lwlsn_shmem_init(void);
extern XLogRecPtr lwlsn_get(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno);
extern XLogRecPtr lwlsn_get_max(void);
extern void lwlsn_set_range(XLogRecPtr lsn, RelFileNode rnode, ForkNumber forknum,
							BlockNumber from, BlockNumber nblocks);
extern void lwlsn_set_block(XLogRecPtr lsn, RelFileNode rnode, ForkNumber forknum,
							BlockNumber blkno);
extern void lwlsn_set_relation(XLogRecPtr lsn, RelFileNode rnode, ForkNumber forknum);
extern void lwlsn_set_db(XLogRecPtr lsn, Oid dbOid);
extern void lwlsn_set_max(XLogRecPtr lsn);

/* ---- relsize_cache.c ---- */
extern Size relsize_shmem_size(void);
extern void relsize_shmem_init(void);
extern bool relsize_get(RelFileNode rnode, ForkNumber forknum, BlockNumber *size);
extern void relsize_set(RelFileNode rnode, ForkNumber forknum, BlockNumber size);
extern void relsize_extend(RelFileNode rnode, ForkNumber forknum, BlockNumber size);
extern void relsize_forget(RelFileNode rnode, ForkNumber forknum);
extern void relsize_learn(RelFileNode rnode, ForkNumber forknum, BlockNumber size);

/* ---- pagestore_smgr.c ---- */
extern const f_smgr *neon_smgr_choose(BackendId backend, RelFileNode rnode);
extern void neon_smgr_init(void);
extern void neon_smgr_shutdown(void);
extern int64 neon_dbsize(Oid dbOid);
extern void neon_smgr_xact_callback(void);

#endif							/* NEON_H */

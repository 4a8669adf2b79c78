/*
 * lwlsn_cache.c: the last-written-LSN cache.
 *
 * For every page (and, under the pseudo block LWLSN_REL_METADATA_BLOCK, for every relation
 * fork's size) the LSN of its last change that the compute knows of, so a request to the
 * pageserver can promise "not modified since" that LSN.  A shared hash with at most
 * neon.last_written_lsn_cache_size entries in LRU order; max_lsn bounds every page that has
 * no entry: an entry evicted from the LRU raises it to the entry's LSN, and so do changes
 * of a whole database (CREATE/DROP DATABASE) and the start of the server (the redo
 * pointer, then the end of WAL: see access/lwlsn.h).  A lookup miss answers max_lsn.
 */
#include "postgres.h"

#include "lib/ilist.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "neon.h"

typedef struct LwLsnKey
{
	RelFileNode rnode;
	ForkNumber	forknum;
	BlockNumber blkno;
} LwLsnKey;

typedef struct LwLsnEntry
{
	LwLsnKey	key;			/* hash key, must be first */
	XLogRecPtr	lsn;
	dlist_node	lru;			/* oldest at the head */
} LwLsnEntry;

typedef struct LwLsnShared
{
	XLogRecPtr	max_lsn;		/* bound for every page without an entry */
	int64		n_entries;
	dlist_head	lru;
} LwLsnShared;

static LwLsnShared *lwlsn_shared = NULL;
static HTAB *lwlsn_hash = NULL;
static LWLock *lwlsn_lock = NULL;

Size
lwlsn_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(LwLsnShared)),
					hash_estimate_size(neon_lwlsn_cache_size, sizeof(LwLsnEntry)));
}

/* Called under AddinShmemInitLock by every process attaching to shared memory. */
void
lwlsn_shmem_init(void)
{
	HASHCTL		info;
	bool		found;

	lwlsn_shared = ShmemInitStruct("neon last-written LSN", sizeof(LwLsnShared), &found);
	if (!found)
	{
		lwlsn_shared->max_lsn = InvalidXLogRecPtr;
		lwlsn_shared->n_entries = 0;
		dlist_init(&lwlsn_shared->lru);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(LwLsnKey);
	info.entrysize = sizeof(LwLsnEntry);
	lwlsn_hash = ShmemInitHash("neon last-written LSN hash",
							   neon_lwlsn_cache_size, neon_lwlsn_cache_size,
							   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	lwlsn_lock = &(GetNamedLWLockTranche("neon_lwlsn"))->lock;
}

static inline void
make_key(LwLsnKey *key, RelFileNode rnode, ForkNumber forknum, BlockNumber blkno)
{
	memset(key, 0, sizeof(*key));
	key->rnode = rnode;
	key->forknum = forknum;
	key->blkno = blkno;
}

XLogRecPtr
lwlsn_get(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno)
{
	LwLsnKey	key;
	LwLsnEntry *entry;
	XLogRecPtr	lsn;

	make_key(&key, rnode, forknum, blkno);
	LWLockAcquire(lwlsn_lock, LW_SHARED);
	entry = hash_search(lwlsn_hash, &key, HASH_FIND, NULL);
	lsn = entry ? entry->lsn : lwlsn_shared->max_lsn;
	LWLockRelease(lwlsn_lock);
	return lsn;
}

XLogRecPtr
lwlsn_get_max(void)
{
	XLogRecPtr	lsn;

	LWLockAcquire(lwlsn_lock, LW_SHARED);
	lsn = lwlsn_shared->max_lsn;
	LWLockRelease(lwlsn_lock);
	return lsn;
}

/* Drops the least recently set entry, folding its LSN into max_lsn.  Lock held. */
static void
evict_oldest(void)
{
	LwLsnEntry *victim;

	victim = dlist_head_element(LwLsnEntry, lru, &lwlsn_shared->lru);
	lwlsn_shared->max_lsn = Max(lwlsn_shared->max_lsn, victim->lsn);
	dlist_delete(&victim->lru);
	hash_search(lwlsn_hash, &victim->key, HASH_REMOVE, NULL);
	lwlsn_shared->n_entries--;
}

/* Records lsn for one key (never lowering an entry).  Lock held exclusively. */
static void
set_one(XLogRecPtr lsn, RelFileNode rnode, ForkNumber forknum, BlockNumber blkno)
{
	LwLsnKey	key;
	LwLsnEntry *entry;
	bool		found;

	make_key(&key, rnode, forknum, blkno);
	entry = hash_search(lwlsn_hash, &key, HASH_FIND, NULL);
	if (entry == NULL)
	{
		if (lwlsn_shared->n_entries >= neon_lwlsn_cache_size)
			evict_oldest();
		entry = hash_search(lwlsn_hash, &key, HASH_ENTER_NULL, &found);
		if (entry == NULL)
		{
			/* the fixed-size table is out of room after all: be conservative */
			lwlsn_shared->max_lsn = Max(lwlsn_shared->max_lsn, lsn);
			return;
		}
		entry->lsn = lsn;
		lwlsn_shared->n_entries++;
	}
	else
	{
		entry->lsn = Max(entry->lsn, lsn);
		dlist_delete(&entry->lru);
	}
	dlist_push_tail(&lwlsn_shared->lru, &entry->lru);
}

void
lwlsn_set_range(XLogRecPtr lsn, RelFileNode rnode, ForkNumber forknum,
				BlockNumber from, BlockNumber nblocks)
{
	if (lsn == InvalidXLogRecPtr || nblocks == 0)
		return;
	LWLockAcquire(lwlsn_lock, LW_EXCLUSIVE);
	if (nblocks >= (BlockNumber) neon_lwlsn_cache_size)
	{
		/* more blocks than entries: raising the bound is cheaper and as correct */
		lwlsn_shared->max_lsn = Max(lwlsn_shared->max_lsn, lsn);
	}
	else
	{
		for (BlockNumber i = 0; i < nblocks; i++)
			set_one(lsn, rnode, forknum, from + i);
	}
	LWLockRelease(lwlsn_lock);
}

void
lwlsn_set_block(XLogRecPtr lsn, RelFileNode rnode, ForkNumber forknum, BlockNumber blkno)
{
	lwlsn_set_range(lsn, rnode, forknum, blkno, 1);
}

/* A relation fork's size changed at lsn; InvalidForkNumber: every fork. */
void
lwlsn_set_relation(XLogRecPtr lsn, RelFileNode rnode, ForkNumber forknum)
{
	if (lsn == InvalidXLogRecPtr)
		return;
	LWLockAcquire(lwlsn_lock, LW_EXCLUSIVE);
	if (forknum == InvalidForkNumber)
	{
		for (ForkNumber f = 0; f <= MAX_FORKNUM; f++)
			set_one(lsn, rnode, f, LWLSN_REL_METADATA_BLOCK);
	}
	else
		set_one(lsn, rnode, forknum, LWLSN_REL_METADATA_BLOCK);
	LWLockRelease(lwlsn_lock);
}

/* A whole database changed at lsn: no entry is that precise, raise the bound. */
void
lwlsn_set_db(XLogRecPtr lsn, Oid dbOid)
{
	lwlsn_set_max(lsn);
}

void
lwlsn_set_max(XLogRecPtr lsn)
{
	LWLockAcquire(lwlsn_lock, LW_EXCLUSIVE);
	lwlsn_shared->max_lsn = Max(lwlsn_shared->max_lsn, lsn);
	LWLockRelease(lwlsn_lock);
}

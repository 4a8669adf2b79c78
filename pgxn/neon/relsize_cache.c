/*
 * relsize_cache.c: the relation-size cache.
 *
 * The size in blocks of permanent relation forks, shared by all backends, so that
 * smgrnblocks() and smgrexists() rarely ask the pageserver, and so that relations
 * extended by the compute (whose new pages the pageserver only learns about from WAL,
 * maybe later) have their size here.  At most neon.relsize_hash_size entries; the least
 * recently used one makes room for a new one (the next smgrnblocks() asks the
 * pageserver again).
 */
#include "postgres.h"

#include "lib/ilist.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "neon.h"

typedef struct RelSizeKey
{
	RelFileNode rnode;
	ForkNumber	forknum;
} RelSizeKey;

typedef struct RelSizeEntry
{
	RelSizeKey	key;			/* hash key, must be first */
	BlockNumber size;
	dlist_node	lru;			/* oldest at the head */
} RelSizeEntry;

typedef struct RelSizeShared
{
	int64		n_entries;
	dlist_head	lru;
} RelSizeShared;

static RelSizeShared *relsize_shared = NULL;
static HTAB *relsize_hash = NULL;
static LWLock *relsize_lock = NULL;

Size
relsize_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(RelSizeShared)),
					hash_estimate_size(neon_relsize_cache_size, sizeof(RelSizeEntry)));
}

/* Called under AddinShmemInitLock by every process attaching to shared memory. */
void
relsize_shmem_init(void)
{
	HASHCTL		info;
	bool		found;

	relsize_shared = ShmemInitStruct("neon relsize cache", sizeof(RelSizeShared), &found);
	if (!found)
	{
		relsize_shared->n_entries = 0;
		dlist_init(&relsize_shared->lru);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(RelSizeKey);
	info.entrysize = sizeof(RelSizeEntry);
	relsize_hash = ShmemInitHash("neon relsize hash",
								 neon_relsize_cache_size, neon_relsize_cache_size,
								 &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	relsize_lock = &(GetNamedLWLockTranche("neon_relsize"))->lock;
}

static inline void
make_key(RelSizeKey *key, RelFileNode rnode, ForkNumber forknum)
{
	memset(key, 0, sizeof(*key));
	key->rnode = rnode;
	key->forknum = forknum;
}

bool
relsize_get(RelFileNode rnode, ForkNumber forknum, BlockNumber *size)
{
	RelSizeKey	key;
	RelSizeEntry *entry;

	make_key(&key, rnode, forknum);
	LWLockAcquire(relsize_lock, LW_SHARED);
	entry = hash_search(relsize_hash, &key, HASH_FIND, NULL);
	if (entry)
		*size = entry->size;
	LWLockRelease(relsize_lock);
	return entry != NULL;
}

/*
 * The entry for a key, made if missing (evicting the oldest when full); NULL if the
 * table has no room after all.  Lock held exclusively.
 */
static RelSizeEntry *
lookup_or_make(RelFileNode rnode, ForkNumber forknum, bool *found)
{
	RelSizeKey	key;
	RelSizeEntry *entry;

	make_key(&key, rnode, forknum);
	entry = hash_search(relsize_hash, &key, HASH_FIND, NULL);
	if (entry)
	{
		*found = true;
		dlist_delete(&entry->lru);
		dlist_push_tail(&relsize_shared->lru, &entry->lru);
		return entry;
	}
	*found = false;
	if (relsize_shared->n_entries >= neon_relsize_cache_size)
	{
		RelSizeEntry *victim = dlist_head_element(RelSizeEntry, lru, &relsize_shared->lru);

		dlist_delete(&victim->lru);
		hash_search(relsize_hash, &victim->key, HASH_REMOVE, NULL);
		relsize_shared->n_entries--;
	}
	entry = hash_search(relsize_hash, &key, HASH_ENTER_NULL, NULL);
	if (entry == NULL)
		return NULL;
	relsize_shared->n_entries++;
	dlist_push_tail(&relsize_shared->lru, &entry->lru);
	return entry;
}

/* The fork has exactly size blocks (after create, truncate, or a pageserver answer). */
void
relsize_set(RelFileNode rnode, ForkNumber forknum, BlockNumber size)
{
	RelSizeEntry *entry;
	bool		found;

	LWLockAcquire(relsize_lock, LW_EXCLUSIVE);
	entry = lookup_or_make(rnode, forknum, &found);
	if (entry)
		entry->size = size;
	LWLockRelease(relsize_lock);
}

/* The fork has at least size blocks (after an extension). */
void
relsize_extend(RelFileNode rnode, ForkNumber forknum, BlockNumber size)
{
	RelSizeEntry *entry;
	bool		found;

	LWLockAcquire(relsize_lock, LW_EXCLUSIVE);
	entry = lookup_or_make(rnode, forknum, &found);
	if (entry)
		entry->size = found ? Max(entry->size, size) : size;
	LWLockRelease(relsize_lock);
}

void
relsize_forget(RelFileNode rnode, ForkNumber forknum)
{
	RelSizeKey	key;
	RelSizeEntry *entry;

	make_key(&key, rnode, forknum);
	LWLockAcquire(relsize_lock, LW_EXCLUSIVE);
	entry = hash_search(relsize_hash, &key, HASH_FIND, NULL);
	if (entry)
	{
		dlist_delete(&entry->lru);
		hash_search(relsize_hash, &key, HASH_REMOVE, NULL);
		relsize_shared->n_entries--;
	}
	LWLockRelease(relsize_lock);
}

/*
 * The pageserver answered size for the fork: kept unless an entry appeared meanwhile
 * (a create, extend or truncate by some backend knows better).
 */
void
relsize_learn(RelFileNode rnode, ForkNumber forknum, BlockNumber size)
{
	RelSizeEntry *entry;
	bool		found;

	LWLockAcquire(relsize_lock, LW_EXCLUSIVE);
	entry = lookup_or_make(rnode, forknum, &found);
	if (entry && !found)
		entry->size = size;
	LWLockRelease(relsize_lock);
}

/*
 * inmem_smgr.c: an in-memory storage manager for the wal-redo helper.
 *
 * The helper rebuilds one page (the "target") at a time and has no files. This storage
 * manager keeps the target page (its base image, or what the buffer manager wrote back
 * when it evicted it) plus a handful of scratch pages that redo routines touch as a side
 * effect (visibility-map and free-space-map pages updated by heap redo, pages other
 * blocks of a record re-initialise). Scratch pages are never returned to the pageserver:
 * when their slots are full, further writes of other pages are dropped, and a page that
 * is not stored reads as zeros.
 *
 * Every relation fork claims to exist and to be MaxBlockNumber blocks long, so that
 * XLogReadBufferExtended() never tries to extend a relation up to the block it wants.
 */
#include "postgres.h"

#include "inmem_smgr.h"

/* Slot 0 holds the target page; the others hold scratch pages. */
#define INMEM_SLOTS 8
#define TARGET_SLOT 0

typedef struct InmemSlot
{
	bool		used;
	BufferTag	tag;
	PGAlignedBlock page;
} InmemSlot;

static InmemSlot slots[INMEM_SLOTS];

static void inmem_open(SMgrRelation reln);
static void inmem_close(SMgrRelation reln, ForkNumber forknum);
static void inmem_create(SMgrRelation reln, ForkNumber forknum, bool isRedo);
static bool inmem_exists(SMgrRelation reln, ForkNumber forknum);
static void inmem_unlink(RelFileNodeBackend rnode, ForkNumber forknum, bool isRedo);
static void inmem_extend(SMgrRelation reln, ForkNumber forknum,
						 BlockNumber blocknum, char *buffer, bool skipFsync);
static bool inmem_prefetch(SMgrRelation reln, ForkNumber forknum,
						   BlockNumber blocknum);
static void inmem_read(SMgrRelation reln, ForkNumber forknum,
					   BlockNumber blocknum, char *buffer);
static void inmem_write(SMgrRelation reln, ForkNumber forknum,
						BlockNumber blocknum, char *buffer, bool skipFsync);
static void inmem_writeback(SMgrRelation reln, ForkNumber forknum,
							BlockNumber blocknum, BlockNumber nblocks);
static BlockNumber inmem_nblocks(SMgrRelation reln, ForkNumber forknum);
static void inmem_truncate(SMgrRelation reln, ForkNumber forknum,
						   BlockNumber old_blocks, BlockNumber nblocks);
static void inmem_immedsync(SMgrRelation reln, ForkNumber forknum);

static const f_smgr inmem_smgr = {
	.smgr_init = smgr_init_inmem,
	.smgr_shutdown = NULL,
	.smgr_open = inmem_open,
	.smgr_close = inmem_close,
	.smgr_create = inmem_create,
	.smgr_exists = inmem_exists,
	.smgr_unlink = inmem_unlink,
	.smgr_extend = inmem_extend,
	.smgr_prefetch = inmem_prefetch,
	.smgr_read = inmem_read,
	.smgr_write = inmem_write,
	.smgr_writeback = inmem_writeback,
	.smgr_nblocks = inmem_nblocks,
	.smgr_truncate = inmem_truncate,
	.smgr_immedsync = inmem_immedsync,
};

const f_smgr *
smgr_inmem(BackendId backend, RelFileNode rnode)
{
	return &inmem_smgr;
}

void
smgr_init_inmem(void)
{
	for (int i = 0; i < INMEM_SLOTS; i++)
		slots[i].used = false;
}

void
inmem_set_target(const BufferTag *tag)
{
	smgr_init_inmem();
	slots[TARGET_SLOT].tag = *tag;
}

void
inmem_store_target(const char *page)
{
	memcpy(slots[TARGET_SLOT].page.data, page, BLCKSZ);
	slots[TARGET_SLOT].used = true;
}

/* The slot holding a page: the target slot (used or not) or a used scratch slot; or -1. */
static int
find_slot(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum)
{
	BufferTag	tag;

	INIT_BUFFERTAG(tag, reln->smgr_rnode.node, forknum, blocknum);
	if (BUFFERTAGS_EQUAL(tag, slots[TARGET_SLOT].tag))
		return TARGET_SLOT;
	for (int i = TARGET_SLOT + 1; i < INMEM_SLOTS; i++)
	{
		if (slots[i].used && BUFFERTAGS_EQUAL(tag, slots[i].tag))
			return i;
	}
	return -1;
}

static void
store_page(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
		   const char *buffer)
{
	int			slot = find_slot(reln, forknum, blocknum);

	for (int i = TARGET_SLOT + 1; slot < 0 && i < INMEM_SLOTS; i++)
	{
		if (!slots[i].used)
		{
			slot = i;
			INIT_BUFFERTAG(slots[i].tag, reln->smgr_rnode.node, forknum, blocknum);
		}
	}
	if (slot < 0)
		return;					/* scratch slots full: drop the scratch page */
	memcpy(slots[slot].page.data, buffer, BLCKSZ);
	slots[slot].used = true;
}

static void
inmem_open(SMgrRelation reln)
{
}

static void
inmem_close(SMgrRelation reln, ForkNumber forknum)
{
}

static void
inmem_create(SMgrRelation reln, ForkNumber forknum, bool isRedo)
{
}

static bool
inmem_exists(SMgrRelation reln, ForkNumber forknum)
{
	return true;
}

static void
inmem_unlink(RelFileNodeBackend rnode, ForkNumber forknum, bool isRedo)
{
}

static void
inmem_extend(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			 char *buffer, bool skipFsync)
{
	store_page(reln, forknum, blocknum, buffer);
}

static bool
inmem_prefetch(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum)
{
	return true;
}

static void
inmem_read(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
		   char *buffer)
{
	int			slot = find_slot(reln, forknum, blocknum);

	if (slot >= 0 && slots[slot].used)
		memcpy(buffer, slots[slot].page.data, BLCKSZ);
	else
		MemSet(buffer, 0, BLCKSZ);
}

static void
inmem_write(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			char *buffer, bool skipFsync)
{
	store_page(reln, forknum, blocknum, buffer);
}

static void
inmem_writeback(SMgrRelation reln, ForkNumber forknum,
				BlockNumber blocknum, BlockNumber nblocks)
{
}

static BlockNumber
inmem_nblocks(SMgrRelation reln, ForkNumber forknum)
{
	return MaxBlockNumber;
}

static void
inmem_truncate(SMgrRelation reln, ForkNumber forknum,
			   BlockNumber old_blocks, BlockNumber nblocks)
{
}

static void
inmem_immedsync(SMgrRelation reln, ForkNumber forknum)
{
}

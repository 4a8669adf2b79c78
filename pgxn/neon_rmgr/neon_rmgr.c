/*
 * neon_rmgr.c: the custom WAL resource manager "neon_cid" (RM id 134).
 *
 * Heap redo gives every tuple it touches t_cid = FirstCommandId. A compute may evict a
 * heap page in the middle of a transaction and get it back from the pageserver, rebuilt
 * by WAL redo, so it needs the real command ids: with this library loaded (through
 * shared_preload_libraries), heapam.c follows a heap record by an XLOG_NEON_CID_SET
 * record giving the exact t_cid and HEAP_COMBOCID bit of the tuples it changed (layout
 * and rules in access/heapam_xlog.h, 0009 patch). This file registers the resource
 * manager, turns on heap_log_cid and replays the records: in a server that replays WAL
 * and in the pageserver's wal-redo process (which loads this library itself).
 *
 * Redo of a block: restore its full-page image if it has one, else set t_field3.t_cid
 * and the HEAP_COMBOCID bit of each tuple the entries name, and the page LSN.
 */
#include "postgres.h"

#include "access/heapam_xlog.h"
#include "access/htup_details.h"
#include "access/xlog_internal.h"
#include "access/xlogutils.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static void neon_cid_redo(XLogReaderState *record);
static void neon_cid_desc(StringInfo buf, XLogReaderState *record);
static const char *neon_cid_identify(uint8 info);

static RmgrData neon_cid_rmgr = {
	.rm_name = RM_NEON_CID_NAME,
	.rm_redo = neon_cid_redo,
	.rm_desc = neon_cid_desc,
	.rm_identify = neon_cid_identify,
	.rm_startup = NULL,
	.rm_cleanup = NULL,
	/* the record only changes t_cid, which heap_mask masks */
	.rm_mask = heap_mask,
	.rm_decode = NULL,
};

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("neon_rmgr must be loaded via shared_preload_libraries")));
	RegisterCustomRmgr(RM_NEON_CID_ID, &neon_cid_rmgr);
	heap_log_cid = true;
}

/*
 * The entries of a block's data; an error if its length is not a whole number of
 * entries.
 */
static int
block_entries(XLogReaderState *record, uint8 block_id, const char **data)
{
	Size		len;

	*data = XLogRecGetBlockData(record, block_id, &len);
	if (*data == NULL || len == 0 || len % SizeOfNeonCidEntry != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("neon_cid record at %X/%X has %zu bytes of data for block %u, not a multiple of %zu",
						LSN_FORMAT_ARGS(record->ReadRecPtr), (Size) (*data ? len : 0),
						block_id, (Size) SizeOfNeonCidEntry)));
	return (int) (len / SizeOfNeonCidEntry);
}

/* Sets the command ids of one entry's tuples on page. */
static void
apply_entry(Page page, const xl_neon_cid_entry *entry)
{
	OffsetNumber maxoff = PageGetMaxOffsetNumber(page);

	if (entry->ntuples == 0 || (entry->flags & ~XLH_NEON_CID_COMBO) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid neon_cid entry: %u tuples, flags 0x%02x",
						entry->ntuples, entry->flags)));
	for (int i = 0; i < entry->ntuples; i++)
	{
		OffsetNumber offnum = entry->offnum + i;
		ItemId		lp;
		HeapTupleHeader htup;

		if (offnum < FirstOffsetNumber || offnum > maxoff)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("neon_cid entry names line pointer %u of a page with %u",
							offnum, maxoff)));
		lp = PageGetItemId(page, offnum);
		if (!ItemIdIsNormal(lp))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("neon_cid entry names line pointer %u, which has no tuple",
							offnum)));
		htup = (HeapTupleHeader) PageGetItem(page, lp);
		htup->t_choice.t_heap.t_field3.t_cid = entry->cid;
		if (entry->flags & XLH_NEON_CID_COMBO)
			htup->t_infomask |= HEAP_COMBOCID;
		else
			htup->t_infomask &= ~HEAP_COMBOCID;
	}
}

static void
neon_cid_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info != XLOG_NEON_CID_SET)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("neon_cid_redo: unknown op code %u", info)));

	for (int block_id = 0; block_id <= XLogRecMaxBlockId(record); block_id++)
	{
		Buffer		buffer;

		if (!XLogRecHasBlockRef(record, block_id))
			continue;
		if (XLogReadBufferForRedo(record, block_id, &buffer) == BLK_NEEDS_REDO)
		{
			Page		page = BufferGetPage(buffer);
			const char *data;
			int			nentries = block_entries(record, block_id, &data);

			for (int i = 0; i < nentries; i++)
			{
				xl_neon_cid_entry entry;

				/* block data is not aligned */
				memcpy(&entry, data + i * SizeOfNeonCidEntry, SizeOfNeonCidEntry);
				apply_entry(page, &entry);
			}
			PageSetLSN(page, record->EndRecPtr);
			MarkBufferDirty(buffer);
		}
		if (BufferIsValid(buffer))
			UnlockReleaseBuffer(buffer);
	}
}

static void
neon_cid_desc(StringInfo buf, XLogReaderState *record)
{
	const char *sep = "";

	for (int block_id = 0; block_id <= XLogRecMaxBlockId(record); block_id++)
	{
		const char *data;
		Size		len;

		if (!XLogRecHasBlockRef(record, block_id))
			continue;
		data = XLogRecGetBlockData(record, block_id, &len);
		appendStringInfo(buf, "%sblock %d:", sep, block_id);
		sep = "; ";
		if (data == NULL)
		{
			appendStringInfoString(buf, " (image)");
			continue;
		}
		for (Size off = 0; off + SizeOfNeonCidEntry <= len; off += SizeOfNeonCidEntry)
		{
			xl_neon_cid_entry entry;

			memcpy(&entry, data + off, SizeOfNeonCidEntry);
			appendStringInfo(buf, " off %u", entry.offnum);
			if (entry.ntuples > 1)
				appendStringInfo(buf, "-%u", entry.offnum + entry.ntuples - 1);
			appendStringInfo(buf, " cid %u%s", entry.cid,
							 (entry.flags & XLH_NEON_CID_COMBO) ? " (combo)" : "");
		}
	}
}

static const char *
neon_cid_identify(uint8 info)
{
	switch (info & ~XLR_INFO_MASK)
	{
		case XLOG_NEON_CID_SET:
			return "SET";
		default:
			return NULL;
	}
}

/*
 * walredoproc.c: the single-page WAL redo helper of the pageserver.
 *
 * `postgres --wal-redo` (see the 0003 patch) loads this library and calls WalRedoMain().
 * The process is a stand-alone backend without postmaster, data directory or files: its
 * "shared" memory is private (0004 patch), its storage manager keeps a few pages in memory
 * (inmem_smgr.c), and it runs in recovery mode so that the resource managers' redo
 * routines work. It reads requests from stdin and answers on stdout.
 *
 * Protocol: each message is `type u8, length u32 (big-endian, counting itself but not the
 * type byte), payload`. A BufferTag is `forknum u8, spcnode u32, dbnode u32, relnode u32,
 * blkno u32` (17 bytes, big-endian).
 *
 *   'B' BeginRedoForBlock  tag                 start rebuilding that page (the "target");
 *                                              forgets all cached and stored pages
 *   'P' PushPage           tag, page[8192]     base image of the target (before any 'A')
 *   'A' ApplyRecord        end_lsn u64, record replay one WAL record (the raw XLogRecord,
 *                                              exactly xl_tot_len bytes) on the target;
 *                                              end_lsn is the LSN of the end of the record
 *   'G' GetPage            tag                 answer: the target page, 8192 raw bytes
 *   'H' Ping               -                   answer: 8192 zero bytes
 *
 * Only 'G' and 'H' produce output. End of input at a message boundary ends the process
 * with status 0. Any error is reported on stderr (log level WARNING and up, no line
 * prefix) and ends the process with a non-zero status; the pageserver starts a new one.
 *
 * A record must reference the target block; its other blocks are skipped through
 * redo_read_buffer_filter (0002 patch). Records of resource managers that change more
 * than relation pages (transactions, SLRUs, relation files, ...) are refused. The
 * XLOG resource manager is handled here (full-page images only), since its redo routine
 * insists on restoring every block of an XLOG_FPI record. The custom resource manager
 * neon_cid (134) is replayed by the neon_rmgr library, loaded at startup.
 *
 * Not done: seccomp sandboxing (Neon filters system calls once the loop starts).
 */
#include "postgres.h"

#include <sys/resource.h>
#include <unistd.h>

#include "access/heapam_xlog.h"
#include "access/rmgr.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecord.h"
#include "access/xlogutils.h"
#include "catalog/pg_control.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "port/pg_crc32c.h"
#include "storage/buf_internals.h"
#include "storage/bufmgr.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/smgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "inmem_smgr.h"

PG_MODULE_MAGIC;

/* Largest message payload accepted (a WAL record with up to 32 full-page images fits). */
#define MAX_PAYLOAD_BYTES (64 * 1024 * 1024)
#define STDIN_BUFFER_BYTES (64 * 1024)
#define TAG_BYTES 17
#define END_LSN_BYTES 8
/* libraries loaded as if by shared_preload_libraries (they may register rmgrs) */
#define WAL_REDO_PRELOAD_LIBRARIES "neon_rmgr"

PGDLLEXPORT void WalRedoMain(int argc, char *argv[]);

static BufferTag target_tag;
static bool have_target = false;	/* a BeginRedoForBlock was received */
static bool target_applied = false; /* ... and an ApplyRecord after it */
static XLogReaderState *reader;
static MemoryContext message_context;

static char stdin_buffer[STDIN_BUFFER_BYTES];
static size_t stdin_len = 0;
static size_t stdin_pos = 0;

static void init_wal_redo_process(const char *argv0);
static bool read_stdin(char *dst, size_t len, bool eof_ok);
static void process_message(char type, const char *payload, size_t len);

/*
 * Entry point, called by main() for `postgres --wal-redo [informational args...]`.
 */
void
WalRedoMain(int argc, char *argv[])
{
	sigjmp_buf	error_jmp;

	init_wal_redo_process(argv[0]);

	/* An ERROR is reported and ends the process; nothing outlives it. */
	if (sigsetjmp(error_jmp, 1) != 0)
	{
		error_context_stack = NULL;
		EmitErrorReport();
		_exit(1);
	}
	PG_exception_stack = &error_jmp;

	for (;;)
	{
		char		header[5];
		uint32		len;
		char	   *payload;

		MemoryContextReset(message_context);
		MemoryContextSwitchTo(message_context);

		if (!read_stdin(header, sizeof(header), true))
			proc_exit(0);
		memcpy(&len, &header[1], sizeof(len));
		len = pg_ntoh32(len);
		if (len < 4 || len - 4 > MAX_PAYLOAD_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid length %u of message '%c'", len, header[0])));
		payload = palloc(Max(len - 4, 1));
		read_stdin(payload, len - 4, false);
		process_message(header[0], payload, len - 4);
	}
}

/* ---------------------------------------------------------------------------------
 * Process setup
 * ---------------------------------------------------------------------------------
 */

static void
set_option(const char *name, const char *value)
{
	SetConfigOption(name, value, PGC_POSTMASTER, PGC_S_ARGV);
}

/*
 * A stand-alone backend with tiny shared memory (private memory here), an in-memory
 * storage manager and the resource managers ready to redo.
 */
static void
init_wal_redo_process(const char *argv0)
{
	struct rlimit no_core = {0, 0};

	/* A PANIC or failed assertion must not leave core files behind */
	(void) setrlimit(RLIMIT_CORE, &no_core);

	InitStandaloneProcess(argv0);
	InitializeGUCOptions();
	/* the pageserver logs every line of stderr */
	set_option("log_min_messages", "warning");
	set_option("log_line_prefix", "");
	/* the least shared memory that works: one page is rebuilt at a time */
	set_option("shared_buffers", "16");
	set_option("max_connections", "1");
	set_option("max_worker_processes", "0");
	set_option("max_wal_senders", "0");
	set_option("max_prepared_transactions", "0");
	set_option("autovacuum_max_workers", "1");
	set_option("max_locks_per_transaction", "10");
	set_option("wal_buffers", "8");

	/*
	 * Custom resource managers can only be registered while shared_preload_libraries
	 * are loaded: neon_rmgr replays the heap command-id records of our computes.
	 */
	set_option("shared_preload_libraries", WAL_REDO_PRELOAD_LIBRARIES);
	process_shared_preload_libraries();
	InitializeMaxBackends();

	/*
	 * PGReserveSemaphores() seeds its semaphore key search with the inode of the data
	 * directory; there is none, any directory will do.
	 */
	DataDir = "/";
	CreateSharedMemoryAndSemaphores();
	DataDir = NULL;

	InitAuxiliaryProcess();
	smgr_hook = smgr_inmem;
	smgr_init_hook = smgr_init_inmem;
	BaseInit();
	SetProcessingMode(NormalProcessing);
	CreateAuxProcessResourceOwner();	/* holds the buffer pins */

	/* redo routines only work in recovery */
	InRecovery = true;
	for (int rmid = 0; rmid <= RM_MAX_ID; rmid++)
	{
		if (RmgrIdExists(rmid) && GetRmgr(rmid).rm_startup != NULL)
			GetRmgr(rmid).rm_startup();
	}

	reader = XLogReaderAllocate(wal_segment_size, NULL, XL_ROUTINE(), NULL);
	if (reader == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while allocating a WAL reading processor")));
	message_context = AllocSetContextCreate(TopMemoryContext, "wal redo message",
											ALLOCSET_DEFAULT_SIZES);
}

/* ---------------------------------------------------------------------------------
 * Input and output
 * ---------------------------------------------------------------------------------
 */

/*
 * Reads exactly len bytes from stdin. Returns false at end of input before the first
 * byte if eof_ok; end of input anywhere else is an error.
 */
static bool
read_stdin(char *dst, size_t len, bool eof_ok)
{
	size_t		done = 0;

	while (done < len)
	{
		size_t		n;

		if (stdin_pos == stdin_len)
		{
			ssize_t		got = read(STDIN_FILENO, stdin_buffer, sizeof(stdin_buffer));

			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not read from stdin: %m")));
			if (got == 0)
			{
				if (eof_ok && done == 0)
					return false;
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("unexpected end of input inside a message")));
			}
			stdin_len = (size_t) got;
			stdin_pos = 0;
		}
		n = Min(len - done, stdin_len - stdin_pos);
		memcpy(dst + done, stdin_buffer + stdin_pos, n);
		stdin_pos += n;
		done += n;
	}
	return true;
}

static void
write_stdout(const char *src, size_t len)
{
	size_t		done = 0;

	while (done < len)
	{
		ssize_t		n = write(STDOUT_FILENO, src + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not write to stdout: %m")));
		done += (size_t) n;
	}
}

static uint32
get_u32(const char *p)
{
	uint32		v;

	memcpy(&v, p, sizeof(v));
	return pg_ntoh32(v);
}

static uint64
get_u64(const char *p)
{
	uint64		v;

	memcpy(&v, p, sizeof(v));
	return pg_ntoh64(v);
}

static void
expect_length(const char *what, size_t len, size_t expected)
{
	if (len != expected)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("%s message has %zu bytes of payload, expected %zu",
						what, len, expected)));
}

static void
parse_tag(const char *p, BufferTag *tag)
{
	uint8		forknum = (uint8) p[0];
	RelFileNode rnode;
	BlockNumber blkno;

	if (forknum > MAX_FORKNUM)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid fork number %u", forknum)));
	rnode.spcNode = get_u32(p + 1);
	rnode.dbNode = get_u32(p + 5);
	rnode.relNode = get_u32(p + 9);
	blkno = get_u32(p + 13);
	if (blkno == InvalidBlockNumber)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid block number %u", blkno)));
	INIT_BUFFERTAG(*tag, rnode, forknum, blkno);
}

/* Parses the tag of a message that must name the target page. */
static void
expect_target(const char *what, const char *p)
{
	BufferTag	tag;

	parse_tag(p, &tag);
	if (!have_target || !BUFFERTAGS_EQUAL(tag, target_tag))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("%s for block %u of relation %u/%u/%u fork %d, which is not the page being rebuilt",
						what, tag.blockNum, tag.rnode.spcNode, tag.rnode.dbNode,
						tag.rnode.relNode, tag.forkNum)));
}

/* ---------------------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------------------
 */

static void begin_redo_for_block(const char *payload, size_t len);
static void push_page(const char *payload, size_t len);
static void apply_record(const char *payload, size_t len);
static void get_page(const char *payload, size_t len);

static void
process_message(char type, const char *payload, size_t len)
{
	switch (type)
	{
		case 'B':
			begin_redo_for_block(payload, len);
			break;
		case 'P':
			push_page(payload, len);
			break;
		case 'A':
			apply_record(payload, len);
			break;
		case 'G':
			get_page(payload, len);
			break;
		case 'H':
			{
				PGAlignedBlock zeros;

				expect_length("Ping", len, 0);
				MemSet(zeros.data, 0, BLCKSZ);
				write_stdout(zeros.data, BLCKSZ);
				break;
			}
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid message type 0x%02x", (unsigned char) type)));
	}
}

/*
 * Drops every buffer (dirty or not, without writing it) and closes every relation, so
 * that nothing from the previous page's redo leaks into the next one.
 */
static void
forget_all_pages(void)
{
	SMgrRelation *rels = palloc(sizeof(SMgrRelation) * NBuffers);
	int			nrels = 0;

	for (int i = 0; i < NBuffers; i++)
	{
		BufferDesc *hdr = GetBufferDescriptor(i);
		uint32		state = pg_atomic_read_u32(&hdr->state);
		bool		seen = false;

		if (!(state & BM_TAG_VALID))
			continue;
		for (int j = 0; j < nrels && !seen; j++)
			seen = RelFileNodeEquals(rels[j]->smgr_rnode.node, hdr->tag.rnode);
		if (!seen)
			rels[nrels++] = smgropen(hdr->tag.rnode, InvalidBackendId);
	}
	if (nrels > 0)
		DropRelFileNodesAllBuffers(rels, nrels);
	smgrcloseall();
	pfree(rels);
}

static void
begin_redo_for_block(const char *payload, size_t len)
{
	BufferTag	tag;

	expect_length("BeginRedoForBlock", len, TAG_BYTES);
	parse_tag(payload, &tag);
	forget_all_pages();
	inmem_set_target(&tag);
	target_tag = tag;
	have_target = true;
	target_applied = false;
}

static void
push_page(const char *payload, size_t len)
{
	expect_length("PushPage", len, TAG_BYTES + BLCKSZ);
	expect_target("PushPage", payload);
	if (target_applied)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("PushPage after ApplyRecord")));
	inmem_store_target(payload + TAG_BYTES);
}

/* The resource managers whose records only change relation pages. */
static bool
rmgr_changes_only_pages(RmgrId rmid)
{
	switch (rmid)
	{
		case RM_XLOG_ID:		/* full-page images only, see redo_xlog_record */
		case RM_HEAP2_ID:
		case RM_HEAP_ID:
		case RM_BTREE_ID:
		case RM_HASH_ID:
		case RM_GIN_ID:
		case RM_GIST_ID:
		case RM_SEQ_ID:
		case RM_SPGIST_ID:
		case RM_BRIN_ID:
		case RM_GENERIC_ID:
		case RM_NEON_CID_ID:	/* neon_rmgr: t_cid of heap tuples */
			return true;
		default:
			return false;
	}
}

/* Checks the record header and CRC, like xlogreader.c does when reading WAL. */
static void
check_record(XLogRecord *record, size_t len)
{
	pg_crc32c	crc;

	if (len < SizeOfXLogRecord || record->xl_tot_len != len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("WAL record of %zu bytes has xl_tot_len %u", len,
						len >= SizeOfXLogRecord ? record->xl_tot_len : 0)));
	if (!RmgrIdExists(record->xl_rmid) || !rmgr_changes_only_pages(record->xl_rmid))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("records of resource manager %u cannot be replayed on a single page",
						record->xl_rmid)));
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, ((char *) record) + SizeOfXLogRecord, len - SizeOfXLogRecord);
	COMP_CRC32C(crc, (char *) record, offsetof(XLogRecord, xl_crc));
	FIN_CRC32C(crc);
	if (!EQ_CRC32C(record->xl_crc, crc))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("incorrect resource manager data checksum in WAL record")));
}

static bool
is_target_block(XLogReaderState *record, uint8 block_id)
{
	RelFileNode rnode;
	ForkNumber	forknum;
	BlockNumber blkno;

	if (!XLogRecGetBlockTagExtended(record, block_id, &rnode, &forknum, &blkno, NULL))
		return false;
	return RelFileNodeEquals(rnode, target_tag.rnode) &&
		forknum == target_tag.forkNum && blkno == target_tag.blockNum;
}

/* redo_read_buffer_filter: only the target block is replayed */
static bool
skip_other_blocks(XLogReaderState *record, uint8 block_id)
{
	return !is_target_block(record, block_id);
}

/* The XLOG resource manager: restore the target's full-page image, if any. */
static void
redo_xlog_record(XLogReaderState *record, uint8 block_id)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
	Buffer		buffer;

	if (info != XLOG_FPI && info != XLOG_FPI_FOR_HINT)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("XLOG record %s cannot be replayed on a single page",
						GetRmgr(RM_XLOG_ID).rm_identify(info))));
	if (!XLogRecHasBlockImage(record, block_id))
	{
		/* a hint-bit record without an image changes nothing */
		if (info == XLOG_FPI)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("XLOG_FPI record did not contain a full-page image")));
		return;
	}
	if (XLogReadBufferForRedo(record, block_id, &buffer) != BLK_RESTORED)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("full-page image of the target block was not restored")));
	UnlockReleaseBuffer(buffer);
}

static void
apply_error_context(void *arg)
{
	XLogReaderState *record = (XLogReaderState *) arg;
	RmgrData	rmgr = GetRmgr(XLogRecGetRmid(record));
	const char *id = rmgr.rm_identify(XLogRecGetInfo(record));

	errcontext("WAL redo of %s/%s record ending at %X/%X",
			   rmgr.rm_name, id ? id : "UNKNOWN",
			   LSN_FORMAT_ARGS(record->EndRecPtr));
}

static void
apply_record(const char *payload, size_t len)
{
	XLogRecPtr	end_lsn;
	XLogRecord *record;
	size_t		record_len;
	DecodedXLogRecord *decoded;
	char	   *errormsg = NULL;
	int			target_block = -1;
	ErrorContextCallback errcallback;

	if (!have_target)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("ApplyRecord before BeginRedoForBlock")));
	if (len < END_LSN_BYTES + SizeOfXLogRecord)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("ApplyRecord message of %zu bytes is too short", len)));
	end_lsn = get_u64(payload);
	record_len = len - END_LSN_BYTES;
	/* palloc'd payload + 8: MAXALIGNed, as XLogRecord needs */
	record = (XLogRecord *) (payload + END_LSN_BYTES);
	check_record(record, record_len);

	/* The start of the record is not sent: messages show its end. */
	reader->ReadRecPtr = end_lsn;
	reader->EndRecPtr = end_lsn;
	decoded = palloc(DecodeXLogRecordRequiredSpace(record_len));
	decoded->oversized = true;	/* not in the reader's decode buffer */
	if (!DecodeXLogRecord(reader, decoded, record, end_lsn, &errormsg))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decode WAL record ending at %X/%X: %s",
						LSN_FORMAT_ARGS(end_lsn), errormsg ? errormsg : "?")));
	decoded->next_lsn = end_lsn;
	reader->record = decoded;

	for (int block_id = 0; block_id <= XLogRecMaxBlockId(reader); block_id++)
	{
		if (is_target_block(reader, block_id))
			target_block = block_id;
	}
	if (target_block < 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("WAL record ending at %X/%X does not reference the page being rebuilt",
						LSN_FORMAT_ARGS(end_lsn))));

	errcallback.callback = apply_error_context;
	errcallback.arg = reader;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	redo_read_buffer_filter = skip_other_blocks;
	if (XLogRecGetRmid(reader) == RM_XLOG_ID)
		redo_xlog_record(reader, (uint8) target_block);
	else
		GetRmgr(XLogRecGetRmid(reader)).rm_redo(reader);
	redo_read_buffer_filter = NULL;

	/* RBM_NORMAL reads of an uninitialised page are remembered, not reported */
	if (XLogHaveInvalidPages())
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the page is not initialized: no base image and the record does not initialize it")));

	error_context_stack = errcallback.previous;
	reader->record = NULL;
	target_applied = true;
}

static void
get_page(const char *payload, size_t len)
{
	Buffer		buffer;
	PGAlignedBlock copy;

	expect_length("GetPage", len, TAG_BYTES);
	expect_target("GetPage", payload);
	buffer = ReadBufferWithoutRelcache(target_tag.rnode, target_tag.forkNum,
									   target_tag.blockNum, RBM_NORMAL, NULL, true);
	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	memcpy(copy.data, BufferGetPage(buffer), BLCKSZ);
	UnlockReleaseBuffer(buffer);
	write_stdout(copy.data, BLCKSZ);
}

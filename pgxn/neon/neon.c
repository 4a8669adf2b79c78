/*
 * neon.c: the neon extension's entry point.
 *
 * Loaded with shared_preload_libraries = 'neon'.  It defines the GUCs, reserves shared
 * memory for the last-written-LSN and relation-size caches, and installs the storage
 * manager (pagestore_smgr.c) and the hooks of the compute's PostgreSQL patches
 * (smgr_hook, dbsize_hook, the last-written-LSN hooks).
 */
#include "postgres.h"

#include "access/lwlsn.h"
#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/smgr.h"
#include "utils/guc.h"

#include "neon.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *neon_pageserver_connstring = NULL;
char	   *neon_tenant_id = NULL;
char	   *neon_timeline_id = NULL;
int			neon_max_reconnect_attempts = 60;
int			neon_readahead_buffer_size = 128;
int			neon_seqscan_readahead = 16;
int			neon_lwlsn_cache_size = 128 * 1024;
int			neon_relsize_cache_size = 64 * 1024;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Reserves the shared memory and the lock tranches of both caches. */
static void
neon_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(lwlsn_shmem_size());
	RequestAddinShmemSpace(relsize_shmem_size());
	RequestNamedLWLockTranche("neon_lwlsn", 1);
	RequestNamedLWLockTranche("neon_relsize", 1);
}

static void
neon_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	lwlsn_shmem_init();
	relsize_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

static void
neon_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		neon_smgr_xact_callback();
}

/* A tenant or timeline id is 32 hex digits (or empty: not configured). */
static bool
check_neon_id(char **newval, void **extra, GucSource source)
{
	const char *s = *newval;

	if (s == NULL || s[0] == '\0')
		return true;
	if (strlen(s) != 32 || strspn(s, "0123456789abcdefABCDEF") != 32)
	{
		GUC_check_errdetail("An id is 32 hexadecimal digits.");
		return false;
	}
	return true;
}

static void
define_gucs(void)
{
	DefineCustomStringVariable("neon.pageserver_connstring",
							   "libpq connection string of the pageserver's page service",
							   NULL, &neon_pageserver_connstring, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("neon.tenant_id", "tenant whose pages this compute reads",
							   NULL, &neon_tenant_id, "",
							   PGC_POSTMASTER, 0, check_neon_id, NULL, NULL);
	DefineCustomStringVariable("neon.timeline_id", "timeline whose pages this compute reads",
							   NULL, &neon_timeline_id, "",
							   PGC_POSTMASTER, 0, check_neon_id, NULL, NULL);
	DefineCustomIntVariable("neon.max_reconnect_attempts",
							"attempts to reconnect to the pageserver before a request fails",
							"The delay between attempts doubles from 10 ms up to 2 s.",
							&neon_max_reconnect_attempts, 60, 0,
							NEON_MAX_RECONNECT_ATTEMPTS,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("neon.readahead_buffer_size",
							"entries of a backend's ring of pipelined GetPage requests",
							NULL, &neon_readahead_buffer_size, 128, 1,
							NEON_MAX_READAHEAD_BUFFER_ENTRIES,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("neon.seqscan_readahead",
							"blocks requested ahead of a sequential read (0: off)",
							NULL, &neon_seqscan_readahead, 16, 0,
							NEON_MAX_READAHEAD_BUFFER_ENTRIES,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("neon.last_written_lsn_cache_size",
							"entries of the last-written-LSN cache",
							NULL, &neon_lwlsn_cache_size, 128 * 1024, 16,
							NEON_MAX_CACHE_ENTRIES,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("neon.relsize_hash_size",
							"entries of the relation-size cache",
							NULL, &neon_relsize_cache_size, 64 * 1024, 16,
							NEON_MAX_CACHE_ENTRIES,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("neon");
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errmsg("neon must be loaded with shared_preload_libraries")));

	define_gucs();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = neon_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = neon_shmem_startup;

	smgr_hook = neon_smgr_choose;
	smgr_init_hook = neon_smgr_init;
	smgr_shutdown_hook = neon_smgr_shutdown;
	dbsize_hook = neon_dbsize;

	set_lwlsn_relation_hook = lwlsn_set_relation;
	set_lwlsn_db_hook = lwlsn_set_db;
	set_max_lwlsn_hook = lwlsn_set_max;

	RegisterXactCallback(neon_xact_callback, NULL);
}

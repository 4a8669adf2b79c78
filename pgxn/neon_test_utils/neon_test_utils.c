/*
 * neon_test_utils: SQL-callable helpers for tests.
 *
 * test_consume_xids(n) assigns n transaction ids inside the calling transaction, the way
 * subtransactions get theirs (so they are not added to the top transaction's PGPROC array),
 * which advances nextXid by n in one call.
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/xid8.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(test_consume_xids);

Datum
test_consume_xids(PG_FUNCTION_ARGS)
{
	int64		n = PG_GETARG_INT64(0);
	FullTransactionId last;

	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("number of xids to consume must not be negative")));

	/* The top transaction gets its xid first, so the consumed ones follow it. */
	(void) GetTopTransactionId();
	last = ReadNextFullTransactionId();

	for (int64 i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		last = GetNewTransactionId(true);
	}

	PG_RETURN_FULLTRANSACTIONID(last);
}

/*
 * libpagestore.c: the backend's libpq connection to the pageserver's page service.
 *
 * One connection per backend, opened on first use: `pagestream_v3 <tenant> <timeline>`,
 * then CopyBoth; every request and response is one CopyData message (communicator.c
 * builds and checks them).  The socket is non-blocking so that a backend pipelining
 * requests keeps reading responses while its requests are still being sent.  Waits are
 * interruptible (query cancel, postmaster death).  A lost connection is reopened with
 * bounded exponential backoff: neon.max_reconnect_attempts attempts, the delay doubling
 * from RECONNECT_DELAY_MIN_MS to RECONNECT_DELAY_MAX_MS.
 */
#include "postgres.h"

#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "neon.h"

#define RECONNECT_DELAY_MIN_MS 10
#define RECONNECT_DELAY_MAX_MS 2000

static PGconn *pageserver_conn = NULL;

/* The message of the last error the pageserver ended the connection with. */
char		pagestore_server_error[PAGESTORE_SERVER_ERROR_BYTES];
static WaitEventSet *conn_wait_set = NULL;
static int	conn_socket_event = -1;

bool
pagestore_connected(void)
{
	return pageserver_conn != NULL;
}

void
pagestore_disconnect(void)
{
	if (conn_wait_set != NULL)
	{
		FreeWaitEventSet(conn_wait_set);
		conn_wait_set = NULL;
	}
	if (pageserver_conn != NULL)
	{
		PQfinish(pageserver_conn);
		pageserver_conn = NULL;
	}
}

/* The first line of libpq's message, for logs. */
static char *
conn_error(PGconn *conn)
{
	char	   *msg = pstrdup(PQerrorMessage(conn));
	char	   *nl = strchr(msg, '\n');

	if (nl)
		*nl = '\0';
	return msg;
}

/*
 * Opens the connection and enters pagestream mode; false (with *err set) on failure.
 */
static bool
try_connect(char **err)
{
	PGconn	   *conn;
	PGresult   *res;
	char	   *query;

	conn = PQconnectdb(neon_pageserver_connstring);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		*err = conn_error(conn);
		PQfinish(conn);
		return false;
	}
	query = psprintf("pagestream_v3 %s %s", neon_tenant_id, neon_timeline_id);
	if (!PQsendQuery(conn, query))
	{
		*err = conn_error(conn);
		PQfinish(conn);
		return false;
	}
	pfree(query);
	res = PQgetResult(conn);
	if (PQresultStatus(res) != PGRES_COPY_BOTH)
	{
		*err = pstrdup(res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
		PQclear(res);
		PQfinish(conn);
		return false;
	}
	PQclear(res);
	if (PQsetnonblocking(conn, 1) != 0)
	{
		*err = conn_error(conn);
		PQfinish(conn);
		return false;
	}

	conn_wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(conn_wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(conn_wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	conn_socket_event = AddWaitEventToSet(conn_wait_set, WL_SOCKET_READABLE,
										  PQsocket(conn), NULL, NULL);
	pageserver_conn = conn;
	return true;
}

/*
 * Connects if not connected, retrying with backoff; ERROR after
 * neon.max_reconnect_attempts failed attempts.
 */
void
pagestore_connect_with_backoff(void)
{
	long		delay_ms = RECONNECT_DELAY_MIN_MS;
	char	   *err = NULL;

	if (pageserver_conn != NULL)
		return;
	if (neon_pageserver_connstring == NULL || neon_pageserver_connstring[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("neon.pageserver_connstring is not set")));
	if (neon_tenant_id[0] == '\0' || neon_timeline_id[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("neon.tenant_id and neon.timeline_id must be set")));

	for (int attempt = 0;; attempt++)
	{
		if (try_connect(&err))
		{
			if (attempt > 0)
				elog(LOG, "reconnected to the pageserver after %d failed attempts", attempt);
			return;
		}
		if (attempt >= neon_max_reconnect_attempts)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not connect to the pageserver at \"%s\" after %d attempts: %s",
							neon_pageserver_connstring, attempt + 1, err)));
		elog(LOG, "could not connect to the pageserver (attempt %d of %d, retrying in %ld ms): %s",
			 attempt + 1, neon_max_reconnect_attempts + 1, delay_ms, err);
		pfree(err);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 delay_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		delay_ms = Min(delay_ms * 2, RECONNECT_DELAY_MAX_MS);
	}
}

/* Waits until the socket is ready for events (or an interrupt is due). */
static void
wait_socket(uint32 events)
{
	WaitEvent	ev;

	ModifyWaitEvent(conn_wait_set, conn_socket_event, events, NULL);
	(void) WaitEventSetWait(conn_wait_set, -1, &ev, 1, PG_WAIT_EXTENSION);
	if (ev.events & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Queues one message; false if the connection is broken. */
bool
pagestore_send(const char *msg, int len)
{
	if (pageserver_conn == NULL)
		return false;
	if (PQputCopyData(pageserver_conn, msg, len) <= 0)
	{
		elog(LOG, "lost the pageserver connection while sending: %s",
			 conn_error(pageserver_conn));
		return false;
	}
	return true;
}

/* Sends everything queued, reading incoming data meanwhile; false if broken. */
bool
pagestore_flush(void)
{
	if (pageserver_conn == NULL)
		return false;
	for (;;)
	{
		int			r = PQflush(pageserver_conn);

		if (r == 0)
			return true;
		if (r < 0)
		{
			elog(LOG, "lost the pageserver connection while flushing: %s",
				 conn_error(pageserver_conn));
			return false;
		}
		wait_socket(WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE);
		if (!PQconsumeInput(pageserver_conn))
		{
			elog(LOG, "lost the pageserver connection while flushing: %s",
				 conn_error(pageserver_conn));
			return false;
		}
	}
}

/*
 * Waits for the next message; its length, with *msg to be freed by pagestore_free(),
 * -1 if the connection is broken, or -2 if the pageserver ended it with an error
 * (in pagestore_server_error).
 */
int
pagestore_receive(char **msg)
{
	if (pageserver_conn == NULL)
		return -1;
	for (;;)
	{
		int			r = PQgetCopyData(pageserver_conn, msg, 1);

		if (r > 0)
			return r;
		if (r < 0)
		{
			PGresult   *res = PQgetResult(pageserver_conn);
			bool		server_error = res && PQresultErrorMessage(res)[0];

			if (server_error)
				strlcpy(pagestore_server_error, PQresultErrorMessage(res),
						sizeof(pagestore_server_error));
			elog(LOG, "the pageserver connection ended: %s",
				 server_error ? pagestore_server_error : conn_error(pageserver_conn));
			PQclear(res);
			return server_error ? -2 : -1;
		}
		wait_socket(WL_SOCKET_READABLE);
		if (!PQconsumeInput(pageserver_conn))
		{
			elog(LOG, "lost the pageserver connection while receiving: %s",
				 conn_error(pageserver_conn));
			return -1;
		}
	}
}

void
pagestore_free(char *msg)
{
	PQfreemem(msg);
}

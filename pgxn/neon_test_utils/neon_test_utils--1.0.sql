\echo Use "CREATE EXTENSION neon_test_utils" to load this file. \quit

-- Assigns n transaction ids without committing rows, so tests can advance nextXid quickly
-- (CLOG pages and segments, wraparound-related state). Returns the last xid assigned.
CREATE FUNCTION test_consume_xids(n bigint)
RETURNS xid8
AS 'MODULE_PATHNAME', 'test_consume_xids'
LANGUAGE C STRICT PARALLEL UNSAFE;

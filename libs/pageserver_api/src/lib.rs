//! Wire and API types of the pageserver, shared by its clients and tests.

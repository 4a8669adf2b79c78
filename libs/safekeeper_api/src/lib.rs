//! Wire and API types of the safekeeper, shared by its clients and tests.

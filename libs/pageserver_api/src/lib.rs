//! Wire and API types of the pageserver, shared by its clients and tests.

pub mod key;
pub mod value;

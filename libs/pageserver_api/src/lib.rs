//! Wire and API types of the pageserver, shared by its clients and tests.

pub mod key;
pub mod keyspace;
pub mod models;
pub mod pagestream;
pub mod reltag;
pub mod value;

//! The compute spec given to `compute_ctl` and the models of its HTTP API.
//!
//! - [`spec`]: [`spec::ComputeSpec`], the JSON document that says which timeline a compute
//!   serves, in which mode, and which roles, databases and settings it must have;
//! - [`connstring`]: the libpq keyword/value (or URI) connection strings used in specs;
//! - [`responses`]: what `GET /status` and the other endpoints answer.

pub mod connstring;
pub mod responses;
pub mod spec;

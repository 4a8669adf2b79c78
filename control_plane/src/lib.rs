//! The local control plane behind `neon_local`: the repository directory and its config.

pub mod endpoint;
pub mod local_env;
pub mod pageserver;
pub mod pg_copy;

//! Small building blocks shared by every daemon and tool.

pub mod crashsafe;
pub mod id;
pub mod logging;
pub mod lsn;
pub mod pidfile;
pub mod signals;

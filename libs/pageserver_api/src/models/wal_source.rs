//! Bodies of `/v1/tenant/{tenant_id}/timeline/{timeline_id}/wal_source`: where a timeline's
//! walreceiver pulls WAL from (physical replication from a primary), and how it is doing.

use serde::{Deserialize, Serialize};
use utils::lsn::Lsn;

/// Replication slot name used when a request names none.
pub const DEFAULT_WAL_SOURCE_SLOT: &str = "pageserver";

/// `PUT .../wal_source`: stream WAL into the timeline from this server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSourceRequest {
    /// libpq keyword/value connection string (`host=127.0.0.1 port=55432 user=cloud_admin`)
    /// or `postgresql://` URI of the primary.
    pub connstr: String,
    /// Physical replication slot on the primary (created if missing).
    #[serde(default = "default_slot_name")]
    pub slot_name: String,
}

fn default_slot_name() -> String {
    DEFAULT_WAL_SOURCE_SLOT.to_string()
}

/// State of a timeline's walreceiver (`GET .../wal_source`, and `wal_receiver` in the
/// timeline info).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalReceiverStatus {
    /// The connection string with any password replaced by `***`.
    pub connstr: String,
    pub slot_name: String,
    /// Streaming right now.
    pub connected: bool,
    /// The most recent connection or streaming error, if the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// End of the WAL received so far in this process's lifetime.
    #[serde(default)]
    pub last_received_lsn: Option<Lsn>,
    /// The source's end of WAL as of its last message.
    #[serde(default)]
    pub source_wal_end_lsn: Option<Lsn>,
    /// Flush position in the last status update sent to the source.
    #[serde(default)]
    pub last_feedback_flush_lsn: Option<Lsn>,
    /// Connections attempted after the first one.
    pub reconnects: u64,
}

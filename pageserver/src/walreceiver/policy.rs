//! When to send status updates and when to make ingested WAL durable: pure functions over a
//! snapshot of the stream's state, so they are tested without I/O.
//!
//! Status updates report `write = apply = last_record_lsn` and
//! `flush = disk_consistent_lsn`. The walsender keeps WAL above `flush` in the slot, and at
//! shutdown it waits until the reported flush position reaches everything it sent; so when it
//! asks for a reply, everything ingested is made durable first.

use std::time::{Duration, Instant};

use utils::lsn::Lsn;

/// Longest time between two status updates.
pub const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);
/// Ingested but not durable WAL is flushed after this long without new records.
pub const IDLE_FLUSH_AFTER: Duration = Duration::from_secs(10);
/// Status updates ask the source for a reply when it has been silent this long.
pub const SOURCE_PING_AFTER: Duration = Duration::from_secs(10);
/// A source silent this long (despite being asked to reply) is given up and reconnected.
pub const SOURCE_SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Backoff before the first reconnection.
pub const RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest backoff between reconnections.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the stream loop knows at one moment.
#[derive(Debug, Clone, Copy)]
pub struct StreamSnapshot {
    pub now: Instant,
    pub last_feedback: Instant,
    /// When records were last ingested (or the stream started).
    pub last_ingest: Instant,
    /// When a flush was last done (or the stream started).
    pub last_flush: Instant,
    /// The sender asked for an immediate reply since the last update.
    pub reply_requested: bool,
    pub last_record_lsn: Lsn,
    pub disk_consistent_lsn: Lsn,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    SendFeedback,
    /// Freeze and flush the timeline, then send a status update.
    FlushThenFeedback,
}

/// Decides after every batch of messages and at every tick. The caller ingests every complete
/// record received before asking.
pub fn decide(s: &StreamSnapshot) -> Action {
    let undurable = s.disk_consistent_lsn < s.last_record_lsn;
    if s.reply_requested {
        return if undurable {
            Action::FlushThenFeedback
        } else {
            Action::SendFeedback
        };
    }
    let idle = s.now.saturating_duration_since(s.last_ingest) >= IDLE_FLUSH_AFTER
        && s.now.saturating_duration_since(s.last_flush) >= IDLE_FLUSH_AFTER;
    if undurable && idle {
        return Action::FlushThenFeedback;
    }
    if s.now.saturating_duration_since(s.last_feedback) >= FEEDBACK_INTERVAL {
        return Action::SendFeedback;
    }
    Action::Nothing
}

/// When [`decide`] may next want something without new messages arriving.
pub fn next_wakeup(s: &StreamSnapshot) -> Instant {
    let feedback = s.last_feedback + FEEDBACK_INTERVAL;
    if s.disk_consistent_lsn < s.last_record_lsn {
        let flush = (s.last_ingest + IDLE_FLUSH_AFTER).max(s.last_flush + IDLE_FLUSH_AFTER);
        feedback.min(flush)
    } else {
        feedback
    }
}

/// The backoff after `failures` consecutive failed attempts (1 = the first failure).
pub fn reconnect_backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    RECONNECT_BACKOFF_INITIAL
        .saturating_mul(1u32 << shift)
        .min(RECONNECT_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(now: Instant) -> StreamSnapshot {
        StreamSnapshot {
            now,
            last_feedback: now,
            last_ingest: now,
            last_flush: now,
            reply_requested: false,
            last_record_lsn: Lsn(0x2000),
            disk_consistent_lsn: Lsn(0x2000),
        }
    }

    #[test]
    fn reply_request_flushes_only_undurable_wal() {
        let now = Instant::now();
        let mut s = snap(now);
        s.reply_requested = true;
        assert_eq!(decide(&s), Action::SendFeedback);
        s.disk_consistent_lsn = Lsn(0x1000);
        assert_eq!(decide(&s), Action::FlushThenFeedback);
    }

    #[test]
    fn periodic_feedback_and_idle_flush() {
        let t0 = Instant::now();
        let mut s = snap(t0);
        assert_eq!(decide(&s), Action::Nothing);
        s.now = t0 + FEEDBACK_INTERVAL;
        assert_eq!(decide(&s), Action::SendFeedback);
        s.disk_consistent_lsn = Lsn(0x1000);
        assert_eq!(decide(&s), Action::SendFeedback);
        s.now = t0 + IDLE_FLUSH_AFTER;
        assert_eq!(decide(&s), Action::FlushThenFeedback);
        // Still streaming: no idle flush.
        s.last_ingest = t0 + IDLE_FLUSH_AFTER;
        assert_eq!(decide(&s), Action::SendFeedback);
        assert_eq!(next_wakeup(&s), t0 + FEEDBACK_INTERVAL);
        s.last_feedback = s.now;
        assert_eq!(next_wakeup(&s), s.now + FEEDBACK_INTERVAL);
    }

    #[test]
    fn wakeup_is_never_later_than_a_decision_change() {
        let t0 = Instant::now();
        for fb_ms in [0u64, 300, 999, 5000] {
            for ingest_ms in [0u64, 4000, 9999, 20000] {
                let mut s = snap(t0);
                s.disk_consistent_lsn = Lsn(0x1000);
                s.last_feedback = t0 + Duration::from_millis(fb_ms);
                s.last_ingest = t0 + Duration::from_millis(ingest_ms);
                s.now = s.last_feedback.max(s.last_ingest);
                let at = decide(&StreamSnapshot {
                    now: next_wakeup(&s),
                    ..s
                });
                assert_ne!(at, Action::Nothing, "{fb_ms} {ingest_ms}");
            }
        }
    }

    #[test]
    fn backoff_grows_to_its_bound() {
        assert_eq!(reconnect_backoff(1), RECONNECT_BACKOFF_INITIAL);
        assert_eq!(reconnect_backoff(2), RECONNECT_BACKOFF_INITIAL * 2);
        let mut prev = Duration::ZERO;
        for n in 1..100 {
            let b = reconnect_backoff(n);
            assert!(b >= prev && b <= RECONNECT_BACKOFF_MAX);
            prev = b;
        }
        assert_eq!(reconnect_backoff(u32::MAX), RECONNECT_BACKOFF_MAX);
    }
}

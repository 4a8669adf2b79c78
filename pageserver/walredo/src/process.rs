//! One `postgres --wal-redo` process: spawning it, a request/answer round trip with a
//! deadline, logging its stderr, and killing it.
//!
//! stdin and stdout are non-blocking pipes driven with poll(2), so a round trip never
//! waits past its deadline. stderr is read by a thread that logs every line through
//! `tracing` (at the level PostgreSQL gave it) and keeps the last few lines for error
//! reports.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use postgres_ffi::page::BLCKSZ;

/// Lines of stderr kept for error reports.
const STDERR_TAIL_LINES: usize = 20;
/// Longer stderr lines are cut to this many bytes.
const MAX_STDERR_LINE_BYTES: usize = 4096;
/// How long a process that closed its stdout may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// Interval of the exit-status polling during [`EXIT_GRACE`].
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Environment variables passed through to the process (everything else is cleared).
const PASSED_ENV_VARS: [&str; 3] = ["LD_LIBRARY_PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS"];

/// The user a process runs as (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// How a round trip failed. The process must not be used again after any of these.
#[derive(Debug, thiserror::Error)]
pub enum RoundTripError {
    #[error("no answer before the deadline")]
    Timeout,
    #[error("the process closed its end of a pipe")]
    Closed,
    #[error("pipe I/O: {0}")]
    Io(#[from] io::Error),
}

/// What is known about a process after it ended.
#[derive(Debug)]
pub struct ProcessEnd {
    /// Its exit status, if it could be collected.
    pub status: Option<ExitStatus>,
    /// The last lines it wrote to stderr.
    pub stderr_tail: Vec<String>,
}

/// A running wal-redo process.
pub struct WalRedoProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr_logger: Option<JoinHandle<()>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl WalRedoProcess {
    /// Starts `<postgres_bin> --wal-redo` with a cleared environment, in `/`.
    pub fn spawn(postgres_bin: &Path, run_as: Option<RunAs>, label: &str) -> io::Result<Self> {
        let mut cmd = Command::new(postgres_bin);
        cmd.arg("--wal-redo")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in PASSED_ENV_VARS {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        if let Some(user) = run_as {
            // std drops supplementary groups too when it switches from root
            cmd.uid(user.uid).gid(user.gid);
        }
        let mut child = cmd.spawn()?;
        let (stdin, stdout, stderr) = match take_pipes(&mut child) {
            Ok(pipes) => pipes,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let logger = {
            let tail = Arc::clone(&stderr_tail);
            let label = label.to_string();
            let pid = child.id();
            std::thread::Builder::new()
                .name(format!("walredo-stderr-{pid}"))
                .spawn(move || log_stderr(stderr, &tail, pid, &label))
        };
        let mut process = WalRedoProcess {
            child,
            stdin,
            stdout,
            stderr_logger: None,
            stderr_tail,
        };
        process.stderr_logger = Some(logger?);
        Ok(process)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `input` (a whole request), then reads the one page it answers with.
    pub fn round_trip(
        &mut self,
        input: &[u8],
        deadline: Instant,
    ) -> Result<Box<[u8; BLCKSZ]>, RoundTripError> {
        self.write_all(input, deadline)?;
        let mut page = Box::new([0u8; BLCKSZ]);
        let mut got = 0;
        while got < BLCKSZ {
            wait_ready(self.stdout.as_fd(), PollFlags::POLLIN, deadline)?;
            match self.stdout.read(&mut page[got..]) {
                Ok(0) => return Err(RoundTripError::Closed),
                Ok(n) => got += n,
                Err(e) if retryable(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(page)
    }

    fn write_all(&mut self, mut data: &[u8], deadline: Instant) -> Result<(), RoundTripError> {
        while !data.is_empty() {
            wait_ready(self.stdin.as_fd(), PollFlags::POLLOUT, deadline)?;
            match self.stdin.write(data) {
                Ok(0) => return Err(RoundTripError::Closed),
                Ok(n) => data = &data[n..],
                Err(e) if retryable(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(RoundTripError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Ends the process: gives it [`EXIT_GRACE`] to exit by itself if `wait_for_exit`
    /// (it closed its output after an error), otherwise kills it at once. Collects its
    /// exit status and the tail of its stderr.
    pub fn finish(mut self, wait_for_exit: bool) -> ProcessEnd {
        let mut status = None;
        if wait_for_exit {
            let deadline = Instant::now() + EXIT_GRACE;
            while status.is_none() && Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(s)) => status = Some(s),
                    Ok(None) => std::thread::sleep(EXIT_POLL_INTERVAL),
                    Err(_) => break,
                }
            }
        }
        if status.is_none() {
            let _ = self.child.kill();
            status = self.child.wait().ok();
        }
        // stderr reaches end of file once the process is gone
        if let Some(logger) = self.stderr_logger.take() {
            let _ = logger.join();
        }
        let stderr_tail = lock_tail(&self.stderr_tail).iter().cloned().collect();
        ProcessEnd {
            status,
            stderr_tail,
        }
    }
}

impl Drop for WalRedoProcess {
    fn drop(&mut self) {
        // Nothing of value lives in the process: kill it rather than wait for it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(logger) = self.stderr_logger.take() {
            let _ = logger.join();
        }
    }
}

fn take_pipes(child: &mut Child) -> io::Result<(ChildStdin, ChildStdout, ChildStderr)> {
    let missing = || io::Error::other("child pipe missing");
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    set_nonblocking(stdin.as_fd())?;
    set_nonblocking(stdout.as_fd())?;
    Ok((stdin, stdout, stderr))
}

fn set_nonblocking(fd: BorrowedFd) -> io::Result<()> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(())
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Waits until `fd` is ready for `events` (or has hung up / failed, which the next read or
/// write reports), or fails with Timeout at `deadline`.
fn wait_ready(fd: BorrowedFd, events: PollFlags, deadline: Instant) -> Result<(), RoundTripError> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(RoundTripError::Timeout);
        }
        // round up so that a sub-millisecond remainder does not spin
        let millis = (deadline - now).as_millis() + 1;
        let timeout = PollTimeout::from(u16::try_from(millis).unwrap_or(u16::MAX));
        let mut fds = [PollFd::new(fd, events)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(io::Error::from(e).into()),
        }
    }
}

fn lock_tail(tail: &Mutex<VecDeque<String>>) -> std::sync::MutexGuard<'_, VecDeque<String>> {
    // a panic while holding the lock cannot leave the deque inconsistent
    tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Log level of a stderr line (PostgreSQL prefixes its messages with the level; detail and
/// context lines inherit the level of the message they belong to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineLevel {
    Error,
    Warn,
    Info,
    Debug,
}

pub(crate) fn line_level(line: &str, previous: LineLevel) -> LineLevel {
    let prefix = line.split_once(':').map_or("", |(p, _)| p);
    match prefix {
        "PANIC" | "FATAL" | "ERROR" | "TRAP" => LineLevel::Error,
        "WARNING" => LineLevel::Warn,
        "LOG" | "INFO" | "NOTICE" => LineLevel::Info,
        p if p.starts_with("DEBUG") => LineLevel::Debug,
        "DETAIL" | "HINT" | "CONTEXT" | "LOCATION" | "STATEMENT" => previous,
        // anything else on stderr is unexpected
        _ => LineLevel::Warn,
    }
}

fn log_stderr(stderr: ChildStderr, tail: &Mutex<VecDeque<String>>, pid: u32, label: &str) {
    let mut reader = BufReader::new(stderr);
    let mut level = LineLevel::Warn;
    let mut line = Vec::new();
    while let Ok(true) = read_line_bounded(&mut reader, &mut line) {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        level = line_level(text, level);
        match level {
            LineLevel::Error => tracing::error!(pid, tenant = label, "wal-redo: {text}"),
            LineLevel::Warn => tracing::warn!(pid, tenant = label, "wal-redo: {text}"),
            LineLevel::Info => tracing::info!(pid, tenant = label, "wal-redo: {text}"),
            LineLevel::Debug => tracing::debug!(pid, tenant = label, "wal-redo: {text}"),
        }
        let mut tail = lock_tail(tail);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text.to_string());
    }
}

/// Reads one line into `line` (without the newline), keeping at most
/// [`MAX_STDERR_LINE_BYTES`] of it. Returns false at end of input.
fn read_line_bounded(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let mut read_any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (chunk, consumed, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_STDERR_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(consumed);
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_levels() {
        use LineLevel::*;
        assert_eq!(line_level("FATAL:  boom", Info), Error);
        assert_eq!(line_level("ERROR:  invalid page", Info), Error);
        assert_eq!(line_level("WARNING:  hmm", Error), Warn);
        assert_eq!(line_level("LOG:  hello", Error), Info);
        assert_eq!(line_level("DEBUG2:  x", Error), Debug);
        assert_eq!(
            line_level("CONTEXT:  WAL redo of Heap/INSERT", Error),
            Error
        );
        assert_eq!(line_level("DETAIL:  x", Info), Info);
        assert_eq!(line_level("something odd", Info), Warn);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut input = vec![b'x'; MAX_STDERR_LINE_BYTES * 3];
        input.extend_from_slice(b"\nsecond\nlast");
        let mut reader = BufReader::with_capacity(1000, &input[..]);
        let mut line = Vec::new();
        assert!(read_line_bounded(&mut reader, &mut line).unwrap());
        assert_eq!(line.len(), MAX_STDERR_LINE_BYTES);
        assert!(read_line_bounded(&mut reader, &mut line).unwrap());
        assert_eq!(line, b"second");
        assert!(read_line_bounded(&mut reader, &mut line).unwrap());
        assert_eq!(line, b"last");
        assert!(!read_line_bounded(&mut reader, &mut line).unwrap());
    }
}

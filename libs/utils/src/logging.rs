//! Process-wide `tracing` setup for daemons and command-line tools.
//!
//! Call [`init`] once, early in `main`. The filter comes from `RUST_LOG`
//! (default `info`); every line carries an RFC 3339 UTC timestamp.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter, e.g. `info,pageserver=debug`.
pub const LOG_FILTER_ENV_VAR: &str = "RUST_LOG";

/// Set once [`init`] has installed the global subscriber.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Error for a log format name other than `plain` or `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: expected \"plain\" or \"json\"")]
pub struct LogFormatParseError(pub String);

impl FromStr for LogFormat {
    type Err = LogFormatParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            _ => Err(LogFormatParseError(s.to_string())),
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The process's standard error.
    Stderr,
    /// Appended to this file, which is created if missing.
    File(PathBuf),
}

/// Errors from [`init`].
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// [`init`] already succeeded in this process.
    #[error("logging is already initialized")]
    AlreadyInitialized,
    /// `RUST_LOG` holds a filter that does not parse.
    #[error("invalid {LOG_FILTER_ENV_VAR} filter")]
    InvalidFilter(#[source] tracing_subscriber::filter::FromEnvError),
    /// The log file could not be opened.
    #[error("failed to open log file {}", path.display())]
    OpenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another global subscriber or `log` logger was installed by other code.
    #[error("failed to install the global log subscriber")]
    SetGlobal(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Installs the global log subscriber. Fails, without side effects, if called twice.
pub fn init(format: LogFormat, output: Output) -> Result<(), LoggingError> {
    if INITIALIZED.load(Ordering::Acquire) {
        return Err(LoggingError::AlreadyInitialized);
    }
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .with_env_var(LOG_FILTER_ENV_VAR)
        .from_env()
        .map_err(LoggingError::InvalidFilter)?;
    let ansi = output == Output::Stderr && std::io::stderr().is_terminal();
    let writer = make_writer(output)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(true);
    let result = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| {
        if INITIALIZED.load(Ordering::Acquire) {
            LoggingError::AlreadyInitialized
        } else {
            LoggingError::SetGlobal(e)
        }
    })?;
    INITIALIZED.store(true, Ordering::Release);
    Ok(())
}

fn make_writer(output: Output) -> Result<BoxMakeWriter, LoggingError> {
    match output {
        Output::Stderr => Ok(BoxMakeWriter::new(std::io::stderr)),
        Output::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| LoggingError::OpenFile { path, source })?;
            Ok(BoxMakeWriter::new(Mutex::new(file)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format() {
        assert_eq!("plain".parse::<LogFormat>().unwrap(), LogFormat::Plain);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("JSON ".parse::<LogFormat>().is_err());
    }

    #[test]
    fn open_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("log");
        match make_writer(Output::File(path)) {
            Err(LoggingError::OpenFile { .. }) => {}
            other => panic!("unexpected {:?}", other.err()),
        }
    }

    /// The only test in this crate that installs the global subscriber.
    #[test]
    fn json_to_file_then_second_init_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.log");
        init(LogFormat::Json, Output::File(path.clone())).unwrap();
        tracing::error!(answer = 42, "hello from the logging test");

        let text = std::fs::read_to_string(&path).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("hello from the logging test"))
            .expect("our event was logged");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["fields"]["answer"], 42);
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );

        let err = init(LogFormat::Plain, Output::Stderr).unwrap_err();
        assert!(matches!(err, LoggingError::AlreadyInitialized), "{err:?}");
    }
}

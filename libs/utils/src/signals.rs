//! Graceful shutdown for tokio daemons.
//!
//! [`ShutdownSignals`] waits for SIGTERM, SIGINT or SIGQUIT and says which
//! arrived. [`ShutdownToken`] (a [`CancellationToken`]) is what the rest of a
//! daemon takes to learn that it should stop; [`cancel_on_shutdown_signal`]
//! connects the two.

use std::fmt;
use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;
pub use tokio_util::sync::CancellationToken;

/// The token passed down call chains to request a graceful stop.
pub type ShutdownToken = CancellationToken;

/// A signal asking the process to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownSignal {
    /// SIGINT, e.g. Ctrl-C: stop gracefully.
    Interrupt,
    /// SIGTERM: stop gracefully.
    Terminate,
    /// SIGQUIT: PostgreSQL's "immediate shutdown"; daemons may skip cleanup.
    Quit,
}

impl ShutdownSignal {
    /// The conventional name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownSignal::Interrupt => "SIGINT",
            ShutdownSignal::Terminate => "SIGTERM",
            ShutdownSignal::Quit => "SIGQUIT",
        }
    }
}

impl fmt::Display for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors from installing signal handlers.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Signal handling needs a running tokio runtime with the I/O driver.
    #[error("signal handlers must be installed from within a tokio runtime")]
    NoRuntime,
    /// The OS refused to install the handler.
    #[error("failed to install a handler for {signal}")]
    Install {
        signal: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Listeners for the three shutdown signals.
///
/// Once installed, these signals no longer kill the process by default: it is
/// up to the daemon to act on [`ShutdownSignals::recv`].
#[derive(Debug)]
pub struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
    quit: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Must run inside a tokio runtime.
    pub fn install() -> Result<ShutdownSignals, SignalError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SignalError::NoRuntime);
        }
        let listen = |kind: SignalKind, which: ShutdownSignal| {
            signal(kind).map_err(|source| SignalError::Install {
                signal: which.name(),
                source,
            })
        };
        Ok(ShutdownSignals {
            interrupt: listen(SignalKind::interrupt(), ShutdownSignal::Interrupt)?,
            terminate: listen(SignalKind::terminate(), ShutdownSignal::Terminate)?,
            quit: listen(SignalKind::quit(), ShutdownSignal::Quit)?,
        })
    }

    /// Waits for the next shutdown signal.
    pub async fn recv(&mut self) -> ShutdownSignal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => ShutdownSignal::Interrupt,
            Some(()) = self.terminate.recv() => ShutdownSignal::Terminate,
            Some(()) = self.quit.recv() => ShutdownSignal::Quit,
            // Only when the runtime is shutting down, which drops us anyway.
            else => std::future::pending().await,
        }
    }
}

/// Installs the handlers and waits for the first shutdown signal.
pub async fn shutdown_signal() -> Result<ShutdownSignal, SignalError> {
    Ok(ShutdownSignals::install()?.recv().await)
}

/// Spawns a task that cancels `token` on the first shutdown signal and
/// returns that signal. The handlers are installed before this returns.
pub fn cancel_on_shutdown_signal(
    token: ShutdownToken,
) -> Result<JoinHandle<ShutdownSignal>, SignalError> {
    let mut signals = ShutdownSignals::install()?;
    Ok(tokio::spawn(async move {
        let sig = signals.recv().await;
        tracing::info!("received {sig}, shutting down");
        token.cancel();
        sig
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{raise, Signal as NixSignal};
    use std::time::Duration;

    #[test]
    fn install_outside_runtime_is_an_error() {
        assert!(matches!(
            ShutdownSignals::install(),
            Err(SignalError::NoRuntime)
        ));
    }

    /// One test for all signals, so that no two tests race for the same signal.
    #[tokio::test]
    async fn reports_each_signal_and_cancels_token() {
        let mut signals = ShutdownSignals::install().unwrap();
        for (raw, expected) in [
            (NixSignal::SIGTERM, ShutdownSignal::Terminate),
            (NixSignal::SIGINT, ShutdownSignal::Interrupt),
            (NixSignal::SIGQUIT, ShutdownSignal::Quit),
        ] {
            raise(raw).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), signals.recv())
                .await
                .expect("signal delivered");
            assert_eq!(got, expected);
            assert_eq!(got.to_string(), raw.as_str());
        }

        let token = ShutdownToken::new();
        let child = token.child_token();
        let task = cancel_on_shutdown_signal(token.clone()).unwrap();
        assert!(!child.is_cancelled());
        raise(NixSignal::SIGTERM).unwrap();
        let sig = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("task finished")
            .unwrap();
        assert_eq!(sig, ShutdownSignal::Terminate);
        assert!(child.is_cancelled());
    }
}

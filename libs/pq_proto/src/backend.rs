//! A server-side connection driver over any tokio byte stream.
//!
//! The usual flow is [`PostgresBackend::run`], which performs the startup
//! handshake, accepts the client without a password and then answers simple
//! queries through a [`Handler`]. The steps are public too, for servers that
//! need to inspect the startup parameters or authenticate differently:
//! [`PostgresBackend::handshake`], then an `authenticate_*` method, then `run`.
//!
//! The driver needs a tokio runtime with the time driver enabled: farewell
//! errors to clients that stopped reading are given up after a timeout.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};
use utils::signals::CancellationToken;

use crate::be::{BeMessage, CopyResponse, Diagnostic, RowDescriptor, Severity};
use crate::codec::BodyReader;
use crate::error::{ConnectionError, ProtocolError, QueryError, SqlState};
use crate::fe::{FeMessage, FeStartupPacket, StartupParams, MAX_MESSAGE_LEN_BYTES};
use crate::{CancelKeyData, TransactionStatus};

/// Default limit on one incoming message, length word included.
pub const DEFAULT_MAX_MESSAGE_LEN_BYTES: usize = 16 * 1024 * 1024;
/// Buffered output beyond this is flushed before more is queued.
pub const WRITE_BUF_FLUSH_THRESHOLD_BYTES: usize = 64 * 1024;
/// How much to read from the socket at a time.
const READ_CHUNK_LEN_BYTES: usize = 8 * 1024;
/// SSLRequest/GSSENCRequest packets accepted before the StartupMessage.
const MAX_ENCRYPTION_REQUESTS: usize = 2;
/// How long a farewell message may take to reach a client that stopped reading.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// `server_version` we report; clients parse it, so it must look like PostgreSQL's.
pub const SERVER_VERSION: &str = "15.0";

/// Where a connection is in the protocol's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolState {
    /// Waiting for the startup packet.
    Startup,
    /// Startup packet received; the client is not authenticated yet.
    Authentication,
    /// Authenticated; typed messages flow.
    Established,
    /// Finished or failed; nothing more can be done.
    Closed,
}

impl ProtocolState {
    fn as_str(self) -> &'static str {
        match self {
            ProtocolState::Startup => "in startup",
            ProtocolState::Authentication => "authenticating",
            ProtocolState::Established => "established",
            ProtocolState::Closed => "closed",
        }
    }
}

/// The result of [`PostgresBackend::handshake`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeOutcome {
    /// A client that wants a session, with its startup parameters.
    Startup(StartupParams),
    /// A cancel request for another session; this connection is done.
    Cancel(CancelKeyData),
}

/// Answers a client's simple queries.
///
/// The handler writes the result itself, e.g. with
/// [`PostgresBackend::send_query_result`]; the driver then sends
/// ReadyForQuery. An `Err(QueryError::Sql(..))` is reported to the client
/// with its SQLSTATE and the session continues (unless it is FATAL).
pub trait Handler<S: AsyncRead + AsyncWrite + Unpin + Send> {
    fn process_query(
        &mut self,
        pgb: &mut PostgresBackend<S>,
        query: &str,
    ) -> impl Future<Output = Result<(), QueryError>> + Send;
}

/// What the query loop does after a message.
enum Flow {
    Continue,
    Stop,
}

/// The server side of one client connection.
#[derive(Debug)]
pub struct PostgresBackend<S> {
    stream: S,
    state: ProtocolState,
    read_buf: BytesMut,
    write_buf: BytesMut,
    max_message_len_bytes: usize,
    startup_params: Option<StartupParams>,
    cancel_key: CancelKeyData,
    /// After an error in an extended-query batch, skip messages until Sync.
    ignore_till_sync: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PostgresBackend<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(stream: S) -> Self {
        PostgresBackend {
            stream,
            state: ProtocolState::Startup,
            read_buf: BytesMut::with_capacity(READ_CHUNK_LEN_BYTES),
            write_buf: BytesMut::new(),
            max_message_len_bytes: DEFAULT_MAX_MESSAGE_LEN_BYTES,
            startup_params: None,
            cancel_key: CancelKeyData::generate(),
            ignore_till_sync: false,
        }
    }

    /// Sets the limit on incoming messages (capped at [`MAX_MESSAGE_LEN_BYTES`]).
    pub fn with_max_message_len(mut self, max_bytes: usize) -> Self {
        self.max_message_len_bytes = max_bytes.min(MAX_MESSAGE_LEN_BYTES);
        self
    }

    pub fn state(&self) -> ProtocolState {
        self.state
    }

    /// The client's startup parameters, once the handshake is done.
    pub fn startup_params(&self) -> Option<&StartupParams> {
        self.startup_params.as_ref()
    }

    /// The key sent to the client in BackendKeyData.
    pub fn cancel_key(&self) -> CancelKeyData {
        self.cancel_key
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Unwraps the stream; buffered but unsent output is lost.
    pub fn into_inner(self) -> S {
        self.stream
    }

    fn expect_state(&self, expected: ProtocolState) -> Result<(), ConnectionError> {
        if self.state != expected {
            return Err(ConnectionError::WrongState {
                expected: expected.as_str(),
                actual: self.state.as_str(),
            });
        }
        Ok(())
    }

    /// Reads more bytes; `Ok(false)` on end of stream.
    async fn fill_read_buf(&mut self) -> Result<bool, ConnectionError> {
        self.read_buf.reserve(READ_CHUNK_LEN_BYTES);
        let n = self.stream.read_buf(&mut self.read_buf).await?;
        Ok(n > 0)
    }

    /// End of stream: clean between messages, an error inside one.
    fn eof<T>(&self) -> Result<Option<T>, ConnectionError> {
        if self.read_buf.is_empty() {
            Ok(None)
        } else {
            Err(ConnectionError::UnexpectedEof)
        }
    }

    async fn read_startup_packet(&mut self) -> Result<Option<FeStartupPacket>, ConnectionError> {
        loop {
            if let Some(packet) = FeStartupPacket::decode(&mut self.read_buf)? {
                return Ok(Some(packet));
            }
            if !self.fill_read_buf().await? {
                return self.eof();
            }
        }
    }

    /// Reads the next typed message; `Ok(None)` if the client closed the
    /// connection between messages.
    ///
    /// Cancel-safe: partially received messages stay buffered. At most one
    /// message (bounded by the configured limit) plus one read chunk is buffered.
    pub async fn read_message(&mut self) -> Result<Option<FeMessage>, ConnectionError> {
        if !matches!(
            self.state,
            ProtocolState::Authentication | ProtocolState::Established
        ) {
            return Err(ConnectionError::WrongState {
                expected: ProtocolState::Established.as_str(),
                actual: self.state.as_str(),
            });
        }
        loop {
            if let Some(msg) = FeMessage::decode(&mut self.read_buf, self.max_message_len_bytes)? {
                return Ok(Some(msg));
            }
            if !self.fill_read_buf().await? {
                return self.eof();
            }
        }
    }

    /// Queues a message, flushing first if much output is already buffered.
    pub async fn write_message(&mut self, msg: &BeMessage<'_>) -> Result<(), ConnectionError> {
        if self.write_buf.len() >= WRITE_BUF_FLUSH_THRESHOLD_BYTES {
            self.flush().await?;
        }
        msg.write(&mut self.write_buf)?;
        Ok(())
    }

    /// Sends all queued output.
    pub async fn flush(&mut self) -> Result<(), ConnectionError> {
        self.stream.write_all_buf(&mut self.write_buf).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends an ErrorResponse (or NoticeResponse, by severity) and flushes.
    pub async fn send_error(&mut self, d: &Diagnostic) -> Result<(), ConnectionError> {
        let msg = match d.severity {
            Severity::Error | Severity::Fatal | Severity::Panic => BeMessage::ErrorResponse(d),
            _ => BeMessage::NoticeResponse(d),
        };
        self.write_message(&msg).await?;
        self.flush().await
    }

    /// Best-effort FATAL error before closing; failures are only logged.
    async fn send_fatal(&mut self, code: SqlState, message: &str) {
        let d = Diagnostic::new(Severity::Fatal, code, message);
        let sent = tokio::time::timeout(FAREWELL_TIMEOUT, self.send_error(&d)).await;
        if !matches!(sent, Ok(Ok(()))) {
            debug!("could not send FATAL error to the client: {message}");
        }
        self.state = ProtocolState::Closed;
    }

    /// Reports a malformed message to the client and closes.
    async fn fail(&mut self, err: ConnectionError) -> ConnectionError {
        if let ConnectionError::Protocol(e) = &err {
            let code = match e {
                ProtocolError::UnsupportedProtocolVersion(_) => SqlState::FEATURE_NOT_SUPPORTED,
                _ => SqlState::PROTOCOL_VIOLATION,
            };
            let message = e.to_string();
            self.send_fatal(code, &message).await;
        }
        self.state = ProtocolState::Closed;
        err
    }

    /// Sends RowDescription, the rows and `CommandComplete("SELECT <n>")`.
    ///
    /// Every row must have one value per column; `None` is SQL NULL.
    pub async fn send_query_result<'r, R>(
        &mut self,
        columns: &[RowDescriptor<'_>],
        rows: impl IntoIterator<Item = R>,
    ) -> Result<(), ConnectionError>
    where
        R: AsRef<[Option<&'r [u8]>]>,
    {
        self.write_message(&BeMessage::RowDescription(columns))
            .await?;
        let mut count: u64 = 0;
        for row in rows {
            let row = row.as_ref();
            if row.len() != columns.len() {
                return Err(ProtocolError::InvalidValue {
                    what: "DataRow column count",
                    value: row.len() as i64,
                }
                .into());
            }
            self.write_message(&BeMessage::DataRow(row)).await?;
            count += 1;
        }
        let tag = format!("SELECT {count}");
        self.write_message(&BeMessage::CommandComplete(&tag)).await
    }

    /// Enters COPY IN mode (client sends CopyData) and flushes.
    pub async fn start_copy_in(&mut self) -> Result<(), ConnectionError> {
        self.write_message(&BeMessage::CopyInResponse(CopyResponse::UNSTRUCTURED))
            .await?;
        self.flush().await
    }

    /// Enters COPY OUT mode (server sends CopyData) and flushes.
    pub async fn start_copy_out(&mut self) -> Result<(), ConnectionError> {
        self.write_message(&BeMessage::CopyOutResponse(CopyResponse::UNSTRUCTURED))
            .await?;
        self.flush().await
    }

    /// Enters COPY BOTH mode (CopyData in both directions, as in replication)
    /// and flushes.
    pub async fn start_copy_both(&mut self) -> Result<(), ConnectionError> {
        self.write_message(&BeMessage::CopyBothResponse(CopyResponse::UNSTRUCTURED))
            .await?;
        self.flush().await
    }

    /// Reads the startup packet, refusing SSL and GSSAPI encryption with `N`.
    ///
    /// On a StartupMessage the connection moves to
    /// [`ProtocolState::Authentication`]; on a CancelRequest it is closed.
    /// Malformed packets are answered with a FATAL error.
    pub async fn handshake(&mut self) -> Result<HandshakeOutcome, ConnectionError> {
        self.expect_state(ProtocolState::Startup)?;
        match self.handshake_inner().await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn handshake_inner(&mut self) -> Result<HandshakeOutcome, ConnectionError> {
        let mut encryption_requests = 0;
        loop {
            let Some(packet) = self.read_startup_packet().await? else {
                return Err(ConnectionError::UnexpectedEof);
            };
            debug!("received {}", packet.name());
            match packet {
                FeStartupPacket::SslRequest | FeStartupPacket::GssEncRequest => {
                    encryption_requests += 1;
                    if encryption_requests > MAX_ENCRYPTION_REQUESTS {
                        return Err(ProtocolError::UnexpectedMessage {
                            got: "repeated encryption request",
                            state: "in startup",
                        }
                        .into());
                    }
                    self.stream.write_all(b"N").await?;
                    self.stream.flush().await?;
                }
                FeStartupPacket::CancelRequest(key) => {
                    self.state = ProtocolState::Closed;
                    return Ok(HandshakeOutcome::Cancel(key));
                }
                FeStartupPacket::StartupMessage { version, params } => {
                    self.negotiate_version(version.minor, &params)?;
                    self.startup_params = Some(params.clone());
                    self.state = ProtocolState::Authentication;
                    return Ok(HandshakeOutcome::Startup(params));
                }
            }
        }
    }

    /// Queues NegotiateProtocolVersion if the client asked for more than 3.0.
    fn negotiate_version(
        &mut self,
        minor: u16,
        params: &StartupParams,
    ) -> Result<(), ProtocolError> {
        let unrecognized: Vec<&str> = params
            .iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("_pq_."))
            .collect();
        if minor == 0 && unrecognized.is_empty() {
            return Ok(());
        }
        BeMessage::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized_options: &unrecognized,
        }
        .write(&mut self.write_buf)
    }

    /// Accepts the client without a password and completes the startup.
    pub async fn authenticate_trust(&mut self) -> Result<(), ConnectionError> {
        self.expect_state(ProtocolState::Authentication)?;
        self.write_message(&BeMessage::AuthenticationOk).await?;
        self.finish_startup().await
    }

    /// Asks for a cleartext password and checks it with `verify`; on success
    /// completes the startup, otherwise sends FATAL `28P01` and closes.
    pub async fn authenticate_cleartext_password(
        &mut self,
        verify: impl FnOnce(&str) -> bool,
    ) -> Result<(), ConnectionError> {
        self.expect_state(ProtocolState::Authentication)?;
        self.write_message(&BeMessage::AuthenticationCleartextPassword)
            .await?;
        self.flush().await?;
        let password = match self.read_password().await {
            Ok(p) => p,
            Err(e) => return Err(self.fail(e).await),
        };
        if verify(&password) {
            self.write_message(&BeMessage::AuthenticationOk).await?;
            return self.finish_startup().await;
        }
        let user = self
            .startup_params
            .as_ref()
            .and_then(|p| p.user())
            .unwrap_or_default()
            .to_string();
        let message = format!("password authentication failed for user \"{user}\"");
        self.send_fatal(SqlState::INVALID_PASSWORD, &message).await;
        Err(ConnectionError::AuthenticationFailed { user })
    }

    async fn read_password(&mut self) -> Result<String, ConnectionError> {
        match self.read_message().await? {
            Some(FeMessage::PasswordMessage(body)) => {
                let mut r = BodyReader::new(body);
                let password = r.cstr("password")?;
                r.finish("PasswordMessage")?;
                Ok(password)
            }
            Some(other) => Err(ProtocolError::UnexpectedMessage {
                got: other.name(),
                state: "waiting for a password",
            }
            .into()),
            None => Err(ConnectionError::UnexpectedEof),
        }
    }

    /// ParameterStatus, BackendKeyData and the first ReadyForQuery.
    async fn finish_startup(&mut self) -> Result<(), ConnectionError> {
        let params = [
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
        ];
        for (name, value) in params {
            self.write_message(&BeMessage::ParameterStatus { name, value })
                .await?;
        }
        self.write_message(&BeMessage::BackendKeyData(self.cancel_key))
            .await?;
        self.write_message(&BeMessage::ReadyForQuery(TransactionStatus::Idle))
            .await?;
        self.flush().await?;
        self.state = ProtocolState::Established;
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> PostgresBackend<S> {
    /// Serves the connection until the client leaves or `cancel` fires.
    ///
    /// Performs the handshake and trust authentication first unless they are
    /// done already. Each simple query goes to `handler`; its SQL errors are
    /// reported and the session goes on. Terminate, end of stream and a
    /// CancelRequest end the loop with `Ok`. On cancellation the client gets
    /// FATAL `57P01` and the loop returns `Ok`.
    pub async fn run<H: Handler<S>>(
        &mut self,
        handler: &mut H,
        cancel: &CancellationToken,
    ) -> Result<(), ConnectionError> {
        if self.state == ProtocolState::Startup {
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                outcome = self.handshake() => outcome?,
            };
            if let HandshakeOutcome::Cancel(_) = outcome {
                return Ok(());
            }
        }
        if self.state == ProtocolState::Authentication {
            self.authenticate_trust().await?;
        }
        self.expect_state(ProtocolState::Established)?;
        let result = self.query_loop(handler, cancel).await;
        self.state = ProtocolState::Closed;
        result
    }

    async fn query_loop<H: Handler<S>>(
        &mut self,
        handler: &mut H,
        cancel: &CancellationToken,
    ) -> Result<(), ConnectionError> {
        loop {
            let msg = tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                msg = self.read_message() => Some(msg),
            };
            let msg = match msg {
                None => {
                    self.shutdown().await;
                    return Ok(());
                }
                Some(Ok(Some(msg))) => msg,
                Some(Ok(None)) => return Ok(()),
                Some(Err(e)) => return Err(self.fail(e).await),
            };
            if let Flow::Stop = self.dispatch(handler, cancel, msg).await? {
                return Ok(());
            }
        }
    }

    async fn shutdown(&mut self) {
        let message = "terminating connection due to administrator command";
        self.send_fatal(SqlState::ADMIN_SHUTDOWN, message).await;
    }

    async fn dispatch<H: Handler<S>>(
        &mut self,
        handler: &mut H,
        cancel: &CancellationToken,
        msg: FeMessage,
    ) -> Result<Flow, ConnectionError> {
        if self.ignore_till_sync && !matches!(msg, FeMessage::Sync | FeMessage::Terminate) {
            return Ok(Flow::Continue);
        }
        match msg {
            FeMessage::Query(query) => self.handle_query(handler, cancel, &query).await,
            FeMessage::Terminate => Ok(Flow::Stop),
            FeMessage::Sync => {
                self.ignore_till_sync = false;
                self.ready_for_query().await?;
                Ok(Flow::Continue)
            }
            FeMessage::Flush => {
                self.flush().await?;
                Ok(Flow::Continue)
            }
            FeMessage::Parse(_)
            | FeMessage::Bind(_)
            | FeMessage::Describe(_)
            | FeMessage::Execute(_)
            | FeMessage::Close(_) => {
                let d = Diagnostic::new(
                    Severity::Error,
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "the extended query protocol is not supported",
                )
                .with_hint("use the simple query protocol");
                self.send_error(&d).await?;
                self.ignore_till_sync = true;
                Ok(Flow::Continue)
            }
            // Stray COPY messages are ignored, as PostgreSQL does.
            FeMessage::CopyData(_) | FeMessage::CopyDone | FeMessage::CopyFail(_) => {
                Ok(Flow::Continue)
            }
            FeMessage::PasswordMessage(_) => Err(self
                .fail(
                    ProtocolError::UnexpectedMessage {
                        got: "PasswordMessage",
                        state: "established",
                    }
                    .into(),
                )
                .await),
        }
    }

    async fn ready_for_query(&mut self) -> Result<(), ConnectionError> {
        self.write_message(&BeMessage::ReadyForQuery(TransactionStatus::Idle))
            .await?;
        self.flush().await
    }

    async fn handle_query<H: Handler<S>>(
        &mut self,
        handler: &mut H,
        cancel: &CancellationToken,
        query: &str,
    ) -> Result<Flow, ConnectionError> {
        debug!("query: {query}");
        if query
            .trim_matches(|c: char| c.is_whitespace() || c == ';')
            .is_empty()
        {
            self.write_message(&BeMessage::EmptyQueryResponse).await?;
            self.ready_for_query().await?;
            return Ok(Flow::Continue);
        }
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(QueryError::Shutdown),
            result = handler.process_query(self, query) => result,
        };
        match result {
            Ok(()) => {}
            Err(QueryError::Sql(d)) => {
                info!("query failed: {} {}", d.code, d.message);
                self.send_error(&d).await?;
                if matches!(d.severity, Severity::Fatal | Severity::Panic) {
                    return Ok(Flow::Stop);
                }
            }
            Err(QueryError::Shutdown) => {
                self.shutdown().await;
                return Ok(Flow::Stop);
            }
            Err(QueryError::Connection(e)) => return Err(e),
        }
        self.ready_for_query().await?;
        Ok(Flow::Continue)
    }
}

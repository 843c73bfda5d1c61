//! Message type bytes by direction: the same byte names different messages
//! from the client and from the server (`S` is Sync one way and
//! ParameterStatus the other), so each direction has its own names.

/// Messages a client sends.
pub mod frontend {
    /// `Bind`.
    pub const BIND: u8 = b'B';
    /// `Close` (a statement or portal).
    pub const CLOSE: u8 = b'C';
    /// `CopyData`.
    pub const COPY_DATA: u8 = b'd';
    /// `CopyDone`.
    pub const COPY_DONE: u8 = b'c';
    /// `CopyFail`.
    pub const COPY_FAIL: u8 = b'f';
    /// `Describe` (a statement or portal).
    pub const DESCRIBE: u8 = b'D';
    /// `Execute`.
    pub const EXECUTE: u8 = b'E';
    /// `Flush`.
    pub const FLUSH: u8 = b'H';
    /// `FunctionCall`.
    pub const FUNCTION_CALL: u8 = b'F';
    /// `Parse`.
    pub const PARSE: u8 = b'P';
    /// `PasswordMessage` (and the SASL responses).
    pub const PASSWORD: u8 = b'p';
    /// `Query` (the simple protocol).
    pub const QUERY: u8 = b'Q';
    /// `Sync`.
    pub const SYNC: u8 = b'S';
    /// `Terminate`.
    pub const TERMINATE: u8 = b'X';
}

/// Messages a server sends.
pub mod backend {
    /// `Authentication*`.
    pub const AUTHENTICATION: u8 = b'R';
    /// `BackendKeyData`.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// `BindComplete`.
    pub const BIND_COMPLETE: u8 = b'2';
    /// `CloseComplete`.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// `CommandComplete`.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// `CopyData`.
    pub const COPY_DATA: u8 = b'd';
    /// `CopyDone`.
    pub const COPY_DONE: u8 = b'c';
    /// `CopyInResponse`.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// `CopyOutResponse`.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// `CopyBothResponse`.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// `DataRow`.
    pub const DATA_ROW: u8 = b'D';
    /// `EmptyQueryResponse`.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// `ErrorResponse`.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// `FunctionCallResponse`.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// `NegotiateProtocolVersion`.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// `NoData`.
    pub const NO_DATA: u8 = b'n';
    /// `NoticeResponse`.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// `NotificationResponse`.
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// `ParameterDescription`.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// `ParameterStatus`.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// `ParseComplete`.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// `PortalSuspended`.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// `ReadyForQuery`.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// `RowDescription`.
    pub const ROW_DESCRIPTION: u8 = b'T';
}

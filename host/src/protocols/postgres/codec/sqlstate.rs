//! The SQLSTATE codes the gateway itself reports (PostgreSQL Appendix A).

/// `08001` sqlclient_unable_to_establish_sqlconnection.
pub const UNABLE_TO_CONNECT: &str = "08001";
/// `08004` sqlserver_rejected_establishment_of_sqlconnection.
pub const SERVER_REJECTED_CONNECTION: &str = "08004";
/// `08P01` protocol_violation.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `0A000` feature_not_supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `28000` invalid_authorization_specification.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// `28P01` invalid_password.
pub const INVALID_PASSWORD: &str = "28P01";
/// `3D000` invalid_catalog_name (unknown database / target).
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// `42622` name_too_long (a start-up `application_name` PostgreSQL cuts).
pub const NAME_TOO_LONG: &str = "42622";
/// `42501` insufficient_privilege (a policy refused the statement).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `53200` out_of_memory (the gateway's budget for buffered messages is
/// used up: an insufficient resource, so trying again later may work).
pub const OUT_OF_MEMORY: &str = "53200";
/// `53300` too_many_connections.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `54000` program_limit_exceeded (more of something than the gateway
/// tracks for one session).
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// `57P01` admin_shutdown.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `57014` query_canceled (by the client, or a timeout).
pub const QUERY_CANCELED: &str = "57014";
/// `58000` system_error (the gateway failed internally).
pub const SYSTEM_ERROR: &str = "58000";

//! The PostgreSQL wire protocol as pure data: bytes in, typed messages out, and
//! back. Nothing here performs I/O, allocates on the pass-through path, or knows
//! about policies or plugins.
//!
//! Parsing is *borrowed*: a decoded message points into the frame it came from.
//! Every parser returns a [`CodecError`] instead of panicking, whatever the input
//! (a property test in this module feeds them random bytes).
//!
//! Layout: one file per message or message family, named after the message as
//! the PostgreSQL documentation names it ("Message Formats").

pub mod authentication;
pub mod backend_key_data;
pub mod bind;
pub mod command_complete;
pub mod data_row;
pub mod describe;
pub mod encoding;
pub mod error_response;
pub mod frame;
pub mod negotiate_protocol_version;
pub mod parameter_status;
pub mod parse;
pub mod query;
mod reader;
pub mod ready_for_query;
pub mod row_description;
pub mod sqlstate;
pub mod startup;
pub mod tags;
mod writer;

pub use frame::{peek_frame, FrameHeader};
pub use reader::Reader;
pub use writer::MessageWriter;

/// Why a sequence of bytes is not a valid protocol message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length field is smaller than the length field itself.
    #[error("message length {0} is smaller than 4")]
    LengthTooSmall(i64),
    /// The length field announces more than the configured maximum.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced length, including the length field.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// The message body ended before a field was complete.
    #[error("message is truncated: expected {0}")]
    Truncated(&'static str),
    /// A string field is not NUL-terminated or not UTF-8.
    #[error("invalid string in {0}")]
    InvalidString(&'static str),
    /// A field holds a value the protocol does not allow.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The message has a tag other than the one the parser expects.
    #[error("unexpected message type {found:?}, expected {expected:?}")]
    UnexpectedTag {
        /// Tag that was found.
        found: char,
        /// Tag that was expected.
        expected: char,
    },
}

#[cfg(test)]
mod fuzz_tests;

//! Authentication exchange: the backend's `Authentication*` requests and the
//! frontend's `PasswordMessage` / `SASLInitialResponse` / `SASLResponse`
//! (which all share tag `p`).

use bytes::BytesMut;

use super::{frame, CodecError, MessageWriter, Reader};

/// A decoded `Authentication*` message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// `AuthenticationOk`.
    Ok,
    /// `AuthenticationCleartextPassword`.
    CleartextPassword,
    /// `AuthenticationMD5Password` with its salt.
    Md5Password([u8; 4]),
    /// `AuthenticationSASL` with the offered mechanisms.
    Sasl(Vec<&'a str>),
    /// `AuthenticationSASLContinue` with the server's data.
    SaslContinue(&'a [u8]),
    /// `AuthenticationSASLFinal` with the server's data.
    SaslFinal(&'a [u8]),
    /// Any other method (Kerberos, GSS, SSPI): not supported upstream.
    Unsupported(i32),
}

/// Decodes a complete `R` frame.
pub fn decode(frame_bytes: &[u8]) -> Result<Authentication<'_>, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'R')?);
    Ok(match r.i32("authentication code")? {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let s = r.bytes(4, "md5 salt")?;
            Authentication::Md5Password([s[0], s[1], s[2], s[3]])
        }
        10 => {
            let mut mechs = Vec::new();
            loop {
                let m = r.cstr("SASL mechanism")?;
                if m.is_empty() {
                    break;
                }
                mechs.push(m);
            }
            Authentication::Sasl(mechs)
        }
        11 => Authentication::SaslContinue(r.remaining()),
        12 => Authentication::SaslFinal(r.remaining()),
        other => Authentication::Unsupported(other),
    })
}

/// Encodes `AuthenticationOk`.
pub fn encode_ok(buf: &mut BytesMut) {
    MessageWriter::start(buf, Some(b'R')).i32(0);
}

/// Encodes `AuthenticationCleartextPassword`.
pub fn encode_cleartext_request(buf: &mut BytesMut) {
    MessageWriter::start(buf, Some(b'R')).i32(3);
}

/// Reads the password from a complete `PasswordMessage` frame.
pub fn decode_password(frame_bytes: &[u8]) -> Result<&str, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'p')?);
    r.cstr("password")
}

/// Encodes a `PasswordMessage` (cleartext or md5 hash).
pub fn encode_password(buf: &mut BytesMut, password: &str) {
    MessageWriter::start(buf, Some(b'p')).cstr(password);
}

/// Encodes `SASLInitialResponse`.
pub fn encode_sasl_initial(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    MessageWriter::start(buf, Some(b'p'))
        .cstr(mechanism)
        .i32(data.len() as i32)
        .bytes(data);
}

/// Encodes `SASLResponse`.
pub fn encode_sasl_response(buf: &mut BytesMut, data: &[u8]) {
    MessageWriter::start(buf, Some(b'p')).bytes(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_sasl_mechanisms() {
        let mut buf = BytesMut::new();
        MessageWriter::start(&mut buf, Some(b'R'))
            .i32(10)
            .cstr("SCRAM-SHA-256-PLUS")
            .cstr("SCRAM-SHA-256")
            .u8(0);
        assert_eq!(
            decode(&buf).unwrap(),
            Authentication::Sasl(vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
        );
    }

    #[test]
    fn password_round_trip() {
        let mut buf = BytesMut::new();
        encode_password(&mut buf, "eyJ.x.y");
        assert_eq!(decode_password(&buf).unwrap(), "eyJ.x.y");
    }
}

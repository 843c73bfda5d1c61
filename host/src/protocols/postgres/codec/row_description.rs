//! `RowDescription`: the columns of a result, with their table OID and
//! attribute number (the basis of column identity for masking).

use super::{frame, CodecError, Reader};

/// One column of a `RowDescription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column<'a> {
    /// Column label as the client sees it (an alias if one was used), read
    /// lossily when it is not UTF-8 (another client encoding).
    pub name: std::borrow::Cow<'a, str>,
    /// OID of the source table, 0 for expressions.
    pub table_oid: u32,
    /// Attribute number in the source table, 0 for expressions.
    pub attribute_number: i16,
    /// OID of the data type.
    pub type_oid: u32,
    /// Data type size.
    pub type_size: i16,
    /// Type modifier.
    pub type_modifier: i32,
    /// 0 = text, 1 = binary.
    pub format: i16,
}

/// Decodes a complete `T` frame.
pub fn decode(frame_bytes: &[u8]) -> Result<Vec<Column<'_>>, CodecError> {
    let mut r = Reader::new(frame::body(frame_bytes, b'T')?);
    let n = r.i16("field count")?;
    if n < 0 {
        return Err(CodecError::Invalid("field count"));
    }
    let mut cols = Vec::with_capacity(n as usize);
    for _ in 0..n {
        cols.push(Column {
            name: String::from_utf8_lossy(r.cstr_bytes("column name")?),
            table_oid: r.u32("table oid")?,
            attribute_number: r.i16("attribute number")?,
            type_oid: r.u32("type oid")?,
            type_size: r.i16("type size")?,
            type_modifier: r.i32("type modifier")?,
            format: r.i16("format code")?,
        });
    }
    Ok(cols)
}

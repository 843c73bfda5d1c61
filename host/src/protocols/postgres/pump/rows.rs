//! Rows on their way to the client: a watched batch with the policy's
//! edits applied, and the sample of rows the audit record keeps.

use bytes::BytesMut;

use super::super::RelayError;
use super::Shared;
use crate::policy::{RowEdit, ValueEdit};
use crate::protocols::postgres::codec::{data_row, peek_frame};

/// Whether the statement being answered wants its rows sampled, asked of
/// the ledger once per result rather than once per row.
#[derive(Default)]
pub(super) struct SampleState {
    /// Whether `wanted` was asked of the ledger for this result.
    pub checked: bool,
    wanted: bool,
}

impl SampleState {
    pub fn wanted(&mut self, shared: &Shared) -> bool {
        if !shared.tracking {
            return false;
        }
        if !self.checked {
            self.wanted = shared.ledger().sampling();
            self.checked = true;
        }
        self.wanted
    }

    /// Rows as the client receives them, into the sample.
    pub fn rows<'r>(
        &mut self,
        shared: &Shared,
        rows: impl Iterator<Item = &'r [Option<&'r [u8]>]>,
    ) {
        let mut ledger = shared.ledger();
        for row in rows {
            if !ledger.sample_row(row) {
                self.wanted = false;
                break;
            }
        }
    }
}

/// Decodes the `DataRow`s of an encoded batch.
pub(super) fn sent_rows(
    bytes: &[u8],
    max: usize,
) -> Result<Vec<crate::policy::Row<'_>>, RelayError> {
    let mut rows = Vec::new();
    let mut at = 0;
    while let Some(h) = peek_frame(&bytes[at..], max)? {
        if bytes.len() - at < h.total_len {
            break;
        }
        rows.push(data_row::decode(&bytes[at..at + h.total_len])?);
        at += h.total_len;
    }
    Ok(rows)
}

/// Writes a batch of rows with `edits` applied: unedited rows are copied as
/// they came, edited rows are re-encoded (straight from the original values
/// and the edits, without building a row first). Edits of a column a row
/// does not have are ignored; of several edits of one value the last wins.
pub(super) fn apply_edits(
    out: &mut BytesMut,
    buf: &[u8],
    frames: &[std::ops::Range<usize>],
    rows: Vec<crate::policy::Row<'_>>,
    mut edits: Vec<RowEdit>,
) {
    // Stable: edits of one value keep their order. Already sorted when they
    // come from a plugin chain, which this sort then only checks.
    edits.sort_by_key(|e| (e.row, e.column));
    let mut next = 0usize;
    for (i, (frame, row)) in frames.iter().zip(&rows).enumerate() {
        while next < edits.len() && edits[next].row < i {
            next += 1;
        }
        let first = next;
        while next < edits.len() && edits[next].row == i {
            next += 1;
        }
        let mine = &edits[first..next];
        if !mine.iter().any(|e| e.column < row.len()) {
            out.extend_from_slice(&buf[frame.clone()]);
            continue;
        }
        let values =
            row.iter()
                .enumerate()
                .map(|(c, v)| match mine.iter().rev().find(|e| e.column == c) {
                    Some(RowEdit {
                        edit: ValueEdit::Replace(new),
                        ..
                    }) => Some(new.as_ref()),
                    Some(_) => None,
                    None => *v,
                });
        data_row::encode(out, values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn row(values: &[Option<&[u8]>]) -> BytesMut {
        let mut b = BytesMut::new();
        data_row::encode(&mut b, values.iter().copied());
        b
    }

    #[test]
    fn edits_are_applied_in_place_and_untouched_rows_copied() {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for r in [
            row(&[Some(b"1"), Some(b"ada"), Some(b"4111")]),
            row(&[Some(b"2"), None, Some(b"5500")]),
            row(&[Some(b"3"), Some(b"bob"), Some(b"6011")]),
        ] {
            frames.push(buf.len()..buf.len() + r.len());
            buf.extend_from_slice(&r);
        }
        let rows: Vec<_> = frames
            .iter()
            .map(|f| data_row::decode(&buf[f.clone()]).unwrap())
            .collect();
        let edit = |row, column, edit| RowEdit { row, column, edit };
        let edits = vec![
            edit(2, 0, ValueEdit::Replace(Bytes::from_static(b"x"))),
            edit(0, 2, ValueEdit::Replace(Bytes::from_static(b"****"))),
            edit(0, 1, ValueEdit::Null),
            edit(0, 1, ValueEdit::Replace(Bytes::from_static(b"later wins"))),
            edit(1, 7, ValueEdit::Null), // no such column: ignored
            edit(9, 0, ValueEdit::Null), // no such row: ignored
        ];
        let mut out = BytesMut::new();
        apply_edits(&mut out, &buf, &frames, rows, edits);
        let sent = sent_rows(&out, 1 << 20).unwrap();
        let text = |r: &crate::policy::Row<'_>| -> Vec<Option<String>> {
            r.iter()
                .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect()
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(text(&sent[0]), vec![s("1"), s("later wins"), s("****")]);
        assert_eq!(text(&sent[1]), vec![s("2"), None, s("5500")]);
        assert_eq!(text(&sent[2]), vec![s("x"), s("bob"), s("6011")]);
        // The untouched row went out byte for byte (the third, re-encoded,
        // has its original length: "x" replaced "3").
        let second = frames[1].clone();
        let at = out.len() - frames[2].len() - second.len();
        assert_eq!(&out[at..at + second.len()], &buf[second]);
    }
}

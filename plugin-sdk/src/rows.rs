//! Rows as a plugin sees them: a [`Batch`] of the columns it watches (each
//! column one buffer, so a batch crosses into the plugin in a few copies, not
//! one per value), and [`Edits`], a builder of new values in the same layout.

use crate::bindings::portcullis::policy::types::{ColumnEdits, ColumnValues, RowBatch};

/// A batch of rows of the current result: the watched columns.
#[derive(Debug, Clone)]
pub struct Batch {
    inner: RowBatch,
}

impl Batch {
    /// Wraps the batch the host sent.
    pub fn new(inner: RowBatch) -> Self {
        Self { inner }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.inner.rows as usize
    }

    /// The watched columns, in the order the plan named them.
    pub fn columns(&self) -> impl Iterator<Item = ColumnView<'_>> {
        self.inner.columns.iter().map(|v| ColumnView { v })
    }

    /// A watched column by its index in the result.
    pub fn column(&self, index: u32) -> Option<ColumnView<'_>> {
        self.columns().find(|c| c.index() == index)
    }
}

/// One watched column of a batch.
#[derive(Debug, Clone, Copy)]
pub struct ColumnView<'a> {
    v: &'a ColumnValues,
}

impl<'a> ColumnView<'a> {
    /// Its index in the result.
    pub fn index(&self) -> u32 {
        self.v.column
    }

    /// The value in `row`: `None` for NULL (or a row past the end).
    pub fn value(&self, row: usize) -> Option<&'a [u8]> {
        if *self.v.nulls.get(row)? {
            return None;
        }
        let end = *self.v.ends.get(row)? as usize;
        let start = match row {
            0 => 0,
            _ => *self.v.ends.get(row - 1)? as usize,
        };
        self.v.data.get(start..end)
    }

    /// Every row's value, in order.
    pub fn values(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        let v = self.v;
        let mut start = 0usize;
        v.ends.iter().zip(&v.nulls).map(move |(&end, &null)| {
            let (s, e) = (start, end as usize);
            start = e;
            if null {
                None
            } else {
                v.data.get(s..e)
            }
        })
    }
}

/// New values for some rows of a batch; later edits of a cell win.
#[derive(Debug, Default)]
pub struct Edits {
    columns: Vec<ColumnEdits>,
    unsorted: bool,
}

impl Edits {
    fn column(&mut self, column: u32) -> &mut ColumnEdits {
        let i = match self.columns.iter().rposition(|c| c.column == column) {
            Some(i) => i,
            None => {
                self.columns.push(ColumnEdits {
                    column,
                    rows: Vec::new(),
                    data: Vec::new(),
                    ends: Vec::new(),
                    nulls: Vec::new(),
                });
                self.columns.len() - 1
            }
        };
        &mut self.columns[i]
    }

    fn push(&mut self, row: usize, column: u32, value: Option<&[u8]>) {
        let c = self.column(column);
        let row = row as u32;
        let unsorted = c.rows.last().is_some_and(|&last| last >= row);
        c.rows.push(row);
        if let Some(v) = value {
            c.data.extend_from_slice(v);
        }
        c.ends.push(c.data.len() as u32);
        c.nulls.push(value.is_none());
        self.unsorted |= unsorted;
    }

    /// Replaces the value of `column` (its index in the result) in `row`.
    pub fn replace(&mut self, row: usize, column: u32, value: &[u8]) {
        self.push(row, column, Some(value));
    }

    /// Makes the value of `column` in `row` NULL.
    pub fn null(&mut self, row: usize, column: u32) {
        self.push(row, column, None);
    }

    /// Whether no edit was made.
    pub fn is_empty(&self) -> bool {
        self.columns.iter().all(|c| c.rows.is_empty())
    }

    /// The edits as (row, column, new value), in order of row then column.
    pub fn to_vec(&self) -> Vec<(usize, u32, Option<Vec<u8>>)> {
        let mut out: Vec<(usize, u32, Option<Vec<u8>>)> = Vec::new();
        for c in &self.columns {
            let mut start = 0usize;
            for ((&row, &end), &null) in c.rows.iter().zip(&c.ends).zip(&c.nulls) {
                let end = end as usize;
                let value = (!null).then(|| c.data[start..end].to_vec());
                start = end;
                out.push((row as usize, c.column, value));
            }
        }
        // Stable: for a cell edited twice, the later edit comes last and wins.
        out.sort_by_key(|(row, column, _)| (*row, *column));
        let mut dedup: Vec<(usize, u32, Option<Vec<u8>>)> = Vec::with_capacity(out.len());
        for e in out {
            match dedup.last_mut() {
                Some(last) if last.0 == e.0 && last.1 == e.1 => *last = e,
                _ => dedup.push(e),
            }
        }
        dedup
    }

    /// The edits in the contract's layout (rows ascending per column).
    pub fn into_inner(self) -> Vec<ColumnEdits> {
        if !self.unsorted {
            return self.columns;
        }
        let mut rebuilt = Edits::default();
        for (row, column, value) in self.to_vec() {
            rebuilt.push(row, column, value.as_deref());
        }
        rebuilt.columns
    }
}

/// Builds a batch from rows of the watched columns (for tests and for hosts
/// of the SDK's own harness).
pub fn batch_of(columns: &[u32], rows: &[Vec<Option<&[u8]>>]) -> Batch {
    let cols = columns
        .iter()
        .enumerate()
        .map(|(i, &column)| {
            let mut data = Vec::new();
            let mut ends = Vec::with_capacity(rows.len());
            let mut nulls = Vec::with_capacity(rows.len());
            for row in rows {
                let v = row.get(i).copied().flatten();
                if let Some(v) = v {
                    data.extend_from_slice(v);
                }
                ends.push(data.len() as u32);
                nulls.push(v.is_none());
            }
            ColumnValues {
                column,
                data,
                ends,
                nulls,
            }
        })
        .collect();
    Batch::new(RowBatch {
        rows: rows.len() as u32,
        columns: cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_what_was_put_in() {
        let b = batch_of(
            &[2, 0],
            &[
                vec![Some(&b"ab"[..]), None],
                vec![None, Some(&b""[..])],
                vec![Some(&b"cde"[..]), Some(&b"x"[..])],
            ],
        );
        assert_eq!(b.rows(), 3);
        let c = b.column(2).unwrap();
        assert_eq!(
            c.values().collect::<Vec<_>>(),
            [Some(&b"ab"[..]), None, Some(&b"cde"[..])]
        );
        assert_eq!(c.value(2), Some(&b"cde"[..]));
        let c0 = b.column(0).unwrap();
        assert_eq!(c0.value(0), None);
        assert_eq!(c0.value(1), Some(&b""[..]));
        assert!(b.column(1).is_none());
    }

    #[test]
    fn edits_out_of_order_are_sorted_and_the_last_wins() {
        let mut e = Edits::default();
        e.replace(2, 1, b"z");
        e.null(0, 1);
        e.replace(2, 1, b"zz");
        let inner = e.into_inner();
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].rows, [0, 2]);
        assert_eq!(inner[0].data, b"zz");
        assert_eq!(inner[0].ends, [0, 2]);
        assert_eq!(inner[0].nulls, [true, false]);
    }
}

//! The shape of a query text: the text with its numeric and string constants
//! replaced by `?` and comments dropped. Texts of one shape differ only in
//! constants, and a statement summary does not depend on constants, so they
//! share one cached summary — `SELECT ... WHERE id = 1` and `... id = 2` are
//! parsed once between them.
//!
//! The scanner follows PostgreSQL's lexer for what it handles (quoted
//! identifiers, `''` inside strings, nested `/* */` comments, `$n`
//! parameters) and gives up — no shape, so the exact text is the key — on
//! anything it does not follow exactly or whose meaning a constant can change:
//! backslashes (escape strings), dollar quoting, unterminated quotes or
//! comments. Only data statements (`SELECT`, `INSERT`, `UPDATE`, `DELETE`,
//! `WITH`, `VALUES`, `TABLE`, `MERGE`) are shaped, and none that mentions
//! `EXPLAIN` (its options are constants: `ANALYZE off`) or `COPY` (its file
//! name or program is a string the fingerprint keeps), nor any that mentions
//! `set_config` (whether its first argument names `role` decides whether it
//! switches roles): elsewhere a string can be more than a constant.

/// Statement keywords whose constants are all plain constants (`A_Const`
/// nodes), which neither the summary nor the fingerprint depend on.
const SHAPED: &[&[u8]] = &[
    b"select", b"insert", b"update", b"delete", b"with", b"values", b"table", b"merge",
];

/// The shape of `sql`, or `None` when the text must be keyed exactly.
pub fn shape(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    if b.contains(&b'\\')
        || contains_ignore_case(b, b"explain")
        || contains_ignore_case(b, b"copy")
        || contains_ignore_case(b, b"set_config")
        || !starts_with_shaped_keyword(b)
    {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && ident(b[i - 1]);
        match c {
            b'\'' => {
                // A string constant ('' is a quote inside it).
                let end = closing_quote(b, i)?;
                out.push(b'?');
                i = end + 1;
            }
            b'"' => {
                // A quoted identifier ("" inside it): kept as written.
                let end = closing_quote(b, i)?;
                out.extend_from_slice(&b[i..=end]);
                i = end + 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                out.push(b' ');
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                loop {
                    match (b.get(i), b.get(i + 1)) {
                        (None, _) => return None,
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
                out.push(b' ');
            }
            b'$' if !prev_ident => {
                // `$1` is a parameter; anything else starts dollar quoting.
                let mut j = i + 1;
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
                if j == i + 1 {
                    return None;
                }
                out.extend_from_slice(&b[i..j]);
                i = j;
            }
            b'0'..=b'9' if !prev_ident => {
                i = skip_number(b, i);
                out.push(b'?');
            }
            b'.' if !prev_ident && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = skip_number(b, i);
                out.push(b'?');
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The index of the quote closing the one at `open` (a doubled quote is
/// part of the text), or `None` if the text ends first.
fn closing_quote(b: &[u8], open: usize) -> Option<usize> {
    let q = b[open];
    let mut j = open + 1;
    loop {
        match b.get(j) {
            None => return None,
            Some(&c) if c == q && b.get(j + 1) == Some(&q) => j += 2,
            Some(&c) if c == q => return Some(j),
            Some(_) => j += 1,
        }
    }
}

/// The end of the numeric constant starting at `i`: digits, `_`, one `.`,
/// an exponent with its sign, or a `0x`/`0o`/`0b` integer.
fn skip_number(b: &[u8], mut i: usize) -> usize {
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')) {
        i += 2;
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_hexdigit() || *c == b'_')
        {
            i += 1;
        }
        return i;
    }
    while b
        .get(i)
        .is_some_and(|c| c.is_ascii_digit() || *c == b'_' || *c == b'.')
    {
        i += 1;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
    }
    i
}

/// Whether the first word (after spaces and opening parentheses) is one of
/// [`SHAPED`]; texts starting with a comment are keyed exactly.
fn starts_with_shaped_keyword(b: &[u8]) -> bool {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace() && *c != b'(')
        .unwrap_or(b.len());
    let word_end = b[start..]
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .map_or(b.len(), |p| start + p);
    let word = &b[start..word_end];
    SHAPED.iter().any(|k| word.eq_ignore_ascii_case(k))
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_become_placeholders() {
        assert_eq!(
            shape("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = ?;")
        );
        assert_eq!(
            shape("SELECT 'it''s', 1.5e-3, .5, 0x1F, t1.c2 FROM t1").as_deref(),
            Some("SELECT ?, ?, ?, ?, t1.c2 FROM t1")
        );
        assert_eq!(
            shape("SELECT $1 /* a /* nested */ comment */ -- x\n, \"Weird 'id\"").as_deref(),
            Some("SELECT $1    \n, \"Weird 'id\"")
        );
    }

    #[test]
    fn texts_it_cannot_follow_have_no_shape() {
        for sql in [
            "SELECT E'\\''",
            "SELECT $$ ; DROP TABLE t; $$",
            "SELECT $tag$x$tag$",
            "SELECT 'unterminated",
            "SELECT /* unterminated",
            "EXPLAIN (ANALYZE off) DELETE FROM t",
            "explain analyze select 1",
            "COPY t TO PROGRAM 'cat'",
            "SELECT 1; COPY t TO PROGRAM 'cat'",
            "SET ROLE 'admin'",
            "/* c */ SELECT 1",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_keeps_utf8(sql in "(?s).{0,200}") {
            let _ = shape(&format!("SELECT {sql}"));
        }
    }

    #[test]
    fn structure_differences_keep_shapes_apart() {
        assert_ne!(shape("SELECT 1 FROM a"), shape("SELECT 1 FROM b"));
        assert_ne!(shape("SELECT \"1\""), shape("SELECT 1"));
        assert_ne!(shape("SELECT 'a' -- x"), shape("SELECT 'a' - x"));
    }
}

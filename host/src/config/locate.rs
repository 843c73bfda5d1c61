//! Finds the line of a dotted key such as `targets[1].port` in the TOML text,
//! so validation errors can point at it.

/// Line (1-based) of `key` in `text`, if it can be found.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    // key = "section[index].field" or "section[index]"
    let (section, rest) = key.split_once('[')?;
    let (index, field) = rest.split_once(']')?;
    let index: usize = index.parse().ok()?;
    let field = field.strip_prefix('.').unwrap_or("");
    let header = format!("[[{section}]]");
    let mut seen = 0usize;
    let mut in_table = false;
    let mut table_line = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_table {
                break;
            }
            if t == header {
                if seen == index {
                    in_table = true;
                    table_line = Some(n + 1);
                }
                seen += 1;
            }
            continue;
        }
        if in_table && !field.is_empty() {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim() == field {
                    return Some(n + 1);
                }
            }
        }
    }
    table_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_field_in_second_table() {
        let text = "[[targets]]\nname = \"a\"\n\n[[targets]]\nname = \"b\"\nport = 0\n";
        assert_eq!(line_of(text, "targets[1].port"), Some(6));
        assert_eq!(line_of(text, "targets[1].missing"), Some(4));
        assert_eq!(line_of(text, "targets[0].name"), Some(2));
    }
}

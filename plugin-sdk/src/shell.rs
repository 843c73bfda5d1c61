//! Reading an SSH command line the way a POSIX shell would split it, for
//! rules about which programs a line runs — conservatively: what the
//! reader cannot see through is named, so rules can refuse it.
//!
//! [`parse`] removes quotes and backslashes as the shell does (`'r'm`,
//! `r\m` and `"rm"` all read `rm`), splits the line into simple commands
//! at `;`, `&`, `|`, `&&`, `||`, newlines, parentheses and braces, and
//! notes as *opaque* everything whose commands only the host can know:
//! command and process substitution (`$(…)`, backticks, `<(…)`),
//! expansions (`$VAR`, `${…}`) and brace expansion, shells and
//! interpreters anywhere on the line (`bash -c`, `| sh`, `python3`,
//! `eval`, `source`), and variable assignments before a command
//! (`LD_PRELOAD=… ls`). It also notes compound syntax (`if`, `for`,
//! `while`, `case`, functions) and output redirections to files.
//!
//! What no reader of the line can know: what a script, an alias, a
//! program's own configuration or a program that runs others (`find
//! -exec`, `xargs`, `vim`, `less`) does on the host. An allow-list
//! ([`Pattern`]s every simple command must match) with opaque lines
//! refused is the rule that holds against an agent trying spellings.

/// A command line as a shell would run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellLine {
    /// Each simple command's words, quotes removed, in order.
    pub commands: Vec<Vec<String>>,
    /// Why parts of the line cannot be judged from its text (empty when
    /// every command is plain words).
    pub opaque: Vec<String>,
    /// Compound syntax: `if`, `for`, `while`, `until`, `case`, `function`,
    /// `!`, a function definition.
    pub compound: bool,
    /// An output redirection to a file (`>`, `>>`, `>|`, `&>`), not
    /// `2>&1`-style duplication.
    pub writes_files: bool,
}

/// Shells and interpreters: a line that runs one hands it commands the
/// gateway cannot see (`bash -c '…'`, `base64 -d | sh`, `python3 -`).
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "python",
    "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh", "expect",
    "eval", "source", ".", "exec", "su", "script", "awk", "gawk", "mawk", "nawk",
];

const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
    "in", "function", "select", "!", "[[", "]]",
];

/// The last path component of a program word (`/usr/bin/rm` → `rm`).
pub fn program_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

fn is_interpreter(word: &str) -> bool {
    let name = program_name(word);
    INTERPRETERS.contains(&name)
        || name.starts_with("python")
        || name.starts_with("perl")
        || name.starts_with("ruby")
        || name.starts_with("php")
}

/// Whether `word` is `NAME=value` (an assignment before a command).
fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Notes `why` once.
fn opaque(why: &str, out: &mut ShellLine) {
    if !out.opaque.iter().any(|w| w == why) {
        out.opaque.push(why.to_string());
    }
}

/// Reads `line` as a POSIX shell would split it (see the module's doc).
pub fn parse(line: &str) -> ShellLine {
    let mut out = ShellLine::default();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    // Whether `word` holds anything (an empty quoted word counts).
    let mut in_word = false;
    // Whether the current word had an unquoted or double-quoted expansion.
    let mut expanded = false;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let end_word = |words: &mut Vec<String>,
                    word: &mut String,
                    in_word: &mut bool,
                    expanded: &mut bool,
                    out: &mut ShellLine| {
        if *in_word {
            if *expanded && words.iter().all(|w| is_assignment(w)) && !is_assignment(word) {
                opaque("an expansion as the command name", out);
            }
            words.push(std::mem::take(word));
        }
        *in_word = false;
        *expanded = false;
    };
    let end_command = |words: &mut Vec<String>, out: &mut ShellLine| {
        if !words.is_empty() {
            out.commands.push(std::mem::take(words));
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
                i += 1;
                continue;
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    match chars[i] {
                        '\\' if i + 1 < chars.len()
                            && matches!(chars[i + 1], '$' | '`' | '"' | '\\' | '\n') =>
                        {
                            word.push(chars[i + 1]);
                            i += 2;
                            continue;
                        }
                        '$' if chars.get(i + 1) == Some(&'(') => {
                            opaque("command substitution", &mut out);
                            expanded = true;
                        }
                        '$' if chars.get(i + 1).is_some_and(|n| {
                            n.is_ascii_alphanumeric() || "_{@*#?$!-".contains(*n)
                        }) =>
                        {
                            opaque("a variable or parameter expansion", &mut out);
                            expanded = true;
                        }
                        '`' => {
                            opaque("command substitution", &mut out);
                            expanded = true;
                        }
                        _ => {}
                    }
                    word.push(chars[i]);
                    i += 1;
                }
                i += 1;
                continue;
            }
            '\\' => {
                in_word = true;
                if let Some(&n) = chars.get(i + 1) {
                    if n != '\n' {
                        word.push(n);
                    }
                }
                i += 2;
                continue;
            }
            '#' if !in_word => {
                // A comment: the shell ignores the rest of the line.
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            ' ' | '\t' => {
                end_word(&mut words, &mut word, &mut in_word, &mut expanded, &mut out);
            }
            '\n' | ';' | '&' | '|' | '(' | ')' => {
                if c == '(' && in_word && word.ends_with('$') {
                    opaque("command substitution", &mut out);
                } else if c == '(' && !in_word && i > 0 && matches!(chars[i - 1], '<' | '>') {
                    opaque("process substitution", &mut out);
                } else if c == '(' && chars.get(i + 1) == Some(&')') {
                    out.compound = true; // `name ()`: a function definition
                }
                if c == '&' && chars.get(i + 1) == Some(&'>') {
                    // `&>file`: stdout and stderr to a file (the `>` is
                    // read next).
                    out.writes_files = true;
                    end_word(&mut words, &mut word, &mut in_word, &mut expanded, &mut out);
                    i += 1;
                    continue;
                }
                end_word(&mut words, &mut word, &mut in_word, &mut expanded, &mut out);
                end_command(&mut words, &mut out);
            }
            '`' => {
                opaque("command substitution", &mut out);
                end_word(&mut words, &mut word, &mut in_word, &mut expanded, &mut out);
                end_command(&mut words, &mut out);
            }
            '$' => {
                in_word = true;
                match chars.get(i + 1) {
                    Some('(') => opaque("command substitution", &mut out),
                    Some(n) if n.is_ascii_alphanumeric() || "_{@*#?$!-'\"".contains(*n) => {
                        opaque("a variable or parameter expansion", &mut out);
                        expanded = true;
                    }
                    _ => {}
                }
                word.push(c);
            }
            '<' | '>' => {
                if c == '>' {
                    // `>&N` and `N>&M` duplicate a descriptor; anything
                    // else names a file.
                    let dup = chars.get(i + 1) == Some(&'&')
                        && chars
                            .get(i + 2)
                            .is_some_and(|n| n.is_ascii_digit() || *n == '-');
                    let process = chars.get(i + 1) == Some(&'(');
                    if !dup && !process {
                        out.writes_files = true;
                    }
                }
                if chars.get(i + 1) == Some(&'(') {
                    opaque("process substitution", &mut out);
                }
                // The redirection's operator ends the word; its target is
                // the next word (kept: rules see it as an argument), except
                // a duplicated descriptor (`2>&1`), which is dropped.
                if !word.chars().all(|d| d.is_ascii_digit()) {
                    end_word(&mut words, &mut word, &mut in_word, &mut expanded, &mut out);
                } else {
                    word.clear();
                    in_word = false;
                }
                if chars.get(i + 1) == Some(&'&') {
                    i += 2;
                    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '-') {
                        i += 1;
                    }
                    continue;
                }
            }
            '{' | '}' if !in_word && chars.get(i + 1).is_none_or(|n| n.is_whitespace()) => {
                // A group `{ …; }`: its commands are judged one by one.
                end_command(&mut words, &mut out);
            }
            _ => {
                if matches!(c, '*' | '?' | '[') && words.iter().all(|w| is_assignment(w)) {
                    opaque("a pattern as the command name", &mut out);
                }
                if c == '{' {
                    let rest: String = chars[i..]
                        .iter()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    if rest.contains(',') || rest.contains("..") {
                        opaque("brace expansion", &mut out);
                    }
                }
                in_word = true;
                word.push(c);
            }
        }
        i += 1;
    }
    end_word(&mut words, &mut word, &mut in_word, &mut expanded, &mut out);
    end_command(&mut words, &mut out);
    let commands = std::mem::take(&mut out.commands);
    for command in &commands {
        let first = command.iter().find(|w| !is_assignment(w));
        let sets_env = command.iter().take_while(|w| is_assignment(w)).count() > 0
            && first.is_some()
            || command.iter().any(|w| program_name(w) == "env")
                && command.iter().any(|w| is_assignment(w));
        if sets_env {
            opaque("environment variables set for a command", &mut out);
        }
        if let Some(first) = first {
            if KEYWORDS.contains(&first.as_str()) {
                out.compound = true;
            }
        }
        if let Some(w) = command.iter().find(|w| is_interpreter(w)) {
            let why = format!("`{}` runs commands the gateway cannot see", program_name(w));
            opaque(&why, &mut out);
        }
    }
    out.commands = commands;
    out
}

/// A command pattern: words matched one for one against a simple
/// command's words. The first word matches the program by name or path
/// (`systemctl` matches `/usr/bin/systemctl`); `*` and `?` in a word are
/// wildcards; a last word `*` matches any number of further words, none
/// included. `systemctl restart *` matches `systemctl restart nginx`, not
/// `systemctl status nginx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    words: Vec<String>,
}

impl Pattern {
    /// Reads a pattern; `None` when it has no words.
    pub fn parse(text: &str) -> Option<Self> {
        let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        (!words.is_empty()).then_some(Self { words })
    }

    /// The pattern's text, words separated by single spaces.
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    /// Whether the simple command `words` matches from its first word.
    pub fn matches(&self, words: &[String]) -> bool {
        let Some((program, args)) = words.split_first() else {
            return false;
        };
        let Some((p_program, p_args)) = self.words.split_first() else {
            return false;
        };
        if !glob(p_program, program) && !glob(p_program, program_name(program)) {
            return false;
        }
        let (p_args, rest) = match p_args.split_last() {
            Some((last, init)) if last == "*" => (init, true),
            _ => (p_args, false),
        };
        if args.len() < p_args.len() || (!rest && args.len() != p_args.len()) {
            return false;
        }
        p_args.iter().zip(args).all(|(p, a)| glob(p, a))
    }

    /// Whether the simple command `words` runs what the pattern names
    /// anywhere in it: from its first word, or from any later word (`sudo
    /// rm -rf /`, `xargs rm -rf`, `env X=1 rm -rf /`). Over-matches
    /// (`echo rm -rf /`) rather than miss a wrapper.
    pub fn matches_within(&self, words: &[String]) -> bool {
        (0..words.len()).any(|i| self.matches(&words[i..]))
    }
}

/// `*` and `?` wildcards over a whole word.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `name` matches one of `patterns` (`*` and `?` wildcards).
pub fn name_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<String>> {
        parse(line).commands
    }

    #[test]
    fn quotes_and_backslashes_are_removed_as_the_shell_does() {
        for spelling in [
            "rm -rf /",
            "'r'm -rf /",
            "r\\m -rf /",
            "\"rm\" '-rf' /",
            "rm  -rf\t/",
        ] {
            assert_eq!(words(spelling), vec![vec!["rm", "-rf", "/"]], "{spelling}");
            assert!(parse(spelling).opaque.is_empty(), "{spelling}");
        }
    }

    #[test]
    fn operators_split_simple_commands() {
        assert_eq!(
            words("ls; rm x && echo ok || true | cat & (id) { whoami; }"),
            vec![
                vec!["ls"],
                vec!["rm", "x"],
                vec!["echo", "ok"],
                vec!["true"],
                vec!["cat"],
                vec!["id"],
                vec!["whoami"],
            ]
        );
        assert_eq!(
            words("ls\nrm x # rm -rf /"),
            vec![vec!["ls"], vec!["rm", "x"]]
        );
    }

    #[test]
    fn what_only_the_host_can_know_is_opaque() {
        for line in [
            "$(echo rm) -rf /",
            "`echo rm` -rf /",
            "echo \"$(id)\"",
            "$CMD -rf /",
            "${X}rm -rf /",
            "bash -c 'rm -rf /'",
            "echo cm0gLXJmIC8K | base64 -d | sh",
            "sudo sh",
            "python3 -c 'import os'",
            "eval rm -rf /",
            "LD_PRELOAD=/tmp/x.so ls",
            "/bin/r? -rf /",
            "{rm,-rf,/}",
            "diff <(ls) <(ls /)",
            "awk 'BEGIN{system(\"id\")}'",
        ] {
            assert!(!parse(line).opaque.is_empty(), "{line}: {:?}", parse(line));
        }
        for line in [
            "ls -la /var/log",
            "systemctl status nginx",
            "cat '$HOME'",
            "grep -c x y 2>&1",
        ] {
            assert!(parse(line).opaque.is_empty(), "{line}: {:?}", parse(line));
        }
    }

    #[test]
    fn redirections_and_compound_syntax_are_noted() {
        assert!(parse("echo x > /etc/passwd").writes_files);
        assert!(parse("echo x >>/tmp/y").writes_files);
        assert!(parse("ls &> out").writes_files);
        assert!(!parse("ls 2>&1").writes_files);
        assert!(!parse("ls >&2").writes_files);
        assert!(parse("if true; then rm x; fi").compound);
        assert!(parse("for f in *; do rm $f; done").compound);
        assert!(parse("f() { rm x; }; f").compound);
        assert!(!parse("ls; id").compound);
    }

    #[test]
    fn patterns_match_words_one_for_one() {
        let p = Pattern::parse("systemctl restart *").expect("pattern");
        let yes = |l: &str| p.matches(&words(l)[0]);
        assert!(yes("systemctl restart nginx"));
        assert!(yes("/usr/bin/systemctl restart nginx redis"));
        assert!(yes("systemctl restart"));
        assert!(!yes("systemctl status nginx"));
        let exact = Pattern::parse("uptime").expect("pattern");
        assert!(exact.matches(&words("uptime")[0]));
        assert!(!exact.matches(&words("uptime -p")[0]));
        let glob = Pattern::parse("cat /var/log/*").expect("pattern");
        assert!(glob.matches(&words("cat /var/log/syslog")[0]));
        assert!(!glob.matches(&words("cat /etc/shadow")[0]));
        let rm = Pattern::parse("rm *").expect("pattern");
        for line in ["sudo rm -rf /", "xargs rm", "env rm x", "nice -n 5 rm x"] {
            assert!(rm.matches_within(&words(line)[0]), "{line}");
        }
        assert!(!rm.matches_within(&words("ls -l")[0]));
        assert!(Pattern::parse("  ").is_none());
    }
}

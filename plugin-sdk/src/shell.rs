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
    "eval", "source", ".", "exec", "su", "script", "awk", "gawk", "mawk", "nawk", "watch", "flock",
    "runuser", "ssh", "sg", "parallel", "sed", "vim", "vi", "nvim", "emacs", "less", "more", "man",
    "git", "fc", "alias",
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

/// Whether `c` ends a word outside quotes.
fn is_break(c: char) -> bool {
    c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '<' | '>' | '`')
}

/// The reader's state between characters.
#[derive(Default)]
struct Reader {
    out: ShellLine,
    /// The simple command being read.
    words: Vec<String>,
    /// The word being read.
    word: String,
    /// Whether `word` holds anything (an empty quoted word counts).
    in_word: bool,
    /// The word had an expansion (unquoted or in double quotes).
    expanded: bool,
    /// The word had an unquoted `{`.
    brace: bool,
    /// Every word of the command so far is an assignment (`NAME=value`):
    /// the next one is in command position.
    assignments_only: bool,
}

impl Reader {
    fn opaque(&mut self, why: &str) {
        opaque(why, &mut self.out);
    }

    fn end_word(&mut self) {
        if self.in_word {
            let command_position = self.assignments_only && !is_assignment(&self.word);
            if self.expanded && command_position {
                self.opaque("an expansion as the command name");
            }
            if self.brace && (self.word.contains(',') || self.word.contains("..")) {
                self.opaque("brace expansion");
            }
            self.assignments_only = self.assignments_only && !command_position;
            self.words.push(std::mem::take(&mut self.word));
        }
        self.in_word = false;
        self.expanded = false;
        self.brace = false;
    }

    fn end_command(&mut self) {
        self.end_word();
        if !self.words.is_empty() {
            self.out.commands.push(std::mem::take(&mut self.words));
        }
        self.assignments_only = true;
    }
}

/// `line`'s characters with every line continuation (a backslash and a
/// line end, outside single quotes and comments) removed, as the shell
/// removes them before it reads words: `$\⏎{X}` is `${X}` and `<\⏎<` is
/// `<<` to it, so they must be to the reader too.
fn without_continuations(line: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let (mut single, mut double, mut comment, mut word_start) = (false, false, false, true);
    while let Some(c) = chars.next() {
        if single {
            single = c != '\'';
            out.push(c);
            continue;
        }
        if comment {
            comment = c != '\n';
            word_start = !comment;
            out.push(c);
            continue;
        }
        match c {
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
                continue;
            }
            '\\' => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
                word_start = false;
                continue;
            }
            '"' => double = !double,
            '\'' if !double => single = true,
            '#' if word_start && !double => comment = true,
            _ => {}
        }
        word_start = matches!(c, ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')');
        out.push(c);
    }
    out
}

/// Reads `line` as a POSIX shell would split it (see the module's doc).
pub fn parse(line: &str) -> ShellLine {
    let mut r = Reader {
        assignments_only: true,
        ..Reader::default()
    };
    let chars = without_continuations(line);
    let at = |i: usize| chars.get(i).copied();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' => {
                r.in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    r.word.push(chars[i]);
                    i += 1;
                }
                i += 1;
                continue;
            }
            '"' => {
                r.in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    match chars[i] {
                        // A line continuation disappears; `\$`, `` \` ``,
                        // `\"` and `\\` stand for the character.
                        '\\' if at(i + 1) == Some('\n') => {
                            i += 2;
                            continue;
                        }
                        '\\' if matches!(at(i + 1), Some('$' | '`' | '"' | '\\')) => {
                            r.word.push(chars[i + 1]);
                            i += 2;
                            continue;
                        }
                        '$' if at(i + 1) == Some('(') => {
                            r.opaque("command substitution");
                            r.expanded = true;
                        }
                        '$' if at(i + 1).is_some_and(|n| {
                            n.is_ascii_alphanumeric() || "_{@*#?$!-".contains(n)
                        }) =>
                        {
                            r.opaque("a variable or parameter expansion");
                            r.expanded = true;
                        }
                        '`' => {
                            r.opaque("command substitution");
                            r.expanded = true;
                        }
                        _ => {}
                    }
                    r.word.push(chars[i]);
                    i += 1;
                }
                i += 1;
                continue;
            }
            '\\' => {
                // Outside quotes: the next character stands for itself; a
                // line continuation disappears.
                if let Some(n) = at(i + 1) {
                    if n != '\n' {
                        r.in_word = true;
                        r.word.push(n);
                    }
                }
                i += 2;
                continue;
            }
            '#' if !r.in_word => {
                // A comment: the shell ignores the rest of the line.
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            ' ' | '\t' => r.end_word(),
            '\n' | ';' | '&' | '|' | '(' | ')' => {
                if c == '(' && r.in_word && r.word.ends_with('$') {
                    r.opaque("command substitution");
                } else if c == '(' && at(i + 1) == Some(')') {
                    r.out.compound = true; // `name ()`: a function definition
                }
                if c == '&' && at(i + 1) == Some('>') {
                    // `&>file`: stdout and stderr to a file (the `>` is
                    // read next).
                    r.out.writes_files = true;
                    r.end_word();
                    i += 1;
                    continue;
                }
                r.end_command();
            }
            '`' => {
                r.opaque("command substitution");
                r.end_command();
            }
            '$' => {
                r.in_word = true;
                match at(i + 1) {
                    Some('(') => r.opaque("command substitution"),
                    Some(n) if n.is_ascii_alphanumeric() || "_{@*#?$!-'\"".contains(n) => {
                        r.opaque("a variable or parameter expansion");
                        r.expanded = true;
                    }
                    _ => {}
                }
                r.word.push(c);
            }
            '<' | '>' => {
                if at(i + 1) == Some('(') {
                    r.opaque("process substitution");
                }
                if c == '<' && at(i + 1) == Some('<') && at(i + 2) != Some('<') {
                    // Its body is data to the reader, code to whatever
                    // reads it, and its quoting is the shell's own.
                    r.opaque("a here-document");
                }
                let dup = at(i + 1) == Some('&');
                if c == '>' && !dup && at(i + 1) != Some('(') {
                    r.out.writes_files = true;
                }
                // The operator ends the word (a descriptor number before it
                // is dropped); its target is the next word, which rules see
                // as an argument, except a duplicated descriptor.
                if r.word.chars().all(|d| d.is_ascii_digit()) && !r.expanded {
                    r.word.clear();
                    r.in_word = false;
                } else {
                    r.end_word();
                }
                if dup {
                    i += 2;
                    while at(i).is_some_and(|n| n.is_ascii_digit() || n == '-') {
                        i += 1;
                    }
                    if at(i).is_some_and(|n| !is_break(n)) {
                        // `>&1#`, `>&file`: a file, not a descriptor; what
                        // follows is part of its name (a `#` there starts
                        // no comment).
                        r.opaque("a redirection the reader cannot follow");
                        r.in_word = true;
                    }
                    continue;
                }
            }
            _ => {
                if matches!(c, '*' | '?' | '[') {
                    r.opaque("a pattern (`*`, `?`, `[`) the shell expands");
                }
                // An interactive shell replaces `!!`, `!rm`, `!-2` with a
                // line from its history (a typed line's `!` alone, or
                // before a blank, `=` or `(`, stays itself).
                if c == '!'
                    && at(i + 1).is_some_and(|n| !n.is_whitespace() && !matches!(n, '=' | '('))
                {
                    r.opaque("history expansion (`!`)");
                }
                if c == '{' {
                    if !r.in_word && at(i + 1).is_none_or(char::is_whitespace) {
                        // A group `{ …; }`: its commands are judged one by one.
                        r.end_command();
                        i += 1;
                        continue;
                    }
                    r.brace = true;
                }
                if c == '}' && !r.in_word && at(i + 1).is_none_or(|n| is_break(n) || n == '}') {
                    r.end_command();
                    i += 1;
                    continue;
                }
                r.in_word = true;
                r.word.push(c);
            }
        }
        i += 1;
    }
    r.end_command();
    let mut out = r.out;
    let commands = std::mem::take(&mut out.commands);
    for command in &commands {
        let first = command.iter().find(|w| !is_assignment(w));
        let sets_env = command.iter().take_while(|w| is_assignment(w)).count() > 0
            && first.is_some()
            || command.iter().any(|w| program_name(w) == "env")
                && command.iter().any(|w| {
                    is_assignment(w) || w.starts_with("-S") || w.starts_with("--split-string")
                });
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
        let shell_flag = |w: &String| matches!(w.as_str(), "-s" | "-i" | "--shell" | "--login");
        if command.iter().any(|w| program_name(w) == "sudo") && command.iter().any(shell_flag) {
            opaque("`sudo` starts a shell", &mut out);
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

/// Whether `pattern` (`*` and `?` wildcards) matches some text that
/// begins with `prefix`: the pattern's matches include something under it.
pub(crate) fn glob_prefix(pattern: &str, prefix: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    // Pattern positions reachable so far, a `*` also letting its next be.
    let close = |states: &mut Vec<usize>| {
        let mut i = 0;
        while i < states.len() {
            let s = states[i];
            if s < p.len() && p[s] == '*' && !states.contains(&(s + 1)) {
                states.push(s + 1);
            }
            i += 1;
        }
    };
    let mut states = vec![0];
    close(&mut states);
    for c in prefix.chars() {
        let mut next = Vec::new();
        for &s in &states {
            if s >= p.len() {
                continue;
            }
            let to = match p[s] {
                '*' => s,
                '?' => s + 1,
                x if x == c => s + 1,
                _ => continue,
            };
            if !next.contains(&to) {
                next.push(to);
            }
        }
        close(&mut next);
        if next.is_empty() {
            return false;
        }
        states = next;
    }
    true
}

/// `*` and `?` wildcards over a whole word.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
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
    fn line_continuations_hide_nothing() {
        for (line, why) in [
            ("X=rm; $\\\n{X} -f /x", "expansion"),
            ("X=rm; $\\\nX -f /x", "expansion"),
            ("echo \"$\\\n(rm -f /x)\"", "substitution"),
            ("true <\\\n<EOF\n'\nEOF\nrm -f /x #'", "here-document"),
        ] {
            let parsed = parse(line);
            assert!(
                parsed.opaque.iter().any(|o| o.contains(why)),
                "{line:?}: {parsed:?}"
            );
        }
        // Inside single quotes a backslash is itself; a single quote in
        // double quotes opens nothing.
        assert_eq!(parse("echo 'a\\\nb'").commands, [["echo", "a\\\nb"]]);
        assert_eq!(
            parse("echo \"it's\" r\\\nm").commands,
            [["echo", "it's", "rm"]]
        );
    }

    #[test]
    fn history_expansion_is_opaque() {
        for line in [
            "!!",
            "!rm",
            "sudo !-2",
            "echo x; !r:p",
            "fc -s rm",
            "alias x='rm -f'",
        ] {
            assert!(!parse(line).opaque.is_empty(), "{line}");
        }
        for line in ["echo hi !", "test ! -e x", "test x != y"] {
            assert!(
                parse(line).opaque.is_empty(),
                "{line}: {:?}",
                parse(line).opaque
            );
        }
    }

    #[test]
    fn quotes_and_backslashes_are_removed_as_the_shell_does() {
        for spelling in [
            "rm -rf /",
            "'r'm -rf /",
            "r\\m -rf /",
            "\"rm\" '-rf' /",
            "rm  -rf\t/",
            "\"r\\\nm\" -rf /",
            "r\\\nm -rf /",
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
            "journalctl -n1 <<EOF\njournalctl '\nEOF\nrm -rf /x #'",
            "uptime >&1#; rm -rf /x",
            "command /bin/r[m] -rf /x",
            "sudo /bin/r? -rf /x",
            "ls *.log",
            "env -S 'rm -rf /x'",
            "watch 'rm x'",
            "flock f -c 'rm x'",
            "sudo -s",
            "sudo -i rm x",
            "a$'\\x72'm x",
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
    fn a_hash_after_a_redirection_starts_no_comment() {
        let line = parse("uptime >&1#; rm -rf /x");
        assert!(line
            .commands
            .iter()
            .any(|c| c.first().map(String::as_str) == Some("rm")));
        assert!(!line.opaque.is_empty());
    }

    #[test]
    fn long_lines_are_read_in_one_pass() {
        // Each `{`, glob and assignment is judged without rereading the
        // line: these would take minutes if any step were quadratic.
        let braces = format!("{} ; rm x", "{".repeat(200_000));
        assert!(parse(&braces)
            .commands
            .iter()
            .any(|c| c.contains(&"rm".to_string())));
        let assignments = "a=* ".repeat(50_000);
        assert!(!parse(&assignments).opaque.is_empty());
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

//! GBNF (llama.cpp's grammar format) to llguidance's Lark.
//!
//! GBNF: `name ::= body` rules, `root` the start; `"literals"` with `\n \r \t \\ \" \xHH
//! \uHHHH \UHHHHHHHH` escapes; `[a-z]`/`[^...]` classes; `.`; groups; `|`; `* + ?`; `{m}`,
//! `{m,}`, `{m,n}`; `# comments`; `<[id]>`/`<|token|>` token references. A rule's body
//! ends at the end of its line except inside parentheses or after `|` (and, unlike
//! llama.cpp, a line may also start with `|` to go on with the rule above).
//!
//! Rules that are regular (only literals, classes and other regular rules, no recursion and
//! no token references) become Lark terminals, as llguidance's own converter does: the
//! lexer then takes a whole string or number as one lexeme instead of one parser step per
//! character, which keeps masks fast. Lexemes are greedy, so a terminal followed by text it
//! could itself continue with (`[a-z]* "x"`) does not backtrack the way llama.cpp's
//! character-level matcher does; grammars written for llama.cpp rarely rely on that.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use super::compile::lark_literal;
use super::ConstraintError;

#[derive(Clone, Debug)]
enum Node {
    Lit(String),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Any,
    Ref(String),
    /// `<...>`: a token reference, passed to Lark as written.
    Token(String),
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    Rep(Box<Node>, u32, Option<u32>),
}

/// Convert a GBNF grammar to Lark; errors name the line.
pub fn gbnf_to_lark(src: &str) -> Result<String, ConstraintError> {
    let rules = Parser::new(src).grammar()?;
    emit(&rules)
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            s: src.as_bytes(),
            src,
            pos: 0,
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> ConstraintError {
        let line = self.src[..self.pos.min(self.src.len())]
            .matches('\n')
            .count()
            + 1;
        ConstraintError::Invalid(format!("GBNF grammar, line {line}: {msg}"))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' => self.pos += 1,
                b'\r' | b'\n' if newlines => self.pos += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn is_word(c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
    }

    fn name(&mut self) -> Result<String, ConstraintError> {
        let start = self.pos;
        while self.peek().is_some_and(Self::is_word) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err("expected a rule name"));
        }
        Ok(self.src[start..self.pos].to_string())
    }

    fn grammar(mut self) -> Result<Vec<(String, Node)>, ConstraintError> {
        let mut rules: Vec<(String, Node)> = Vec::new();
        self.skip_space(true);
        while self.peek().is_some() {
            let name = self.name()?;
            self.skip_space(false);
            if !self.s[self.pos..].starts_with(b"::=") {
                return Err(self.err(format!("expected `::=` after `{name}`")));
            }
            self.pos += 3;
            self.skip_space(true);
            let body = self.alternates(false)?;
            match self.peek() {
                None | Some(b'\n') | Some(b'\r') => {}
                Some(c) => return Err(self.err(format!("unexpected `{}`", c as char))),
            }
            if rules.iter().any(|(n, _)| *n == name) {
                return Err(self.err(format!("rule `{name}` is defined twice")));
            }
            rules.push((name, body));
            self.skip_space(true);
        }
        Ok(rules)
    }

    fn alternates(&mut self, nested: bool) -> Result<Node, ConstraintError> {
        let mut alts = vec![self.sequence(nested)?];
        loop {
            self.skip_space(nested);
            // A rule may go on with `|` at the start of the next line.
            let save = self.pos;
            self.skip_space(true);
            if self.peek() == Some(b'|') {
                self.pos += 1;
                self.skip_space(true);
                alts.push(self.sequence(nested)?);
            } else {
                self.pos = save;
                break;
            }
        }
        Ok(if alts.len() == 1 {
            alts.pop().expect("one")
        } else {
            Node::Alt(alts)
        })
    }

    fn sequence(&mut self, nested: bool) -> Result<Node, ConstraintError> {
        let mut items = Vec::new();
        loop {
            self.skip_space(nested);
            let Some(c) = self.peek() else { break };
            let item = match c {
                b'"' => Node::Lit(self.literal()?),
                b'[' => self.class()?,
                b'(' => {
                    self.pos += 1;
                    self.skip_space(true);
                    let inner = self.alternates(true)?;
                    self.skip_space(true);
                    if self.peek() != Some(b')') {
                        return Err(self.err("expected `)`"));
                    }
                    self.pos += 1;
                    inner
                }
                b'.' => {
                    self.pos += 1;
                    Node::Any
                }
                b'<' => {
                    let start = self.pos;
                    while self.peek().is_some_and(|c| c != b'>' && c != b'\n') {
                        self.pos += 1;
                    }
                    if self.peek() != Some(b'>') {
                        return Err(self.err("unterminated token reference `<...>`"));
                    }
                    self.pos += 1;
                    Node::Token(self.src[start..self.pos].to_string())
                }
                b'!' => {
                    return Err(self.err("negated token references (`!<...>`) are not supported"))
                }
                c if Self::is_word(c) => Node::Ref(self.name()?),
                _ => break,
            };
            self.skip_space(nested);
            items.push(self.repetition(item)?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Node::Seq(items)
        })
    }

    fn repetition(&mut self, item: Node) -> Result<Node, ConstraintError> {
        let rep = |min, max| Node::Rep(Box::new(item.clone()), min, max);
        Ok(match self.peek() {
            Some(b'*') => {
                self.pos += 1;
                rep(0, None)
            }
            Some(b'+') => {
                self.pos += 1;
                rep(1, None)
            }
            Some(b'?') => {
                self.pos += 1;
                rep(0, Some(1))
            }
            Some(b'{') => {
                self.pos += 1;
                self.skip_space(true);
                let min = self.number()?;
                self.skip_space(true);
                let max = match self.peek() {
                    Some(b'}') => Some(min),
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_space(true);
                        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                            Some(self.number()?)
                        } else {
                            None
                        }
                    }
                    _ => return Err(self.err("expected `,` or `}` in a repetition")),
                };
                self.skip_space(true);
                if self.peek() != Some(b'}') {
                    return Err(self.err("expected `}` to close a repetition"));
                }
                self.pos += 1;
                if max.is_some_and(|m| m < min) {
                    return Err(self.err(format!(
                        "repetition {{{min},{}}} is empty",
                        max.unwrap_or(0)
                    )));
                }
                rep(min, max)
            }
            _ => item,
        })
    }

    fn number(&mut self) -> Result<u32, ConstraintError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.src[start..self.pos]
            .parse()
            .map_err(|_| self.err("expected a number"))
    }

    /// One character of a literal or class, escapes decoded.
    fn char(&mut self) -> Result<char, ConstraintError> {
        let rest = &self.src[self.pos..];
        let mut it = rest.chars();
        let c = it
            .next()
            .ok_or_else(|| self.err("unexpected end of the grammar"))?;
        if c != '\\' {
            self.pos += c.len_utf8();
            return Ok(c);
        }
        let e = it.next().ok_or_else(|| self.err("unfinished escape"))?;
        self.pos += 2;
        let hex = |p: &mut Self, n: usize| -> Result<char, ConstraintError> {
            let h = p.src.get(p.pos..p.pos + n).unwrap_or("");
            let v =
                u32::from_str_radix(h, 16).map_err(|_| p.err(format!("bad escape `\\{e}{h}`")))?;
            p.pos += n;
            char::from_u32(v).ok_or_else(|| p.err(format!("`\\{e}{h}` is not a character")))
        };
        Ok(match e {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            '\\' | '"' | '[' | ']' | '/' | '-' | '^' => e,
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            _ => return Err(self.err(format!("unknown escape `\\{e}`"))),
        })
    }

    fn literal(&mut self) -> Result<String, ConstraintError> {
        self.pos += 1; // "
        let mut s = String::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.err("unterminated string literal")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(_) => s.push(self.char()?),
            }
        }
    }

    fn class(&mut self) -> Result<Node, ConstraintError> {
        self.pos += 1; // [
        let negated = self.peek() == Some(b'^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.err("unterminated character class")),
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => {
                    let lo = self.char()?;
                    let hi = if self.peek() == Some(b'-') && self.s.get(self.pos + 1) != Some(&b']')
                    {
                        self.pos += 1;
                        self.char()?
                    } else {
                        lo
                    };
                    if hi < lo {
                        return Err(self.err(format!("character range {lo:?}-{hi:?} is empty")));
                    }
                    ranges.push((lo, hi));
                }
            }
        }
        if ranges.is_empty() && !negated {
            return Err(self.err("empty character class `[]`"));
        }
        Ok(Node::Class { negated, ranges })
    }
}

fn refs(n: &Node, out: &mut Vec<String>) {
    match n {
        Node::Ref(r) => out.push(r.clone()),
        Node::Seq(v) | Node::Alt(v) => v.iter().for_each(|c| refs(c, out)),
        Node::Rep(c, ..) => refs(c, out),
        _ => {}
    }
}

fn has_token(n: &Node) -> bool {
    match n {
        Node::Token(_) => true,
        Node::Seq(v) | Node::Alt(v) => v.iter().any(has_token),
        Node::Rep(c, ..) => has_token(c),
        _ => false,
    }
}

fn emit(rules: &[(String, Node)]) -> Result<String, ConstraintError> {
    let defined: HashSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    if !defined.contains("root") {
        return Err(ConstraintError::Invalid(
            "GBNF grammar has no `root` rule".into(),
        ));
    }
    for (name, body) in rules {
        let mut r = Vec::new();
        refs(body, &mut r);
        if let Some(missing) = r.iter().find(|r| !defined.contains(r.as_str())) {
            return Err(ConstraintError::Invalid(format!(
                "GBNF grammar: rule `{name}` uses `{missing}`, which is not defined"
            )));
        }
    }
    // Regular rules become terminals: grow the set until nothing changes (recursive rules
    // never join, since they wait on themselves).
    let mut terminal: HashSet<&str> = HashSet::new();
    loop {
        let before = terminal.len();
        for (name, body) in rules {
            if name == "root" || terminal.contains(name.as_str()) || has_token(body) {
                continue;
            }
            let mut r = Vec::new();
            refs(body, &mut r);
            if r.iter().all(|r| terminal.contains(r.as_str())) {
                terminal.insert(name);
            }
        }
        if terminal.len() == before {
            break;
        }
    }
    // Lark names: rules lower case, terminals upper case, unique.
    let mut names: HashMap<&str, String> = HashMap::new();
    let mut used: HashSet<String> = HashSet::new();
    for (name, _) in rules {
        let lark = if name == "root" {
            "start".to_string()
        } else {
            let mut base: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            base = if terminal.contains(name.as_str()) {
                base.to_ascii_uppercase()
            } else {
                base.to_ascii_lowercase()
            };
            if !base.starts_with(|c: char| c.is_ascii_alphabetic()) || base == "start" {
                base = if terminal.contains(name.as_str()) {
                    format!("R_{base}")
                } else {
                    format!("r_{base}")
                };
            }
            let mut cand = base.clone();
            let mut i = 2;
            while used.contains(&cand) {
                cand = format!("{base}_{i}");
                i += 1;
            }
            cand
        };
        used.insert(lark.clone());
        names.insert(name, lark);
    }
    let mut out = String::new();
    for (name, body) in rules {
        let top = match body {
            Node::Alt(alts) => alts
                .iter()
                .map(|a| node(a, &names))
                .collect::<Vec<_>>()
                .join(" | "),
            n => node(n, &names),
        };
        let _ = writeln!(out, "{}: {top}", names[name.as_str()]);
    }
    Ok(out)
}

/// `n` as one element of a sequence.
fn element(n: &Node, names: &HashMap<&str, String>) -> String {
    match n {
        Node::Seq(v) if v.len() > 1 => format!("({})", node(n, names)),
        _ => node(n, names),
    }
}

/// `n` as the operand of a repetition.
fn operand(n: &Node, names: &HashMap<&str, String>) -> String {
    match n {
        Node::Seq(v) if v.len() > 1 => format!("({})", node(n, names)),
        Node::Rep(..) => format!("({})", node(n, names)),
        _ => node(n, names),
    }
}

fn node(n: &Node, names: &HashMap<&str, String>) -> String {
    match n {
        Node::Lit(s) => lark_literal(s),
        Node::Class { negated, ranges } => {
            let mut rx = String::from(if *negated { "/[^" } else { "/[" });
            for &(lo, hi) in ranges {
                let _ = write!(rx, "\\x{{{:x}}}", lo as u32);
                if hi != lo {
                    let _ = write!(rx, "-\\x{{{:x}}}", hi as u32);
                }
            }
            rx.push_str("]/");
            rx
        }
        Node::Any => "/(?s:.)/".to_string(),
        Node::Ref(r) => names[r.as_str()].clone(),
        Node::Token(t) => t.clone(),
        Node::Seq(v) if v.is_empty() => "\"\"".to_string(),
        Node::Seq(v) => v
            .iter()
            .map(|c| element(c, names))
            .collect::<Vec<_>>()
            .join(" "),
        Node::Alt(v) => format!(
            "({})",
            v.iter()
                .map(|c| node(c, names))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        Node::Rep(inner, min, max) => {
            let a = operand(inner, names);
            match (*min, *max) {
                (_, Some(0)) => "\"\"".to_string(),
                (0, None) => format!("{a}*"),
                (1, None) => format!("{a}+"),
                (0, Some(1)) => format!("{a}?"),
                (m, None) => format!("{a}{{{m},}}"),
                (m, Some(x)) if m == x => format!("{a}{{{m}}}"),
                (m, Some(x)) => format!("{a}{{{m},{x}}}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_rules_terminals_and_repetitions() {
        let g = r#"
# a comment
root ::= greeting ("," ws greeting){0,3} "!"
greeting ::= "hi" | "hello" [a-z]*
ws ::= [ \t\n]?
"#;
        let lark = gbnf_to_lark(g).unwrap();
        assert_eq!(
            lark,
            "start: GREETING (\",\" WS GREETING){0,3} \"!\"\n\
             GREETING: \"hi\" | \"hello\" /[\\x{61}-\\x{7a}]/*\n\
             WS: /[\\x{20}\\x{9}\\x{a}]/?\n"
        );
    }

    #[test]
    fn recursive_rules_stay_rules() {
        let g = "root ::= list\nlist ::= \"(\" (list | [0-9]+)* \")\"\n";
        let lark = gbnf_to_lark(g).unwrap();
        assert!(
            lark.contains("list: \"(\" (list | /[\\x{30}-\\x{39}]/+)* \")\""),
            "{lark}"
        );
    }

    #[test]
    fn escapes_and_errors() {
        let lark = gbnf_to_lark(r#"root ::= "a\"b\\\x41\u00e9" [^"\\]"#).unwrap();
        assert_eq!(lark, "start: \"a\\\"b\\\\Aé\" /[^\\x{22}\\x{5c}]/\n");
        let e = gbnf_to_lark("root ::= foo").unwrap_err();
        assert!(e.to_string().contains("`foo`"), "{e}");
        let e = gbnf_to_lark("rot ::= \"a\"").unwrap_err();
        assert!(e.to_string().contains("root"), "{e}");
        let e = gbnf_to_lark("root ::= \"a\"\nx ::= [b-a]").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}

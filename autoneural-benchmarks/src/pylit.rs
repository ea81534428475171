//! The few Python behaviours benchmark files depend on: VLMEvalKit stores answer lists as
//! the `str()` of a Python list (`"['yes', 'no']"`) and reads them back with `eval`, its
//! scorers parse numbers with Python's `float()`, and lmms-eval capitalises TextVQA questions
//! with `str.capitalize()`. Each is reproduced here for the inputs benchmark files hold.

/// A Python literal as benchmark cells hold them.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    Str(String),
    /// A number, as written (`3`, `-1.5`, `1e3`).
    Number(String),
    Bool(bool),
    None,
    List(Vec<PyValue>),
}

impl PyValue {
    /// What Python's `str()` gives for a string or a number (a list gives its repr).
    pub fn to_text(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            Self::Number(n) => n.clone(),
            Self::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Self::None => "None".to_string(),
            Self::List(items) => {
                let parts: Vec<String> = items.iter().map(PyValue::repr).collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }

    /// Python's `repr()`.
    pub fn repr(&self) -> String {
        match self {
            Self::Str(s) => repr_str(s),
            other => other.to_text(),
        }
    }
}

/// Parses a whole cell as a Python list or tuple literal of strings, numbers, booleans and
/// `None` (nested lists too): `None` when the cell is not one (VLMEvalKit's `istype(x, list)`
/// is false, and the cell is a single answer).
pub fn parse_list(text: &str) -> Option<Vec<PyValue>> {
    let mut p = Parser { s: text.as_bytes(), text, i: 0 };
    p.ws();
    let close = match p.peek()? {
        b'[' => b']',
        b'(' => b')',
        _ => return None,
    };
    let v = p.sequence(close)?;
    p.ws();
    match v {
        PyValue::List(items) if p.i == p.s.len() => Some(items),
        _ => None,
    }
}

/// The strings of a list cell (`"['a', 'b']"` gives `a`, `b`), or the cell itself as the one
/// answer when it is not a list literal.
pub fn answers(cell: &str) -> Vec<String> {
    match parse_list(cell) {
        Some(items) => items.iter().map(PyValue::to_text).collect(),
        None => vec![cell.to_string()],
    }
}

/// `repr(list_of_str)`, as `str()` of a Python list of strings writes it (what pandas writes
/// for a list cell, and what VLMEvalKit's `eval` reads back).
pub fn repr_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| repr_str(s)).collect();
    format!("[{}]", parts.join(", "))
}

/// Python's `repr()` of a string: single quotes unless the text has a single quote and no
/// double quote; backslash, the quote, `\n`, `\r`, `\t` and other control characters escaped.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// After the opening bracket: items separated by commas (a trailing one allowed).
    fn sequence(&mut self, close: u8) -> Option<PyValue> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.peek()? == close {
                self.i += 1;
                return Some(PyValue::List(items));
            }
            items.push(self.value()?);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Some(PyValue::List(items));
                }
                _ => return None,
            }
        }
    }

    fn value(&mut self) -> Option<PyValue> {
        self.ws();
        match self.peek()? {
            b'[' => self.sequence(b']'),
            b'(' => self.sequence(b')'),
            b'\'' | b'"' => self.string(false).map(PyValue::Str),
            b'r' | b'R' if matches!(self.s.get(self.i + 1), Some(b'\'' | b'"')) => {
                self.i += 1;
                self.string(true).map(PyValue::Str)
            }
            b'u' | b'U' if matches!(self.s.get(self.i + 1), Some(b'\'' | b'"')) => {
                self.i += 1;
                self.string(false).map(PyValue::Str)
            }
            _ => {
                let start = self.i;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'_'))
                {
                    self.i += 1;
                }
                let word = &self.text[start..self.i];
                match word {
                    "True" => Some(PyValue::Bool(true)),
                    "False" => Some(PyValue::Bool(false)),
                    "None" => Some(PyValue::None),
                    w if py_float(w).is_some() && !w.is_empty() => Some(PyValue::Number(w.to_string())),
                    _ => None,
                }
            }
        }
    }

    /// A quoted string at `self.i` (single or double quotes, triple-quoted too), escapes
    /// decoded unless `raw`.
    fn string(&mut self, raw: bool) -> Option<String> {
        let q = self.peek()?;
        let triple = self.s.get(self.i..self.i + 3) == Some(&[q, q, q][..]);
        self.i += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let rest = &self.text[self.i..];
            let c = rest.chars().next()?;
            if c as u32 == q as u32 {
                if !triple {
                    self.i += 1;
                    return Some(out);
                }
                if self.s.get(self.i..self.i + 3) == Some(&[q, q, q][..]) {
                    self.i += 3;
                    return Some(out);
                }
            }
            if c == '\\' {
                let next = rest[1..].chars().next()?;
                if raw {
                    out.push('\\');
                    out.push(next);
                    self.i += 1 + next.len_utf8();
                    continue;
                }
                self.i += 1 + next.len_utf8();
                match next {
                    '\n' => {}
                    '\\' => out.push('\\'),
                    '\'' => out.push('\''),
                    '"' => out.push('"'),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    'x' => out.push(self.hex(2)?),
                    'u' => out.push(self.hex(4)?),
                    'U' => out.push(self.hex(8)?),
                    '0'..='7' => {
                        let mut v = next.to_digit(8)?;
                        for _ in 0..2 {
                            match self.peek() {
                                Some(d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    self.i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(char::from_u32(v)?);
                    }
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
                continue;
            }
            if !triple && c == '\n' {
                return None;
            }
            out.push(c);
            self.i += c.len_utf8();
        }
    }

    fn hex(&mut self, digits: usize) -> Option<char> {
        let h = self.text.get(self.i..self.i + digits)?;
        self.i += digits;
        char::from_u32(u32::from_str_radix(h, 16).ok()?)
    }
}

/// Python's `float(text)`: surrounding whitespace ignored, `_` allowed between digits,
/// `inf`, `infinity` and `nan` in any case with an optional sign; `None` where Python raises
/// `ValueError`.
pub fn py_float(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let cleaned;
    let t = if t.contains('_') {
        let b = t.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c == b'_' {
                let before = i > 0 && b[i - 1].is_ascii_digit();
                let after = b.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !(before && after) {
                    return None;
                }
            }
        }
        cleaned = t.replace('_', "");
        cleaned.as_str()
    } else {
        t
    };
    // Rust also takes what Python takes (`1.`, `.5`, `1e5`, `+inf`, `NaN`); it must not take
    // more: no hexadecimal and no other words.
    let body = t.trim_start_matches(['+', '-']);
    if body.len() + 1 < t.len() {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let word = matches!(lower.as_str(), "inf" | "infinity" | "nan");
    if !word && !body.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-')) {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Python's `str.capitalize()`: the first character upper-cased (title case), the rest
/// lower-cased.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => {
            let mut out: String = first.to_uppercase().collect();
            out.push_str(&chars.as_str().to_lowercase());
            out
        }
    }
}

/// The strings pandas' `read_csv` reads as NaN by default: a cell holding one of them is
/// absent to VLMEvalKit (an option `None` is no option).
pub fn is_pandas_na(cell: &str) -> bool {
    matches!(
        cell,
        "" | "#N/A"
            | "#N/A N/A"
            | "#NA"
            | "-1.#IND"
            | "-1.#QNAN"
            | "-NaN"
            | "-nan"
            | "1.#IND"
            | "1.#QNAN"
            | "<NA>"
            | "N/A"
            | "NA"
            | "NULL"
            | "NaN"
            | "None"
            | "n/a"
            | "nan"
            | "null"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_as_python_reads_them() {
        assert_eq!(answers("['a', \"it's\", 'x\\'y']"), vec!["a", "it's", "x'y"]);
        assert_eq!(answers("[1, 2.5, None]"), vec!["1", "2.5", "None"]);
        assert_eq!(answers("('a',)"), vec!["a"]);
        assert_eq!(answers("plain answer"), vec!["plain answer"]);
        assert_eq!(answers("[not a list"), vec!["[not a list"]);
        assert_eq!(answers("['\\u00e9\\n']"), vec!["é\n"]);
        assert_eq!(answers("[]"), Vec::<String>::new());
    }

    #[test]
    fn repr_round_trips() {
        let items = vec!["it's".to_string(), "say \"hi\"".to_string(), "a\\b\n".to_string(), "both ' \"".to_string()];
        let text = repr_list(&items);
        assert_eq!(text, r#"["it's", 'say "hi"', 'a\\b\n', 'both \' "']"#);
        assert_eq!(answers(&text), items);
    }

    #[test]
    fn floats_parse_as_python_does() {
        assert_eq!(py_float(" 12 "), Some(12.0));
        assert_eq!(py_float("1_000.5"), Some(1000.5));
        assert_eq!(py_float("1__0"), None);
        assert_eq!(py_float(".5"), Some(0.5));
        assert_eq!(py_float("5."), Some(5.0));
        assert_eq!(py_float("-1e3"), Some(-1000.0));
        assert!(py_float("nan").unwrap().is_nan());
        assert_eq!(py_float("+Infinity"), Some(f64::INFINITY));
        assert_eq!(py_float("12%"), None);
        assert_eq!(py_float("0x10"), None);
        assert_eq!(py_float("1,000"), None);
        assert_eq!(py_float(""), None);
    }

    #[test]
    fn capitalize_lowers_the_rest() {
        assert_eq!(capitalize("what is THE brand?"), "What is the brand?");
        assert_eq!(capitalize(""), "");
    }
}

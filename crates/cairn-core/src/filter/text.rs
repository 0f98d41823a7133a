//! Evaluating a filter on a row's metadata JSON text in place, without building a
//! `serde_json::Value`: each condition finds its path by skimming the text (keys compared as
//! bytes, other members skipped by bracket and quote counting) and compares the value's bytes.
//! A search tests thousands of rows per query, and parsing each into a tree (an allocation per
//! key and string) was most of a filtered query's time.
//!
//! Invariant: `eval` answers exactly as `Filter::matches_value` does on the parsed text, or
//! returns None (then the caller parses). It returns None on anything it does not expect, so
//! stored metadata, which was checked to be JSON when written, is the only input it must get
//! right. Duplicate keys resolve to the last, as serde_json's map does.

use std::cmp::Ordering;

use super::{Node, RangeOp, Scalar, Test};

/// A value at some path, as a slice of the metadata text.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Null,
    Bool(bool),
    /// The number's text (JSON syntax, which `f64::from_str` accepts).
    Num(&'a str),
    /// The characters between the quotes, still escaped when `escaped`.
    Str {
        body: &'a str,
        escaped: bool,
    },
    /// The array's text from `[` to `]`.
    Array(&'a str),
    Object,
}

/// Does `text` match `node`? None when the text is not what this reader expects.
pub(super) fn eval(node: &Node, text: &str) -> Option<bool> {
    match node {
        Node::And(children) => {
            for c in children {
                if !eval(c, text)? {
                    return Some(false);
                }
            }
            Some(true)
        }
        Node::Or(children) => {
            for c in children {
                if eval(c, text)? {
                    return Some(true);
                }
            }
            Some(false)
        }
        Node::Not(inner) => eval(inner, text).map(|b| !b),
        Node::Field { path, test, .. } => {
            let found = lookup(text, path)?;
            field_matches(test, found)
        }
    }
}

fn field_matches(test: &Test, found: Option<Raw<'_>>) -> Option<bool> {
    Some(match test {
        Test::Exists(want) => found.is_some() == *want,
        Test::Eq(s) => any_element(found, |v| equal(s, v))?,
        Test::Ne(s) => !any_element(found, |v| equal(s, v))?,
        Test::In(list) => any_element(found, |v| any_of(list, v))?,
        Test::Nin(list) => !any_element(found, |v| any_of(list, v))?,
        Test::Range(op, bound) => any_element(found, |v| in_range(*op, bound, v))?,
    })
}

fn any_of(list: &[Scalar], v: Raw<'_>) -> Option<bool> {
    for s in list {
        if equal(s, v)? {
            return Some(true);
        }
    }
    Some(false)
}

/// A scalar condition holds for an array when it holds for any element.
fn any_element(found: Option<Raw<'_>>, f: impl Fn(Raw<'_>) -> Option<bool>) -> Option<bool> {
    match found {
        None => Some(false),
        Some(Raw::Array(text)) => {
            let mut s = Skim::new(text);
            s.expect(b'[')?;
            s.ws();
            if s.eat(b']') {
                return Some(false);
            }
            loop {
                s.ws();
                let v = s.value()?;
                if f(v)? {
                    return Some(true);
                }
                s.ws();
                if s.eat(b']') {
                    return Some(false);
                }
                s.expect(b',')?;
            }
        }
        Some(v) => f(v),
    }
}

fn equal(s: &Scalar, v: Raw<'_>) -> Option<bool> {
    Some(match (s, v) {
        (Scalar::Null, Raw::Null) => true,
        (Scalar::Bool(a), Raw::Bool(b)) => *a == b,
        (Scalar::Num(a), Raw::Num(t)) => number(t)? == *a,
        (Scalar::Str(a), Raw::Str { body, escaped: false }) => a == body,
        (Scalar::Str(a), Raw::Str { body, escaped: true }) => *a == unescape(body)?,
        _ => false,
    })
}

fn in_range(op: RangeOp, bound: &Scalar, v: Raw<'_>) -> Option<bool> {
    let ord = match (v, bound) {
        (Raw::Num(t), Scalar::Num(b)) => number(t)?.partial_cmp(b),
        // Rust orders str by bytes, which for UTF-8 is code point order.
        (Raw::Str { body, escaped: false }, Scalar::Str(b)) => Some(body.cmp(b.as_str())),
        (Raw::Str { body, escaped: true }, Scalar::Str(b)) => Some(unescape(body)?.as_str().cmp(b.as_str())),
        _ => None,
    };
    Some(match (ord, op) {
        (None, _) => false,
        (Some(o), RangeOp::Gt) => o == Ordering::Greater,
        (Some(o), RangeOp::Gte) => o != Ordering::Less,
        (Some(o), RangeOp::Lt) => o == Ordering::Less,
        (Some(o), RangeOp::Lte) => o != Ordering::Greater,
    })
}

/// A number's value. Integers of up to 15 digits (exact in f64) are read directly; anything
/// else goes through `f64::from_str`, which rounds as JavaScript does.
#[inline]
fn number(t: &str) -> Option<f64> {
    let (neg, digits) = match t.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let v = digits.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')) as f64;
        return Some(if neg { -v } else { v });
    }
    t.parse::<f64>().ok()
}

/// The string an escaped body stands for (rare: only bodies with a backslash get here).
fn unescape(body: &str) -> Option<String> {
    serde_json::from_str::<String>(&format!("\"{body}\"")).ok()
}

/// The value at `path` (Some(None): missing), walking objects only; None when the text is not
/// what this reader expects.
fn lookup<'a>(text: &'a str, path: &[String]) -> Option<Option<Raw<'a>>> {
    let mut s = Skim::new(text);
    s.ws();
    // The top-level object is walked by `member` below, not skipped over first.
    let mut at = match s.b.get(s.at) {
        Some(b'{') => Found { raw: Raw::Object, object_start: Some(s.at) },
        _ => s.value_at()?,
    };
    for segment in path {
        let Some(start) = at.object_start else { return Some(None) };
        let mut s = Skim { b: text.as_bytes(), text, at: start };
        match s.member(segment.as_bytes())? {
            Some(found) => at = found,
            None => return Some(None),
        }
    }
    Some(Some(at.raw))
}

/// A value found in the text: what it is, and where its members start if it is an object.
struct Found<'a> {
    raw: Raw<'a>,
    object_start: Option<usize>,
}

/// A cursor over JSON text that reads only what a lookup needs.
struct Skim<'a> {
    b: &'a [u8],
    text: &'a str,
    at: usize,
}

impl<'a> Skim<'a> {
    fn new(text: &'a str) -> Skim<'a> {
        Skim { b: text.as_bytes(), text, at: 0 }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.at) {
            self.at += 1;
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    /// At `{`: the last member named `key` (escaped keys are compared after unescaping), or
    /// None inside when there is none.
    fn member(&mut self, key: &[u8]) -> Option<Option<Found<'a>>> {
        self.expect(b'{')?;
        self.ws();
        let mut found = None;
        if self.eat(b'}') {
            return Some(None);
        }
        loop {
            self.ws();
            let (body, escaped) = self.string()?;
            let same = if escaped { unescape(body)?.as_bytes() == key } else { body.as_bytes() == key };
            self.ws();
            self.expect(b':')?;
            self.ws();
            if same {
                found = Some(self.value_at()?);
            } else {
                self.skip_value()?;
            }
            self.ws();
            if self.eat(b'}') {
                return Some(found);
            }
            self.expect(b',')?;
        }
    }

    /// At a value: read it (an object or array is skipped to its end).
    fn value_at(&mut self) -> Option<Found<'a>> {
        let start = self.at;
        let object_start = (self.b.get(start) == Some(&b'{')).then_some(start);
        let raw = self.value()?;
        Some(Found { raw, object_start })
    }

    fn value(&mut self) -> Option<Raw<'a>> {
        let start = self.at;
        Some(match *self.b.get(start)? {
            b'"' => {
                let (body, escaped) = self.string()?;
                Raw::Str { body, escaped }
            }
            b'{' => {
                self.skip_nested()?;
                Raw::Object
            }
            b'[' => {
                self.skip_nested()?;
                Raw::Array(self.text.get(start..self.at)?)
            }
            b't' => self.literal(b"true", Raw::Bool(true))?,
            b'f' => self.literal(b"false", Raw::Bool(false))?,
            b'n' => self.literal(b"null", Raw::Null)?,
            b'-' | b'0'..=b'9' => {
                while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.b.get(self.at) {
                    self.at += 1;
                }
                Raw::Num(self.text.get(start..self.at)?)
            }
            _ => return None,
        })
    }

    fn skip_value(&mut self) -> Option<()> {
        match *self.b.get(self.at)? {
            b'{' | b'[' => self.skip_nested(),
            b'"' => self.string().map(|_| ()),
            _ => self.value().map(|_| ()),
        }
    }

    fn literal(&mut self, word: &[u8], raw: Raw<'a>) -> Option<Raw<'a>> {
        if self.b.get(self.at..self.at + word.len())? != word {
            return None;
        }
        self.at += word.len();
        Some(raw)
    }

    /// At `"`: the body up to the closing quote, and whether it holds an escape.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            match *self.b.get(self.at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.at += 2;
                }
                _ => self.at += 1,
            }
        }
        let body = self.text.get(start..self.at)?;
        self.at += 1;
        Some((body, escaped))
    }

    /// At `{` or `[`: past its matching close, counting brackets outside strings.
    fn skip_nested(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match *self.b.get(self.at)? {
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' => {
                    depth -= 1;
                    self.at += 1;
                    if depth == 0 {
                        return Some(());
                    }
                }
                b'"' => {
                    self.string()?;
                }
                _ => self.at += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::Filter;
    use super::*;

    /// The text reader agrees with the tree evaluator, and it did not give up.
    fn same(filter: &str, doc: &str) -> bool {
        let f = Filter::parse(filter).expect("filter");
        let tree = f.matches_value(&serde_json::from_str::<Value>(doc).expect("doc"));
        let text = eval(&f.root, doc);
        assert_eq!(text, Some(tree), "{filter} on {doc}");
        tree
    }

    #[test]
    fn text_reader_agrees_with_the_tree_evaluator() {
        assert!(same(r#"{"b": {"$lt": 500}}"#, r#"{"b":12}"#));
        assert!(!same(r#"{"b": {"$lt": 500}}"#, r#"{"a": {"b": 1}, "b": 1e3}"#));
        assert!(same(r#"{"b": 1}"#, r#"{ "b" : 1.0 , "c": [1, {"b": 2}]}"#));
        assert!(same(r#"{"s": "a\"b"}"#, r#"{"s": "a\"b"}"#));
        assert!(same(r#"{"s": "é"}"#, r#"{"s": "\u00e9"}"#));
        assert!(same(r#"{"s": {"$gt": "a}"}}"#, r#"{"x": "}]{[\\", "s": "b"}"#));
        assert!(same(r#"{"k\"q": 1}"#, r#"{"k\"q": 1}"#));
        assert!(same(r#"{"a.b": true}"#, r#"{"a": {"z": [null], "b": true}}"#));
        assert!(!same(r#"{"a.b": true}"#, r#"{"a": [{"b": true}]}"#));
        assert!(same(r#"{"a": 2}"#, r#"{"a": 1, "a": 2}"#), "duplicate keys: the last one counts, as in serde_json");
        assert!(!same(r#"{"a": 1}"#, r#"{"a": 1, "a": 2}"#));
        assert!(same(r#"{"t": {"$in": ["x", 3]}}"#, r#"{"t": ["y", [3], 3]}"#));
        assert!(!same(r#"{"t": 3}"#, r#"{"t": [[3], {"t": 3}]}"#));
        assert!(same(r#"{"t": {"$nin": [1]}}"#, r#"{"t": []}"#));
        assert!(same(r#"{"n": null}"#, r#"{"n": null}"#));
        assert!(!same(r#"{"n": null}"#, r#"{}"#));
        assert!(same(r#"{"n": {"$exists": false}}"#, "null"));
        assert!(same(r#"{"n": -0}"#, r#"{"n": 0}"#));
        assert!(same(r#"{"n": {"$lt": 0}}"#, r#"{"n": -5}"#));
        assert!(!same(r#"{"n": {"$lt": 0}}"#, r#"{"n": -0}"#));
        assert!(same(r#"{"n": 123456789012345}"#, r#"{"n": 123456789012345}"#));
        assert!(same(r#"{"n": 1234567890123456789}"#, r#"{"n": 1234567890123456789}"#));
        assert!(same(r#"{"n": 2.5}"#, r#"{"n": 25e-1}"#));
        assert!(same(r#"{"n": {"$gte": 1e19}}"#, r#"{"n": 18446744073709551615}"#));
        assert!(!same(r#"{"n": {"$gte": 1e20}}"#, r#"{"n": 18446744073709551615}"#));
        assert!(same(r#"{"$or": [{"a": false}, {"$not": {"b": {"$exists": true}}}]}"#, r#"{"a": true}"#));
    }

    #[test]
    fn unexpected_text_gives_up_instead_of_guessing() {
        let f = Filter::parse(r#"{"a": 1}"#).expect("filter");
        assert_eq!(eval(&f.root, r#"{"a" 1}"#), None);
        assert_eq!(eval(&f.root, r#"{"a": 1"#), None);
        assert_eq!(eval(&f.root, r#"{"a": ["#), None);
        assert_eq!(eval(&f.root, r#"{"a": @}"#), None);
    }
}

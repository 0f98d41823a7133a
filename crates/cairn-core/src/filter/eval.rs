//! Evaluating a filter against a row's metadata (JSON text, a top-level object).

use std::cmp::Ordering;

use serde_json::Value;

use super::{Filter, Node, RangeOp, Scalar, Test};

impl Filter {
    /// Does the row whose metadata is this JSON text match? Read in place (`text.rs`); text
    /// that is not JSON matches nothing but a filter that needs no field.
    pub fn matches(&self, metadata: &str) -> bool {
        if self.matches_everything() {
            return true;
        }
        if !self.may_match_text(metadata) {
            return false;
        }
        if let Some(answer) = super::text::eval(&self.root, metadata) {
            return answer;
        }
        match serde_json::from_str::<Value>(metadata) {
            Ok(v) => self.matches_value(&v),
            Err(_) => self.matches_value(&Value::Null),
        }
    }

    pub fn matches_value(&self, metadata: &Value) -> bool {
        eval(&self.root, metadata)
    }
}

fn eval(node: &Node, doc: &Value) -> bool {
    match node {
        Node::And(children) => children.iter().all(|c| eval(c, doc)),
        Node::Or(children) => children.iter().any(|c| eval(c, doc)),
        Node::Not(inner) => !eval(inner, doc),
        Node::Field { path, test, .. } => field_matches(test, resolve(doc, path)),
    }
}

/// The value at a dotted path, walking objects only.
pub fn resolve<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = doc;
    for segment in path {
        at = at.as_object()?.get(segment)?;
    }
    Some(at)
}

fn field_matches(test: &Test, found: Option<&Value>) -> bool {
    match test {
        Test::Exists(want) => found.is_some() == *want,
        Test::Eq(s) => any_element(found, |v| equal(s, v)),
        Test::Ne(s) => !any_element(found, |v| equal(s, v)),
        Test::In(list) => any_element(found, |v| list.iter().any(|s| equal(s, v))),
        Test::Nin(list) => !any_element(found, |v| list.iter().any(|s| equal(s, v))),
        Test::Range(op, bound) => any_element(found, |v| in_range(*op, bound, v)),
    }
}

/// A scalar condition holds for an array when it holds for any element.
fn any_element(found: Option<&Value>, f: impl Fn(&Value) -> bool) -> bool {
    match found {
        None => false,
        Some(Value::Array(items)) => items.iter().any(f),
        Some(v) => f(v),
    }
}

pub fn equal(s: &Scalar, v: &Value) -> bool {
    match (s, v) {
        (Scalar::Null, Value::Null) => true,
        (Scalar::Bool(a), Value::Bool(b)) => a == b,
        (Scalar::Num(a), Value::Number(b)) => b.as_f64() == Some(*a),
        (Scalar::Str(a), Value::String(b)) => a == b,
        _ => false,
    }
}

pub fn in_range(op: RangeOp, bound: &Scalar, v: &Value) -> bool {
    let ord = match (v, bound) {
        (Value::Number(n), Scalar::Num(b)) => n.as_f64().and_then(|x| x.partial_cmp(b)),
        // Rust orders str by bytes, which for UTF-8 is code point order.
        (Value::String(s), Scalar::Str(b)) => Some(s.as_str().cmp(b.as_str())),
        _ => None,
    };
    match (ord, op) {
        (None, _) => false,
        (Some(o), RangeOp::Gt) => o == Ordering::Greater,
        (Some(o), RangeOp::Gte) => o != Ordering::Less,
        (Some(o), RangeOp::Lt) => o == Ordering::Less,
        (Some(o), RangeOp::Lte) => o != Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, doc: &str) -> bool {
        Filter::parse(filter).expect("filter").matches(doc)
    }

    #[test]
    fn equality_never_mixes_types() {
        assert!(m(r#"{"a": 1}"#, r#"{"a": 1.0}"#));
        assert!(!m(r#"{"a": 1}"#, r#"{"a": "1"}"#));
        assert!(!m(r#"{"a": "1"}"#, r#"{"a": 1}"#));
        assert!(!m(r#"{"a": true}"#, r#"{"a": 1}"#));
        assert!(m(r#"{"a": null}"#, r#"{"a": null}"#));
        assert!(!m(r#"{"a": null}"#, r#"{}"#), "a missing field is not null");
        assert!(!m(r#"{"a": {"$gt": 0}}"#, r#"{"a": "5"}"#));
        assert!(!m(r#"{"a": {"$lt": "z"}}"#, r#"{"a": 5}"#));
    }

    #[test]
    fn ranges_on_numbers_and_strings() {
        assert!(m(r#"{"y": {"$gte": 2020, "$lt": 2025}}"#, r#"{"y": 2020}"#));
        assert!(!m(r#"{"y": {"$gte": 2020, "$lt": 2025}}"#, r#"{"y": 2025}"#));
        assert!(m(r#"{"s": {"$gt": "b"}}"#, r#"{"s": "ba"}"#));
        assert!(!m(r#"{"s": {"$lte": "b"}}"#, r#"{"s": "ba"}"#));
        assert!(m(r#"{"s": {"$gt": "\uffff"}}"#, r#"{"s": "\ud83d\ude00"}"#), "code point order, not UTF-16 units");
    }

    #[test]
    fn dotted_paths_walk_objects_only() {
        assert!(m(r#"{"meta.year": 2020}"#, r#"{"meta": {"year": 2020}}"#));
        assert!(!m(r#"{"meta.year": 2020}"#, r#"{"meta": [{"year": 2020}]}"#));
        assert!(!m(r#"{"meta.year": 2020}"#, r#"{"meta": 5}"#));
        assert!(m(r#"{"meta.year": {"$exists": false}}"#, r#"{"meta": 5}"#));
    }

    #[test]
    fn arrays_match_when_any_element_does() {
        assert!(m(r#"{"tags": "news"}"#, r#"{"tags": ["a", "news"]}"#));
        assert!(!m(r#"{"tags": "news"}"#, r#"{"tags": [["news"]]}"#));
        assert!(m(r#"{"n": {"$gt": 5}}"#, r#"{"n": [1, 9]}"#));
        assert!(!m(r#"{"tags": {"$ne": "news"}}"#, r#"{"tags": ["a", "news"]}"#));
        assert!(m(r#"{"tags": {"$nin": ["x"]}}"#, r#"{"tags": ["a", "news"]}"#));
        assert!(m(r#"{"tags": {"$in": ["x", "a"]}}"#, r#"{"tags": ["a", "news"]}"#));
        assert!(!m(r#"{"tags": {"$in": ["x"]}}"#, r#"{"tags": []}"#));
    }

    #[test]
    fn negations_match_missing_fields() {
        assert!(m(r#"{"a": {"$ne": 1}}"#, r#"{}"#));
        assert!(m(r#"{"a": {"$nin": [1]}}"#, r#"{}"#));
        assert!(m(r#"{"$not": {"a": 1}}"#, r#"{}"#));
        assert!(!m(r#"{"$not": {"a": 1}}"#, r#"{"a": 1}"#));
        assert!(m(r#"{"a": {"$exists": true}}"#, r#"{"a": null}"#));
    }

    #[test]
    fn logical_operators_combine() {
        let f = r#"{"$and": [{"lang": {"$in": ["en", "de"]}}, {"meta.year": {"$gte": 2020, "$lt": 2025}},
            {"$or": [{"tags": "news"}, {"draft": {"$exists": false}}]}, {"$not": {"status": {"$eq": "deleted"}}}]}"#;
        assert!(m(f, r#"{"lang": "en", "meta": {"year": 2021}, "tags": ["news"], "draft": true, "status": "ok"}"#));
        assert!(m(f, r#"{"lang": "de", "meta": {"year": 2024}}"#));
        assert!(!m(f, r#"{"lang": "de", "meta": {"year": 2024}, "status": "deleted"}"#));
        assert!(!m(f, r#"{"lang": "fr", "meta": {"year": 2024}}"#));
        assert!(!m(f, r#"{"lang": "en", "meta": {"year": 2024}, "draft": 1, "tags": "old"}"#));
    }
}

//! Parsing and checking filters. Nothing runs until the whole filter is valid: an unknown
//! operator, a wrong operand type, nesting deeper than `MAX_DEPTH` or an `$in` longer than
//! `MAX_IN_VALUES` is `InvalidArgument` naming the path and the operator.

use serde_json::{Map, Value};

use super::{Filter, Node, RangeOp, Scalar, Test, MAX_DEPTH, MAX_IN_VALUES};
use crate::error::{Error, Result};

fn bad(path: &str, op: &str, problem: impl std::fmt::Display) -> Error {
    let at = if path.is_empty() { "filter".to_string() } else { format!("filter at '{path}'") };
    Error::InvalidArgument(format!("{at}: {op} {problem}"))
}

impl Filter {
    /// Parse JSON text (the form the binding receives).
    pub fn parse(json: &str) -> Result<Filter> {
        let v: Value = serde_json::from_str(json).map_err(|e| Error::InvalidArgument(format!("filter is not valid JSON: {e}")))?;
        Filter::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Filter> {
        let Value::Object(map) = v else {
            return Err(Error::InvalidArgument("filter must be an object".into()));
        };
        let root = parse_object(map, "", 1)?;
        let mut needles = Vec::new();
        required_keys(&root, &mut needles);
        needles.sort();
        needles.dedup();
        let needles = needles.into_iter().map(|k| Value::String(k).to_string()).collect();
        Ok(Filter { root, needles })
    }

    /// Whether the metadata text can possibly match: it contains every required key.
    pub(super) fn may_match_text(&self, metadata: &str) -> bool {
        self.needles.iter().all(|n| metadata.contains(n.as_str()))
    }
}

/// A filter object: logical operators and field paths, all of which must hold.
fn parse_object(map: &Map<String, Value>, at: &str, depth: usize) -> Result<Node> {
    if depth > MAX_DEPTH {
        return Err(bad(at, "filter", format!("is nested deeper than {MAX_DEPTH} levels")));
    }
    let mut all = Vec::with_capacity(map.len());
    for (key, value) in map {
        match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = value else { return Err(bad(at, key, "must be a non-empty array of filter objects")) };
                if items.is_empty() {
                    return Err(bad(at, key, "must be a non-empty array of filter objects"));
                }
                let mut children = Vec::with_capacity(items.len());
                for item in items {
                    let Value::Object(m) = item else { return Err(bad(at, key, "must be a non-empty array of filter objects")) };
                    children.push(parse_object(m, at, depth + 2)?);
                }
                all.push(if key == "$and" { Node::And(children) } else { Node::Or(children) });
            }
            "$not" => {
                let Value::Object(m) = value else { return Err(bad(at, key, "must be a filter object")) };
                all.push(Node::Not(Box::new(parse_object(m, at, depth + 1)?)));
            }
            k if k.starts_with('$') => return Err(bad(at, k, "is not a known operator (expected a field path, $and, $or or $not)")),
            path => {
                let segments: Vec<String> = path.split('.').map(str::to_string).collect();
                if segments.iter().any(String::is_empty) {
                    return Err(bad(path, "path", "must not be empty or have an empty segment"));
                }
                all.push(parse_condition(value, segments, path, depth + 1)?);
            }
        }
    }
    Ok(if all.len() == 1 { all.pop().unwrap_or(Node::And(Vec::new())) } else { Node::And(all) })
}

/// The condition on one path: a bare scalar (`$eq`) or an object of operators.
fn parse_condition(value: &Value, path: Vec<String>, at: &str, depth: usize) -> Result<Node> {
    if depth > MAX_DEPTH {
        return Err(bad(at, "filter", format!("is nested deeper than {MAX_DEPTH} levels")));
    }
    let ops = match value {
        Value::Object(ops) => ops,
        Value::Array(_) => return Err(bad(at, "$eq", "takes a string, number, boolean or null (use $in for a list)")),
        v => return Ok(Node::Field { field: at.to_string(), path, test: Test::Eq(scalar(v, at, "$eq")?) }),
    };
    if ops.is_empty() {
        return Err(bad(at, "condition", "must hold at least one operator"));
    }
    let mut tests = Vec::with_capacity(ops.len());
    for (op, operand) in ops {
        let test = match op.as_str() {
            "$eq" => Test::Eq(scalar(operand, at, op)?),
            "$ne" => Test::Ne(scalar(operand, at, op)?),
            "$gt" | "$gte" | "$lt" | "$lte" => {
                let bound = match operand {
                    Value::Number(_) | Value::String(_) => scalar(operand, at, op)?,
                    _ => return Err(bad(at, op, "takes a number or a string")),
                };
                let range = match op.as_str() {
                    "$gt" => RangeOp::Gt,
                    "$gte" => RangeOp::Gte,
                    "$lt" => RangeOp::Lt,
                    _ => RangeOp::Lte,
                };
                Test::Range(range, bound)
            }
            "$in" | "$nin" => {
                let Value::Array(items) = operand else { return Err(bad(at, op, "takes an array of strings, numbers, booleans or null")) };
                if items.len() > MAX_IN_VALUES {
                    return Err(bad(at, op, format!("takes at most {MAX_IN_VALUES} values, got {}", items.len())));
                }
                let values = items.iter().map(|v| scalar(v, at, op)).collect::<Result<Vec<_>>>()?;
                if op == "$in" {
                    Test::In(values)
                } else {
                    Test::Nin(values)
                }
            }
            "$exists" => match operand {
                Value::Bool(b) => Test::Exists(*b),
                _ => return Err(bad(at, op, "takes true or false")),
            },
            other if other.starts_with('$') => return Err(bad(at, other, "is not a known operator")),
            other => {
                return Err(bad(
                    at,
                    other,
                    "is not an operator: a field's condition is a value or an object of operators (use a dotted path for nested fields)",
                ))
            }
        };
        tests.push(Node::Field { field: at.to_string(), path: path.clone(), test });
    }
    Ok(if tests.len() == 1 { tests.pop().unwrap_or(Node::And(Vec::new())) } else { Node::And(tests) })
}

fn scalar(v: &Value, at: &str, op: &str) -> Result<Scalar> {
    match v {
        Value::Null => Ok(Scalar::Null),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::Number(n) => n.as_f64().map(Scalar::Num).ok_or_else(|| bad(at, op, "takes a finite number")),
        Value::String(s) => Ok(Scalar::Str(s.clone())),
        Value::Array(_) => Err(bad(at, op, "takes a string, number, boolean or null, not an array")),
        Value::Object(_) => Err(bad(at, op, "takes a string, number, boolean or null, not an object")),
    }
}

/// Keys (path segments) that every matching row must contain; only conditions that need the
/// field present contribute, and nothing under `$or` or `$not`.
fn required_keys(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::And(children) => children.iter().for_each(|c| required_keys(c, out)),
        Node::Or(_) | Node::Not(_) => {}
        Node::Field { path, test, .. } => {
            let needs_field = !matches!(test, Test::Ne(_) | Test::Nin(_) | Test::Exists(false));
            // Keys that JSON text could spell with escapes are left out: the test must never
            // reject a row that matches.
            if needs_field && path.iter().all(|s| s.chars().all(|c| c != '"' && c != '\\' && !c.is_control())) {
                out.extend(path.iter().cloned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match Filter::parse(json) {
            Err(e) => {
                assert_eq!(e.code(), "CAIRN_INVALID_ARGUMENT");
                e.to_string()
            }
            Ok(f) => panic!("{json} parsed as {:?}", f.root),
        }
    }

    #[test]
    fn bare_value_is_eq_and_dotted_paths_split() {
        let f = Filter::parse(r#"{"meta.year": 2020}"#).expect("parse");
        assert_eq!(
            f.root,
            Node::Field { field: "meta.year".into(), path: vec!["meta".into(), "year".into()], test: Test::Eq(Scalar::Num(2020.0)) }
        );
        assert!(Filter::parse("{}").expect("empty").matches_everything());
    }

    #[test]
    fn several_operators_on_one_path_are_a_conjunction() {
        let f = Filter::parse(r#"{"y": {"$gte": 1, "$lt": 5}}"#).expect("parse");
        let Node::And(children) = f.root else { panic!("not a conjunction") };
        assert_eq!(children.len(), 2);
    }

    #[test]
    fn bad_filters_name_path_and_operator() {
        let e = err(r#"{"a.b": {"$foo": 1}}"#);
        assert!(e.contains("'a.b'") && e.contains("$foo"), "{e}");
        let e = err(r#"{"lang": {"$in": "en"}}"#);
        assert!(e.contains("'lang'") && e.contains("$in"), "{e}");
        let e = err(r#"{"y": {"$gt": {"x": 1}}}"#);
        assert!(e.contains("'y'") && e.contains("$gt"), "{e}");
        let e = err(r#"{"y": {"$gt": true}}"#);
        assert!(e.contains("$gt"), "{e}");
        let e = err(r#"{"$where": "x"}"#);
        assert!(e.contains("$where"), "{e}");
        let e = err(r#"{"$and": []}"#);
        assert!(e.contains("$and"), "{e}");
        let e = err(r#"{"$or": {"a": 1}}"#);
        assert!(e.contains("$or"), "{e}");
        let e = err(r#"{"x": {"$exists": 1}}"#);
        assert!(e.contains("$exists"), "{e}");
        let e = err(r#"{"x": [1, 2]}"#);
        assert!(e.contains("$in"), "{e}");
        let e = err(r#"{"a..b": 1}"#);
        assert!(e.contains("'a..b'"), "{e}");
        let e = err(r#"{"x": {"$in": [[1]]}}"#);
        assert!(e.contains("$in"), "{e}");
        assert!(err("[1]").contains("object"));
        assert!(err("{").contains("JSON"));
    }

    #[test]
    fn in_lists_are_limited() {
        let ok: Vec<u32> = (0..MAX_IN_VALUES as u32).collect();
        Filter::parse(&format!(r#"{{"x": {{"$in": {ok:?}}}}}"#)).expect("1024 values");
        let too_many: Vec<u32> = (0..=MAX_IN_VALUES as u32).collect();
        let e = err(&format!(r#"{{"x": {{"$nin": {too_many:?}}}}}"#));
        assert!(e.contains("$nin") && e.contains("'x'") && e.contains("1024"), "{e}");
    }

    #[test]
    fn nesting_is_limited() {
        let nest = |n: usize| {
            let mut s = r#"{"a": 1}"#.to_string();
            for _ in 0..n {
                s = format!(r#"{{"$not": {s}}}"#);
            }
            s
        };
        Filter::parse(&nest(MAX_DEPTH - 2)).expect("shallow enough");
        let e = err(&nest(MAX_DEPTH + 1));
        assert!(e.contains("nested deeper than 32"), "{e}");
    }

    #[test]
    fn required_keys_skip_negations_and_disjunctions() {
        let f = Filter::parse(r#"{"a.b": 1, "c": {"$ne": 2}, "$or": [{"d": 1}, {"e": 1}], "$not": {"f": 1}}"#).expect("parse");
        assert_eq!(f.needles, vec![r#""a""#.to_string(), r#""b""#.to_string()]);
    }
}

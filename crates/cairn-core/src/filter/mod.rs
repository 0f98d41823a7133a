//! The filter language of queries, `count`, `scan` and `deleteWhere` (docs/format.md, "Filter").
//!
//! - `parse.rs`: JSON text to a checked `Filter`; every rejection names the path and operator.
//! - `eval.rs`: does a row's metadata match (on a parsed tree).
//! - `text.rs`: the same on the metadata's JSON text, read in place without parsing it whole.
//!
//! Semantics, which the TypeScript reference evaluator in `test/filter.test.ts` restates:
//! - `{ path: value }` is `$eq`; several keys in one object are a conjunction; `{}` matches all.
//! - A dotted path walks nested objects only; a missing step means the field is missing.
//! - A scalar condition on an array matches when any element matches it (elements that are
//!   arrays or objects never do). `$ne` and `$nin` are the negations of `$eq` and `$in`, so
//!   they match a missing field and an array none of whose elements is equal.
//! - Values compare only within one type: numbers with numbers, strings with strings (by code
//!   point), booleans and null by equality only. A missing field matches no `$eq`, not even null.

pub mod eval;
mod parse;
mod text;

/// Deepest nesting of filter objects and arrays accepted.
pub const MAX_DEPTH: usize = 32;
/// Most values one `$in` or `$nin` may list.
pub const MAX_IN_VALUES: usize = 1_024;

/// A scalar a condition compares with. Numbers are f64, as in JavaScript.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// One operator applied to the value found at a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Eq(Scalar),
    Ne(Scalar),
    /// Operand is a number or a string (never null or a boolean).
    Range(RangeOp, Scalar),
    In(Vec<Scalar>),
    Nin(Vec<Scalar>),
    Exists(bool),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    /// `field` is the dotted path as written, `path` its segments.
    Field {
        field: String,
        path: Vec<String>,
        test: Test,
    },
}

/// A checked filter. `needles` are keys, in JSON text form, that every matching row's metadata
/// text must contain: a substring test that rejects most rows before they are parsed.
#[derive(Clone, Debug)]
pub struct Filter {
    pub root: Node,
    needles: Vec<String>,
}

impl Filter {
    /// The filter that matches every row (`{}`).
    pub fn all() -> Filter {
        Filter { root: Node::And(Vec::new()), needles: Vec::new() }
    }

    pub fn matches_everything(&self) -> bool {
        matches!(&self.root, Node::And(children) if children.is_empty())
    }
}

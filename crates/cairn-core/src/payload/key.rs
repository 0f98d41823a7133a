//! The ordered key an indexed scalar becomes. Keys of one index all have the index's type;
//! numbers order by value (-0 is stored as 0, so it equals 0 as in a filter), strings by code
//! point, as filter comparisons do.

use std::cmp::Ordering;

use serde_json::Value;

use super::IndexKind;
use crate::filter::Scalar;

#[derive(Clone, Debug)]
pub enum Key {
    Bool(bool),
    Num(f64),
    Str(Box<str>),
}

impl Key {
    /// The key of a stored value, if an index of `kind` holds values like it.
    pub fn of_value(kind: IndexKind, v: &Value) -> Option<Key> {
        match (kind, v) {
            (IndexKind::Keyword, Value::String(s)) => Some(Key::Str(s.as_str().into())),
            (IndexKind::Number, Value::Number(n)) => n.as_f64().map(Key::num),
            (IndexKind::Bool, Value::Bool(b)) => Some(Key::Bool(*b)),
            _ => None,
        }
    }

    /// The key a filter operand looks up, if it has the index's type (an operand of another
    /// type can only match values this index does not hold).
    pub fn of_scalar(kind: IndexKind, s: &Scalar) -> Option<Key> {
        match (kind, s) {
            (IndexKind::Keyword, Scalar::Str(s)) => Some(Key::Str(s.as_str().into())),
            (IndexKind::Number, Scalar::Num(n)) => Some(Key::num(*n)),
            (IndexKind::Bool, Scalar::Bool(b)) => Some(Key::Bool(*b)),
            _ => None,
        }
    }

    /// This key against a filter operand of the same type (the caller checked the type, see
    /// `plan::answerable`), without building a key for the operand.
    pub fn cmp_scalar(&self, s: &Scalar) -> Ordering {
        match (self, s) {
            (Key::Str(a), Scalar::Str(b)) => (**a).cmp(b.as_str()),
            (Key::Num(a), Scalar::Num(b)) => a.total_cmp(&if *b == 0.0 { 0.0 } else { *b }),
            (Key::Bool(a), Scalar::Bool(b)) => a.cmp(b),
            _ => self.rank().cmp(&scalar_rank(s)),
        }
    }

    fn num(n: f64) -> Key {
        Key::Num(if n == 0.0 { 0.0 } else { n })
    }

    fn rank(&self) -> u8 {
        match self {
            Key::Bool(_) => 0,
            Key::Num(_) => 1,
            Key::Str(_) => 2,
        }
    }
}

fn scalar_rank(s: &Scalar) -> u8 {
    match s {
        Scalar::Null | Scalar::Bool(_) => 0,
        Scalar::Num(_) => 1,
        Scalar::Str(_) => 2,
    }
}

impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        match (self, o) {
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Num(a), Key::Num(b)) => a.total_cmp(b),
            (Key::Str(a), Key::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&o.rank()),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Key {}

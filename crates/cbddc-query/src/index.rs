//! Index entries and the planner that reads them.
//!
//! **Entries.** An index on fields `f1 … fn` of a collection holds, for each live
//! document, one entry: the values at those paths, each encoded so that comparing the
//! bytes of two entries orders them as [`crate::order`] orders their values, field by
//! field. Each field's encoding is self-delimiting (a type byte, then a fixed-length or
//! terminated body), so all entries whose first fields equal given values share a byte
//! prefix, and a condition on the next field is a byte range after that prefix.
//!
//! - a missing field `00`, `null` `01`, `false` `02`, `true` `03`;
//! - a number `04` then the 8 bytes of its nearest double, big-endian, with the sign bit
//!   flipped for positives and every bit flipped for negatives (so bytes order as values);
//! - a string `05` then its UTF-8 bytes with `00` written `00 01`, ended by `00 00`;
//! - an array `06`, an object `07` (no body: all arrays share one entry value, and so do
//!   all objects).
//!
//! **Ranges are supersets.** An index narrows the documents a query reads; every
//! candidate is still checked against the whole query. So a range may hold more than the
//! query matches (integers past 2^53 sharing a double, arrays sharing a type byte), never
//! less.

use crate::{Condition, Path, Query, Selector};
use serde_json::Value;

/// The most fields one index may name.
pub const MAX_INDEX_FIELDS: usize = 8;
/// The most ranges one query's plan reads (values of `$in` times prefixes, and `$or`
/// branches): past it, the field is treated as unconstrained.
pub const MAX_RANGES: usize = 256;

const MISSING: u8 = 0x00;
const NULL: u8 = 0x01;
const FALSE: u8 = 0x02;
const TRUE: u8 = 0x03;
const NUMBER: u8 = 0x04;
const STRING: u8 = 0x05;
const ARRAY: u8 = 0x06;
const OBJECT: u8 = 0x07;

/// Appends the encoding of one field's value (`None`: missing).
fn encode(value: Option<&Value>, out: &mut Vec<u8>) {
    match value {
        None => out.push(MISSING),
        Some(Value::Null) => out.push(NULL),
        Some(Value::Bool(false)) => out.push(FALSE),
        Some(Value::Bool(true)) => out.push(TRUE),
        Some(Value::Number(n)) => {
            out.push(NUMBER);
            let bits = n.as_f64().unwrap_or(0.0).to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Some(Value::String(s)) => {
            out.push(STRING);
            for &b in s.as_bytes() {
                out.push(b);
                if b == 0 {
                    out.push(1);
                }
            }
            out.extend_from_slice(&[0, 0]);
        }
        Some(Value::Array(_)) => out.push(ARRAY),
        Some(Value::Object(_)) => out.push(OBJECT),
    }
}

/// The entry of `document` in an index on `fields`.
pub fn entry(fields: &[Path], document: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * fields.len());
    for field in fields {
        encode(field.get(document), &mut out);
    }
    out
}

/// The first byte string greater than every string that starts with `prefix`; `None`
/// when there is none (the range runs to the end).
fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// Entries from `low` (included) to `high` (excluded; `None`: to the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The first entry in the range.
    pub low: Vec<u8>,
    /// The first entry past it.
    pub high: Option<Vec<u8>>,
}

impl Range {
    fn prefix(prefix: Vec<u8>) -> Self {
        Self {
            high: after_prefix(&prefix),
            low: prefix,
        }
    }

    /// Whether `entry` lies in the range.
    pub fn contains(&self, entry: &[u8]) -> bool {
        entry >= self.low.as_slice() && self.high.as_deref().is_none_or(|high| entry < high)
    }
}

/// One range of one index that a plan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRange {
    /// Which of the indexes offered to [`Query::plan`].
    pub index: usize,
    /// The entries to read.
    pub range: Range,
    /// Every entry of the range is the same (equalities on all the index's fields): its
    /// documents come in key order.
    pub one_entry: bool,
}

/// How a query reads a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every document of the collection, in key order.
    Scan,
    /// The documents under these index ranges (none: the query matches nothing). A
    /// document under more than one is read from the first only: see [`Plan::seen_before`].
    /// With `exact`, every document under them matches and none is under two: a reader
    /// need not check them against the query.
    Ranges {
        /// The ranges, read in order.
        ranges: Vec<IndexRange>,
        /// Whether the ranges hold exactly the matching documents.
        exact: bool,
    },
}

impl Plan {
    /// Whether `document`, met while reading range `at`, lies in an earlier range of the
    /// plan too (so it was offered already and must not be offered again).
    pub fn seen_before(&self, indexes: &[Vec<Path>], at: usize, document: &Value) -> bool {
        let Plan::Ranges { ranges, .. } = self else {
            return false;
        };
        ranges[..at.min(ranges.len())].iter().any(|earlier| {
            indexes
                .get(earlier.index)
                .is_some_and(|fields| earlier.range.contains(&entry(fields, document)))
        })
    }
}

/// A candidate plan: its ranges, how narrow it is likely to be, and whether its ranges
/// hold exactly the documents that match.
struct Candidate {
    ranges: Vec<IndexRange>,
    score: usize,
    exact: bool,
}

/// The conditions an `$and` places on each path (its direct field conditions, nested
/// `$and`s included).
fn field_conditions<'s>(parts: &'s [Selector], out: &mut Vec<(&'s Path, &'s Condition)>) {
    for part in parts {
        match part {
            Selector::Field(path, conditions) => {
                out.extend(conditions.iter().map(|c| (path, c)));
            }
            Selector::And(inner) => field_conditions(inner, out),
            Selector::Or(_) | Selector::Not(_) => {}
        }
    }
}

/// Whether comparing to `value` and comparing encodings agree exactly: true of every
/// scalar but a number as large as 2^53, whose double other integers share.
fn exact(value: &Value) -> bool {
    const LIMIT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n.as_f64().is_some_and(|f| f.abs() < LIMIT),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Whether `parts` are conditions on fields only (nested `$and`s included).
fn only_field_conditions(parts: &[Selector]) -> bool {
    parts.iter().all(|part| match part {
        Selector::Field(..) => true,
        Selector::And(inner) => only_field_conditions(inner),
        Selector::Or(_) | Selector::Not(_) => false,
    })
}

/// The ranges of index `index` (on `fields`) that hold every document meeting
/// `conditions`, if the index narrows anything.
fn index_candidate(
    index: usize,
    fields: &[Path],
    conditions: &[(&Path, &Condition)],
) -> Option<Candidate> {
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut score = 0;
    // Conditions the ranges express exactly; when every one is, the ranges hold exactly
    // the documents that match.
    let mut expressed = 0;
    let mut last: Option<Vec<Range>> = None;
    let mut equal_fields = 0;
    for field in fields {
        let here: Vec<&Condition> = conditions
            .iter()
            .filter(|(p, _)| *p == field)
            .map(|(_, c)| *c)
            .collect();
        let equal = here.iter().find_map(|c| match c {
            Condition::Eq(v) => Some(vec![v]),
            Condition::In(vs) if prefixes.len() * vs.len() <= MAX_RANGES => {
                Some(vs.iter().collect())
            }
            _ => None,
        });
        if let Some(values) = equal {
            if values.iter().all(|v| exact(v)) {
                expressed += 1;
            }
            prefixes = prefixes
                .iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut next = p.clone();
                        encode(Some(v), &mut next);
                        next
                    })
                })
                .collect();
            // Equal values (2 and 2.0) make one range, so no document is read twice.
            prefixes.sort();
            prefixes.dedup();
            score += 2;
            equal_fields += 1;
            continue;
        }
        let ranged: Vec<&Condition> = here
            .iter()
            .copied()
            .filter(|c| {
                matches!(
                    c,
                    Condition::Gt(_)
                        | Condition::Gte(_)
                        | Condition::Lt(_)
                        | Condition::Lte(_)
                        | Condition::Exists(_)
                )
            })
            .collect();
        if ranged.is_empty() {
            break;
        }
        expressed += ranged
            .iter()
            .filter(|c| match c {
                Condition::Gt(v) | Condition::Gte(v) | Condition::Lt(v) | Condition::Lte(v) => {
                    exact(v)
                }
                _ => true,
            })
            .count();
        let ranges: Vec<Range> = prefixes
            .iter()
            .map(|prefix| {
                let with = |v: Option<&Value>| {
                    let mut bytes = prefix.clone();
                    encode(v, &mut bytes);
                    bytes
                };
                let mut lows = Vec::new();
                let mut highs = Vec::new();
                for condition in &ranged {
                    match condition {
                        // Past every value equal to v: exact when equal values share
                        // v's encoding and no other does.
                        Condition::Gt(v) if exact(v) => lows.push(after_prefix(&with(Some(v)))),
                        Condition::Gte(v) | Condition::Gt(v) => lows.push(Some(with(Some(v)))),
                        Condition::Lt(v) if exact(v) => {
                            lows.push(Some(with(Some(&Value::Null))));
                            highs.push(Some(with(Some(v))));
                        }
                        Condition::Lte(v) | Condition::Lt(v) => {
                            lows.push(Some(with(Some(&Value::Null))));
                            highs.push(after_prefix(&with(Some(v))));
                        }
                        Condition::Exists(true) => lows.push(Some(with(Some(&Value::Null)))),
                        Condition::Exists(false) => {
                            lows.push(Some(with(None)));
                            highs.push(Some(with(Some(&Value::Null))));
                        }
                        _ => {}
                    }
                }
                let mut range = Range::prefix(prefix.clone());
                for low in lows {
                    match low {
                        Some(low) if low > range.low => range.low = low,
                        Some(_) => {}
                        // Nothing sorts past it: the range is empty.
                        None => range.high = Some(range.low.clone()),
                    }
                }
                for high in highs.into_iter().flatten() {
                    if range.high.as_ref().is_none_or(|h| &high < h) {
                        range.high = Some(high);
                    }
                }
                range
            })
            .collect();
        score += 1;
        last = Some(ranges);
        break;
    }
    if score == 0 {
        return None;
    }
    let one_entry = last.is_none() && equal_fields == fields.len();
    let ranges = last.unwrap_or_else(|| prefixes.into_iter().map(Range::prefix).collect());
    Some(Candidate {
        exact: expressed == conditions.len(),
        ranges: ranges
            .into_iter()
            .filter(|r| r.high.as_ref().is_none_or(|h| h > &r.low))
            .map(|range| IndexRange {
                index,
                range,
                one_entry,
            })
            .collect(),
        score,
    })
}

/// The narrowest plan for `selector`, if some index narrows it.
fn plan_selector(selector: &Selector, indexes: &[Vec<Path>]) -> Option<Candidate> {
    match selector {
        Selector::Or(branches) => {
            let mut ranges = Vec::new();
            let mut score = usize::MAX;
            for branch in branches {
                let planned = plan_selector(branch, indexes)?;
                score = score.min(planned.score);
                ranges.extend(planned.ranges);
                if ranges.len() > MAX_RANGES {
                    return None;
                }
            }
            Some(Candidate {
                ranges,
                score: if score == usize::MAX { 1 } else { score },
                exact: false,
            })
        }
        Selector::Not(_) => None,
        Selector::Field(..) => plan_selector(&Selector::And(vec![selector.clone()]), indexes),
        Selector::And(parts) => {
            let mut conditions = Vec::new();
            field_conditions(parts, &mut conditions);
            let only_fields = only_field_conditions(parts);
            let by_fields = indexes.iter().enumerate().filter_map(|(i, fields)| {
                index_candidate(i, fields, &conditions).map(|mut c| {
                    c.exact &= only_fields;
                    c
                })
            });
            let by_branches = parts.iter().filter_map(|part| match part {
                Selector::Or(_) | Selector::And(_) => plan_selector(part, indexes).map(|mut c| {
                    // The other parts still have to be checked.
                    c.exact &= parts.len() == 1;
                    c
                }),
                _ => None,
            });
            // The most constrained; among equals, the fewest ranges, then the first offered.
            by_fields.chain(by_branches).reduce(|best, next| {
                if (next.score, std::cmp::Reverse(next.ranges.len()))
                    > (best.score, std::cmp::Reverse(best.ranges.len()))
                {
                    next
                } else {
                    best
                }
            })
        }
    }
}

impl Query {
    /// How to read this query's results given the indexes of the collection (each the
    /// fields it holds, in order): the ranges of the index that narrows it most, or a scan.
    pub fn plan(&self, indexes: &[Vec<Path>]) -> Plan {
        match plan_selector(&self.selector, indexes) {
            Some(candidate) => Plan::Ranges {
                ranges: candidate.ranges,
                exact: candidate.exact,
            },
            None => Plan::Scan,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order;
    use proptest::prelude::*;
    use serde_json::json;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-50i64..50).prop_map(Value::from),
            (-5.0f64..5.0).prop_map(|f| json!(f)),
            Just(json!(i64::MAX)),
            Just(json!(u64::MAX)),
            "[a-c\u{0}é]{0,4}".prop_map(Value::from),
            Just(json!([1, 2])),
            Just(json!({"a": 1})),
        ]
    }

    fn document() -> impl Strategy<Value = Value> {
        (
            proptest::option::of(scalar()),
            proptest::option::of(scalar()),
        )
            .prop_map(|(a, b)| {
                let mut doc = serde_json::Map::new();
                if let Some(a) = a {
                    doc.insert("a".into(), a);
                }
                if let Some(b) = b {
                    doc.insert("n".into(), json!({ "b": b }));
                }
                Value::Object(doc)
            })
    }

    fn paths(fields: &[&str]) -> Vec<Path> {
        fields.iter().map(|f| Path::parse(f).unwrap()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Bytes order as values do: an entry never sorts against the documented order.
        #[test]
        fn entries_order_as_their_values(x in proptest::option::of(scalar()), y in proptest::option::of(scalar())) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            encode(x.as_ref(), &mut a);
            encode(y.as_ref(), &mut b);
            let values = order::compare(x.as_ref(), y.as_ref());
            if values.is_ne() {
                prop_assert!(a.cmp(&b) == values || a == b, "{x:?} {y:?} {a:?} {b:?}");
            } else {
                prop_assert_eq!(a, b);
            }
        }

        /// Whatever the query and the indexes, the plan's ranges hold every document the
        /// query matches.
        #[test]
        fn a_plan_never_misses_a_match(
            docs in proptest::collection::vec(document(), 1..30),
            (op_a, va) in (0usize..9, scalar()),
            (op_b, vb) in (0usize..9, scalar()),
            shape in 0usize..4,
            (pick_a, pick_b) in (any::<proptest::sample::Index>(), any::<proptest::sample::Index>()),
            borrow in any::<bool>(),
        ) {
            let op = |op: usize, v: &Value| match op {
                0 => json!({"$eq": v}),
                1 => json!({"$gt": v}),
                2 => json!({"$gte": v}),
                3 => json!({"$lt": v}),
                4 => json!({"$lte": v}),
                5 => json!({"$in": [v, 3]}),
                6 => json!({"$exists": true}),
                7 => json!({"$exists": false}),
                _ => json!({"$ne": v}),
            };
            // Operands that documents hold, so equal values meet range bounds.
            let (va, vb) = if borrow {
                let a = docs[pick_a.index(docs.len())].get("a").cloned().unwrap_or(va);
                let b = docs[pick_b.index(docs.len())].pointer("/n/b").cloned().unwrap_or(vb);
                (a, b)
            } else {
                (va, vb)
            };
            let selector = match shape {
                0 => json!({"$or": [{"a": op(op_a, &va)}, {"n.b": op(op_b, &vb)}]}),
                1 => json!({"a": op(op_a, &va), "n.b": op(op_b, &vb)}),
                2 => json!({"a": op(op_a, &va)}),
                _ => json!({"n.b": op(op_b, &vb)}),
            };
            let query = Query::parse(&selector.to_string(), &[], 10).unwrap();
            let indexes = vec![paths(&["a", "n.b"]), paths(&["n.b"])];
            if let Plan::Ranges { ranges, exact } = query.plan(&indexes) {
                for doc in &docs {
                    let under = ranges
                        .iter()
                        .filter(|r| r.range.contains(&entry(&indexes[r.index], doc)))
                        .count();
                    if query.matches(doc) {
                        prop_assert!(under > 0, "{selector} misses {doc} with {ranges:?}");
                    }
                    for r in ranges.iter().filter(|r| r.one_entry) {
                        let e = entry(&indexes[r.index], doc);
                        if r.range.contains(&e) {
                            prop_assert_eq!(&e, &r.range.low, "{} is in a one-entry range under another entry", doc);
                        }
                    }
                    if exact {
                        prop_assert_eq!(under, usize::from(query.matches(doc)), "{} is exact, yet {} is under {} ranges", selector, doc, under);
                    }
                }
            }
        }
    }

    #[test]
    fn the_planner_picks_the_index_that_narrows_most_and_scans_otherwise() {
        let indexes = vec![paths(&["status"]), paths(&["shop", "total"])];
        let plan = |s: &str| Query::parse(s, &[], 10).unwrap().plan(&indexes);
        let Plan::Ranges { ranges: r, exact } =
            plan(r#"{"shop": "s1", "total": {"$gt": 5}, "status": "open"}"#)
        else {
            panic!("an index fits")
        };
        assert_eq!((r.len(), r[0].index, exact), (1, 1, false));
        let Plan::Ranges { ranges: r, exact } = plan(r#"{"shop": "s1", "total": {"$gt": 5}}"#)
        else {
            panic!("an index fits")
        };
        assert_eq!((r.len(), exact), (1, true));
        let Plan::Ranges { ranges: r, exact } =
            plan(r#"{"status": {"$in": ["a", "b", "c", "a"]}}"#)
        else {
            panic!("an index fits")
        };
        assert_eq!((r.len(), exact), (3, true));
        let Plan::Ranges { ranges: r, exact } =
            plan(r#"{"$or": [{"status": "a"}, {"shop": "s"}]}"#)
        else {
            panic!("both branches are served")
        };
        assert!(!exact);
        assert_eq!(r.iter().map(|r| r.index).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(
            plan(r#"{"$or": [{"status": "a"}, {"other": 1}]}"#),
            Plan::Scan
        );
        assert_eq!(plan(r#"{"total": 3}"#), Plan::Scan);
        assert_eq!(plan(r#"{"status": {"$ne": "a"}}"#), Plan::Scan);
        assert_eq!(
            plan(r#"{"status": {"$in": []}}"#),
            Plan::Ranges {
                ranges: vec![],
                exact: true
            }
        );
        assert!(matches!(
            plan(r#"{"status": {"$gt": 9007199254740993}}"#),
            Plan::Ranges { exact: false, .. }
        ));
    }

    #[test]
    fn a_document_under_two_ranges_of_a_plan_is_read_once() {
        let indexes = vec![paths(&["status"]), paths(&["shop"])];
        let query = Query::parse(r#"{"$or": [{"status": "a"}, {"shop": "s"}]}"#, &[], 10).unwrap();
        let plan = query.plan(&indexes);
        let both = json!({"status": "a", "shop": "s"});
        assert!(!plan.seen_before(&indexes, 0, &both));
        assert!(plan.seen_before(&indexes, 1, &both));
        assert!(!plan.seen_before(&indexes, 1, &json!({"shop": "s"})));
    }
}

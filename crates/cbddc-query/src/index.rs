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
    /// How many leading fields of the index the range pins to one value each (the
    /// query's equalities), and the length of their encoding: every entry of the range
    /// starts with `range.low[..prefix]`.
    pub pinned: usize,
    /// See `pinned`.
    pub prefix: usize,
    /// Read in its query's sort order: the entries past the pinned fields are the one
    /// sort field and nothing more, so the documents of an entry come by key.
    pub sort_is_entry: bool,
    /// Read in its query's sort order, which is descending: from the highest entry down.
    pub descending: bool,
}

/// Where a read of a range in its query's sort order starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedStart {
    /// The first entry that may be read.
    pub low: Vec<u8>,
    /// The first entry past those that may be read (`None`: to the end).
    pub high: Option<Vec<u8>>,
    /// With an entry and key: read only past them (every document of that entry up to
    /// that key is at or before the cursor's position).
    pub after: Option<(Vec<u8>, String)>,
    /// Descending, read this first: the rest of the cursor's entry, upwards.
    pub within: Option<EntryRest>,
}

/// The documents of one entry past a key, read upwards: those sharing a descending
/// cursor's value that come after it (equal values sort by rising key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRest {
    /// The entry.
    pub entry: Vec<u8>,
    /// The first entry past it.
    pub end: Vec<u8>,
    /// The cursor's key: read the documents after it.
    pub after_key: String,
}

/// What a read of a range in its query's sort order does once its page is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortedStop {
    /// Stop: every document not read yet sorts after the page's.
    Now,
    /// Read on (upwards) up to this entry (excluded): documents before it may still
    /// belong to the page, none after it does.
    Before(Vec<u8>),
    /// Read on (downwards, `descending`) down to this entry (included).
    From(Vec<u8>),
    /// Read on to the end of the range (no entry bounds the rest).
    ToTheEnd,
}

impl IndexRange {
    /// Where a range read in its query's sort order (see [`Plan::Ranges`]'s
    /// `in_sort_order`) starts: after `position`, or at its first entry in the read's
    /// direction.
    ///
    /// Past the entries whose first sorted field encodes the position's first value, in
    /// the sort's direction, that field encodes beyond it, so its value is beyond it
    /// (encodings order as values do): those documents come before the position. Only
    /// the first sorted field counts: two values can share an encoding (arrays, integers
    /// past 2^53), and then the next field's bytes decide the entry's place while the
    /// first field's values decide the document's. When the entry is the one sorted field
    /// (`sort_is_entry`) and its encoding fixes the value, the documents of that entry
    /// share the position's value and follow each other by key: read upwards, the read
    /// starts past its key; read downwards, it first reads the rest of that entry
    /// upwards (`within`), then the entries below.
    pub fn start(&self, position: Option<&crate::Position>) -> SortedStart {
        let whole = SortedStart {
            low: self.range.low.clone(),
            high: self.range.high.clone(),
            after: None,
            within: None,
        };
        let Some(position) = position else {
            return whole;
        };
        let mut at = self.range.low[..self.prefix.min(self.range.low.len())].to_vec();
        let first = position.values.first().and_then(Option::as_ref);
        encode(first, &mut at);
        let in_range = at >= self.range.low && whole.high.as_ref().is_none_or(|high| &at < high);
        if self.descending && self.sort_is_entry && first.is_none_or(exact) && in_range {
            // The cursor's value is that entry's alone: after its rest, every lower entry
            // holds lower values, and every higher one came before.
            let mut end = at.clone();
            end.push(0);
            return SortedStart {
                high: Some(at.clone()),
                within: Some(EntryRest {
                    entry: at,
                    end,
                    after_key: position.key.clone(),
                }),
                ..whole
            };
        }
        if self.descending {
            return match after_prefix(&at) {
                Some(top) if whole.high.as_ref().is_none_or(|high| &top < high) => SortedStart {
                    high: Some(top),
                    ..whole
                },
                _ => whole,
            };
        }
        if self.sort_is_entry && first.is_none_or(exact) && in_range {
            return SortedStart {
                after: Some((at.clone(), position.key.clone())),
                low: at,
                ..whole
            };
        }
        SortedStart {
            low: at.max(whole.low.clone()),
            ..whole
        }
    }

    /// What a read in sort order does once it holds a full page, the last document read
    /// under `entry`.
    ///
    /// Every entry beyond the ones whose first sorted field encodes as `entry`'s, in the
    /// read's direction, holds a value beyond it there, so its documents sort after the
    /// page's. When the entry is the one sorted field (`sort_is_entry`), read upwards,
    /// and fixes its value, the rest of the entry shares that value and comes by key,
    /// after the page's too: the read stops now. (Read downwards, the rest of an entry
    /// comes by falling key, while the sort takes equal values by rising key.)
    pub fn stop_after(&self, entry: &[u8]) -> SortedStop {
        let start = self.prefix.min(entry.len());
        let end = start + encoded_len(&entry[start..]);
        if self.descending {
            return SortedStop::From(entry[..end].to_vec());
        }
        if self.sort_is_entry && fixes_its_value(&entry[start..end]) {
            return SortedStop::Now;
        }
        match after_prefix(&entry[..end]) {
            Some(high) => SortedStop::Before(high),
            None => SortedStop::ToTheEnd,
        }
    }
}

/// Whether one field's encoding stands for values that all compare equal: every type
/// but a number as large as 2^53 (which other integers share), an array or an object.
fn fixes_its_value(encoding: &[u8]) -> bool {
    match encoding.first() {
        Some(&NUMBER) => {
            let Ok(bytes) = <[u8; 8]>::try_from(&encoding[1..]) else {
                return false;
            };
            let ordered = u64::from_be_bytes(bytes);
            let bits = if ordered >> 63 == 1 {
                ordered & !(1 << 63)
            } else {
                !ordered
            };
            exact(&Value::from(f64::from_bits(bits)))
        }
        Some(&ARRAY) | Some(&OBJECT) | None => false,
        Some(_) => true,
    }
}

/// The length of the first field's encoding at the start of `bytes` (all of them if
/// they are not one).
fn encoded_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(&NUMBER) => 9.min(bytes.len()),
        Some(&STRING) => {
            let mut i = 1;
            while i + 1 < bytes.len() {
                match (bytes[i], bytes[i + 1]) {
                    (0, 0) => return i + 2,
                    (0, _) => i += 2,
                    _ => i += 1,
                }
            }
            bytes.len()
        }
        Some(_) => 1,
        None => 0,
    }
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
        /// One range whose entries order as the query sorts: the index's fields after the
        /// pinned ones start with the sort's paths, all one way (the range's
        /// `descending`). Read in that direction, a reader holding more than a page may
        /// stop as [`IndexRange::stop_after`] says, and a page starts where
        /// [`IndexRange::start`] says; the page still sorts what it read.
        in_sort_order: bool,
    },
}

impl Plan {
    /// Whether the plan reads its one range in the query's sort order (see
    /// [`Plan::Ranges`]).
    pub fn in_sort_order(&self) -> bool {
        matches!(
            self,
            Plan::Ranges {
                in_sort_order: true,
                ..
            }
        )
    }

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
    let lengths: Vec<usize> = prefixes.iter().map(Vec::len).collect();
    let ranges = last.unwrap_or_else(|| prefixes.into_iter().map(Range::prefix).collect());
    Some(Candidate {
        exact: expressed == conditions.len(),
        ranges: ranges
            .into_iter()
            .zip(lengths)
            .filter(|(r, _)| r.high.as_ref().is_none_or(|h| h > &r.low))
            .map(|(range, prefix)| IndexRange {
                index,
                range,
                one_entry,
                pinned: equal_fields,
                prefix,
                sort_is_entry: false,
                descending: false,
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
    ///
    /// A query no index narrows, sorted ascending by exactly an index's fields, reads that
    /// whole index in its order: a page then costs about its limit, not the collection.
    pub fn plan(&self, indexes: &[Vec<Path>]) -> Plan {
        match plan_selector(&self.selector, indexes) {
            Some(mut candidate) => {
                let in_sort_order = match candidate.ranges.as_mut_slice() {
                    [only] => self.read_in_sort_order(only, indexes),
                    _ => false,
                };
                Plan::Ranges {
                    ranges: candidate.ranges,
                    exact: candidate.exact,
                    in_sort_order,
                }
            }
            None => {
                // The shortest index the sort leads: the smallest entries to read.
                let leading = indexes
                    .iter()
                    .enumerate()
                    .filter(|(_, fields)| self.sort_direction(fields).is_some())
                    .min_by_key(|(_, fields)| fields.len());
                match leading {
                    Some((index, _)) => {
                        let mut whole = IndexRange {
                            index,
                            range: Range {
                                low: Vec::new(),
                                high: None,
                            },
                            one_entry: false,
                            pinned: 0,
                            prefix: 0,
                            sort_is_entry: false,
                            descending: false,
                        };
                        let in_sort_order = self.read_in_sort_order(&mut whole, indexes);
                        Plan::Ranges {
                            ranges: vec![whole],
                            exact: false,
                            in_sort_order,
                        }
                    }
                    None => Plan::Scan,
                }
            }
        }
    }

    /// The fields of the index that would serve this query, to advise one when none
    /// does: the paths it tests for equality, then those it tests with `$in`, then its
    /// sort paths when they go one way (read in their order, a page costs about its
    /// limit), else one path it bounds. `None` when it constrains or sorts no path an
    /// index could hold (an `$or` or a `$not` alone would need an index per branch).
    pub fn advise(&self) -> Option<Vec<Path>> {
        let mut conditions = Vec::new();
        field_conditions(std::slice::from_ref(&self.selector), &mut conditions);
        let mut fields: Vec<Path> = Vec::new();
        let mut add = |path: &Path| {
            let indexable = !path.dotted().starts_with('$');
            if indexable && !fields.contains(path) && fields.len() < MAX_INDEX_FIELDS {
                fields.push(path.clone());
            }
        };
        for (path, condition) in &conditions {
            if matches!(condition, Condition::Eq(_)) {
                add(path);
            }
        }
        for (path, condition) in &conditions {
            if matches!(condition, Condition::In(_)) {
                add(path);
            }
        }
        let one_way = self
            .sort
            .first()
            .is_some_and(|first| self.sort.iter().all(|s| s.descending == first.descending));
        if one_way {
            for sort in &self.sort {
                add(&sort.path);
            }
        } else if let Some((path, _)) = conditions.iter().find(|(_, condition)| {
            matches!(
                condition,
                Condition::Gt(_)
                    | Condition::Gte(_)
                    | Condition::Lt(_)
                    | Condition::Lte(_)
                    | Condition::Exists(_)
            )
        }) {
            add(path);
        }
        (!fields.is_empty()).then_some(fields)
    }

    /// Whether `range` (the only one of a plan) can be read in this query's sort order,
    /// noting in it whether its entries are the one sort field.
    fn read_in_sort_order(&self, range: &mut IndexRange, indexes: &[Vec<Path>]) -> bool {
        let Some(fields) = indexes.get(range.index) else {
            return false;
        };
        let after_pinned = &fields[range.pinned.min(fields.len())..];
        let Some(descending) = self.sort_direction(after_pinned) else {
            return false;
        };
        range.descending = descending;
        range.sort_is_entry = self.sort.len() == 1 && after_pinned.len() == 1;
        true
    }

    /// Whether this query sorts by the first of `fields`, in order, all one way (an entry
    /// of them then orders as the sort does, the fields past the sort's after it), and
    /// whether that way is descending.
    fn sort_direction(&self, fields: &[Path]) -> Option<bool> {
        let descending = self.sort.first()?.descending;
        let fits = self.sort.len() <= fields.len()
            && self
                .sort
                .iter()
                .zip(fields)
                .all(|(sort, field)| sort.descending == descending && &sort.path == field);
        fits.then_some(descending)
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
            Just(json!([0])),
            Just(json!({"a": 1})),
            Just(json!({"b": 0})),
            // Two integers that share a double, so an entry holds both.
            Just(json!(9_007_199_254_740_992u64)),
            Just(json!(9_007_199_254_740_993u64)),
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
            if let Plan::Ranges { ranges, exact, .. } = query.plan(&indexes) {
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

    /// A page as the node reads a plan in sort order: from where the cursor resumes, in
    /// (entry, key) order, stopping once the page is full and the entry it is in is read.
    fn page_in_sort_order(
        query: &Query,
        range: &IndexRange,
        fields: &[Path],
        docs: &[Value],
        after: Option<crate::Position>,
    ) -> (Vec<usize>, Option<String>) {
        let mut rows: Vec<(Vec<u8>, String, usize)> = docs
            .iter()
            .enumerate()
            .map(|(i, doc)| (entry(fields, doc), format!("k{i:03}"), i))
            .filter(|(e, _, _)| range.range.contains(e))
            .collect();
        rows.sort();
        if range.descending {
            rows.reverse();
        }
        let SortedStart {
            mut low,
            mut high,
            after: after_entry,
            within,
        } = range.start(after.as_ref());
        let mut page = crate::Page::new(query, after);
        if let Some(rest) = &within {
            let mut upwards = rows.clone();
            upwards.sort();
            for (e, key, i) in upwards {
                if e >= rest.entry && e < rest.end && (&e, &key) > (&rest.entry, &rest.after_key) {
                    page.offer(&key, &docs[i], i);
                    if page.is_full() {
                        return page.finish();
                    }
                }
            }
        }
        for (e, key, i) in rows {
            let past = match &after_entry {
                Some(at) if range.descending => (&e, &key) < (&at.0, &at.1),
                Some(at) => (&e, &key) > (&at.0, &at.1),
                None => true,
            };
            if !past || e < low || high.as_ref().is_some_and(|h| &e >= h) {
                continue;
            }
            page.offer(&key, &docs[i], i);
            if page.is_full() {
                match range.stop_after(&e) {
                    SortedStop::Now => break,
                    SortedStop::Before(end) => {
                        if high.as_ref().is_none_or(|h| &end < h) {
                            high = Some(end);
                        }
                    }
                    SortedStop::From(start) => low = low.max(start),
                    SortedStop::ToTheEnd => {}
                }
            }
        }
        page.finish()
    }

    /// A page as a scan gets it: every document offered.
    fn page_of_all(
        query: &Query,
        docs: &[Value],
        after: Option<crate::Position>,
    ) -> (Vec<usize>, Option<String>) {
        let mut page = crate::Page::new(query, after);
        for (i, doc) in docs.iter().enumerate() {
            page.offer(&format!("k{i:03}"), doc, i);
        }
        page.finish()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Paging through a plan read in sort order, stopping early, gives exactly the
        /// pages of sorting every match, cursor after cursor.
        #[test]
        fn pages_read_in_sort_order_are_the_pages_of_a_full_sort(
            docs in proptest::collection::vec(document(), 1..40),
            (op, v) in (0usize..5, scalar()),
            shape in 0usize..4,
            sort in 0usize..3,
            limit in 1usize..5,
            borrow in any::<proptest::sample::Index>(),
            pin_many in any::<bool>(),
            flip in any::<bool>(),
            descending in any::<bool>(),
        ) {
            let v = docs[borrow.index(docs.len())].get("a").cloned().unwrap_or(v);
            // Many documents under one value of `a`, so an equality on it pins pages of them.
            let mut docs = docs;
            if pin_many {
                for doc in docs.iter_mut().step_by(2) {
                    doc["a"] = v.clone();
                }
            }
            let condition = match op {
                0 => json!({"$eq": v}),
                1 => json!({"$gt": v}),
                2 => json!({"$gte": v}),
                3 => json!({"$lt": v}),
                _ => json!({"$lte": v}),
            };
            let selector = match shape {
                0 => json!({}),
                1 => json!({"a": condition}),
                2 => json!({"n.b": condition}),
                _ => json!({"a": v}),
            };
            let sort: Vec<crate::Sort> = match sort {
                0 => vec!["a"],
                1 => vec!["n.b"],
                _ => vec!["a", "n.b"],
            }
            .into_iter()
            .map(|s| crate::Sort::parse(&format!("{s}:{}", if descending { "desc" } else { "asc" })).unwrap())
            .collect();
            let query = Query::parse(&selector.to_string(), &sort, limit).unwrap();
            // The two-field index first or not: an equality on `a` pins it, and a range on
            // `a` sorted by `a` reads it (its entries longer than the sort) or `a`'s.
            let mut indexes = vec![paths(&["a", "n.b"]), paths(&["a"]), paths(&["n.b"])];
            if flip {
                indexes.swap(0, 1);
            }
            let Plan::Ranges { ranges, in_sort_order: true, .. } = query.plan(&indexes) else {
                return Ok(());
            };
            prop_assert_eq!(ranges.len(), 1);
            let range = &ranges[0];
            let mut after = None;
            for _ in 0..=docs.len() {
                let ours = page_in_sort_order(&query, range, &indexes[range.index], &docs, after.clone());
                let all = page_of_all(&query, &docs, after.clone());
                prop_assert_eq!(&ours, &all, "{} sorted by {:?}, after {:?}", selector, sort, after);
                match ours.1 {
                    Some(cursor) => after = Some(query.resume(&cursor).unwrap()),
                    None => break,
                }
            }
        }
    }

    #[test]
    fn a_query_sorted_by_an_index_reads_it_in_order() {
        let indexes = vec![paths(&["status"]), paths(&["shop", "total"])];
        let plan = |s: &str, sort: &[&str]| {
            let sort: Vec<crate::Sort> = sort
                .iter()
                .map(|s| crate::Sort::parse(s).unwrap())
                .collect();
            Query::parse(s, &sort, 10).unwrap().plan(&indexes)
        };
        let sorted = |p: Plan| {
            matches!(
                p,
                Plan::Ranges {
                    in_sort_order: true,
                    ..
                }
            )
        };
        assert!(sorted(plan(r#"{"shop": "s1"}"#, &["total"])));
        assert!(sorted(plan(
            r#"{"shop": "s1", "total": {"$gt": 3}}"#,
            &["total"]
        )));
        assert!(sorted(plan(r#"{"other": 1}"#, &["status"])));
        assert!(sorted(plan(r#"{}"#, &["shop", "total"])));
        assert!(sorted(plan(r#"{"shop": "s1"}"#, &["total:desc"])));
        assert!(!sorted(plan(r#"{}"#, &["shop:desc", "total"])));
        assert!(!sorted(plan(
            r#"{"shop": {"$in": ["a", "b"]}}"#,
            &["total"]
        )));
        assert!(!sorted(plan(r#"{"shop": "s1"}"#, &["status"])));
        assert!(sorted(plan(r#"{}"#, &["shop"])));
        assert!(sorted(plan(r#"{"shop": {"$gt": "a"}}"#, &["shop"])));
        assert_eq!(plan(r#"{}"#, &["total"]), Plan::Scan);
        let entry_is_sort = |p: Plan| match p {
            Plan::Ranges { ranges, .. } => ranges[0].sort_is_entry,
            Plan::Scan => panic!("an index fits"),
        };
        assert!(entry_is_sort(plan(r#"{"shop": "s1"}"#, &["total"])));
        assert!(entry_is_sort(plan(r#"{"other": 1}"#, &["status"])));
        assert!(!entry_is_sort(plan(r#"{}"#, &["shop"])));
        assert!(!entry_is_sort(plan(r#"{}"#, &["shop", "total"])));
    }

    #[test]
    fn the_index_advised_serves_the_query_it_was_advised_for() {
        let advised = |s: &str, sort: &[&str]| {
            let sort: Vec<crate::Sort> = sort
                .iter()
                .map(|s| crate::Sort::parse(s).unwrap())
                .collect();
            let query = Query::parse(s, &sort, 10).unwrap();
            let fields = query.advise();
            // Declared, the advised index serves the query (in its sort's order, if any).
            if let Some(fields) = &fields {
                match query.plan(std::slice::from_ref(fields)) {
                    Plan::Ranges { in_sort_order, .. } => {
                        assert!(in_sort_order || sort.is_empty() || sort.len() > 1, "{s}")
                    }
                    Plan::Scan => panic!("{s}: the advised index does not serve it"),
                }
            }
            fields.map(|f| f.iter().map(Path::dotted).collect::<Vec<_>>())
        };
        let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            advised(r#"{"shop": "s1"}"#, &["total"]),
            names(&["shop", "total"])
        );
        assert_eq!(
            advised(
                r#"{"shop": "s1", "n": {"$in": [1, 2]}, "total": {"$gt": 3}}"#,
                &[]
            ),
            names(&["shop", "n", "total"])
        );
        assert_eq!(
            advised(r#"{"total": {"$gt": 3}}"#, &["total:desc"]),
            names(&["total"])
        );
        assert_eq!(advised(r#"{}"#, &["a", "b"]), names(&["a", "b"]));
        assert_eq!(advised(r#"{"a": {"$ne": 1}}"#, &[]), None);
        assert_eq!(advised(r#"{"$or": [{"a": 1}, {"b": 2}]}"#, &[]), None);
        assert_eq!(
            advised(r#"{"a": 1, "b": {"$lt": 2}}"#, &["c", "d:desc"]),
            names(&["a", "b"])
        );
    }

    #[test]
    fn an_encoding_fixes_its_value_unless_values_share_it() {
        let encoded = |v: &Value| {
            let mut e = Vec::new();
            encode(Some(v), &mut e);
            e
        };
        for v in [
            json!(0),
            json!(-3),
            json!(1.5),
            json!(-2.5e10),
            json!("x"),
            json!(null),
            json!(true),
        ] {
            assert!(fixes_its_value(&encoded(&v)), "{v}");
        }
        for v in [
            json!(9_007_199_254_740_993u64),
            json!(-1e300),
            json!([1]),
            json!({"a": 1}),
        ] {
            assert!(!fixes_its_value(&encoded(&v)), "{v}");
        }
        assert!(fixes_its_value(&[MISSING]));
    }

    #[test]
    fn the_planner_picks_the_index_that_narrows_most_and_scans_otherwise() {
        let indexes = vec![paths(&["status"]), paths(&["shop", "total"])];
        let plan = |s: &str| Query::parse(s, &[], 10).unwrap().plan(&indexes);
        let Plan::Ranges {
            ranges: r, exact, ..
        } = plan(r#"{"shop": "s1", "total": {"$gt": 5}, "status": "open"}"#)
        else {
            panic!("an index fits")
        };
        assert_eq!((r.len(), r[0].index, exact), (1, 1, false));
        let Plan::Ranges {
            ranges: r, exact, ..
        } = plan(r#"{"shop": "s1", "total": {"$gt": 5}}"#)
        else {
            panic!("an index fits")
        };
        assert_eq!((r.len(), exact), (1, true));
        let Plan::Ranges {
            ranges: r, exact, ..
        } = plan(r#"{"status": {"$in": ["a", "b", "c", "a"]}}"#)
        else {
            panic!("an index fits")
        };
        assert_eq!((r.len(), exact), (3, true));
        let Plan::Ranges {
            ranges: r, exact, ..
        } = plan(r#"{"$or": [{"status": "a"}, {"shop": "s"}]}"#)
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
                exact: true,
                in_sort_order: false,
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

//! Queries over JSON documents: a selector in JSON (as CouchDB's Mango selectors are), a
//! sort, a limit, and cursors that page stably while documents change.
//!
//! **Selectors.** An object whose fields are conditions, all of which must hold:
//! - `{"status": "open"}`: the field at a dotted path (`"addr.city"`) equals the value
//!   (an array or object equals only an equal array or object);
//! - `{"n": {"$gt": 3, "$lte": 9}}`: operators `$eq $ne $gt $gte $lt $lte $in $nin
//!   $exists`, all of which must hold; `$not` takes operators and negates them;
//! - `{"$and": [..]}`, `{"$or": [..]}`, `{"$not": {..}}`: selectors combined.
//!
//! Comparisons use one total order across JSON types ([`order`]): a missing field, then
//! `null`, `false`, `true`, numbers, strings, arrays, objects. So `{"n": {"$gt": 3}}`
//! also matches a string; `$ne` and `$nin` match a missing field; `{"f": null}` matches
//! only a field that holds `null`.
//!
//! **Sorting and pages.** Results come in the order of the sort paths (each ascending or
//! descending), then by key, so the order is total. A page ends with a cursor
//! ([`Query::cursor`]) holding the last result's sort values and key: the next page
//! starts after it, so a document that did not change meanwhile is neither skipped nor
//! repeated, whatever else changes.
//!
//! ```
//! use cbddc_query::{Query, Sort};
//! use serde_json::json;
//! let query = Query::parse(r#"{"status": "open", "n": {"$gte": 2}}"#, &[Sort::parse("n:desc").unwrap()], 10).unwrap();
//! assert!(query.matches(&json!({"status": "open", "n": 3})));
//! assert!(!query.matches(&json!({"status": "open", "n": 1})));
//! ```
#![warn(missing_docs)]

pub mod index;
pub mod live;
pub mod order;
pub mod pruned;

use serde_json::Value;
use std::cmp::Ordering;

/// The deepest dotted path a query may name.
pub const MAX_PATH_DEPTH: usize = 32;
/// The most conditions one query may hold (so a query cannot make a node do unbounded
/// work per document).
pub const MAX_CONDITIONS: usize = 256;
/// The most results one page may hold.
pub const MAX_LIMIT: usize = 10_000;
/// The most sort paths.
pub const MAX_SORT_PATHS: usize = 8;

/// A query refused before it runs; the message names the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not JSON, or not an object.
    #[error(
        "the query must be a JSON object of conditions (e.g. {{\"status\": \"open\"}}): {reason}"
    )]
    NotASelector {
        /// What was wrong.
        reason: String,
    },
    /// An operator this language does not have.
    #[error(
        "unknown operator {operator} at {at} (known: $eq $ne $gt $gte $lt $lte $in $nin $exists $not, and $and $or $not on selectors)"
    )]
    UnknownOperator {
        /// The operator.
        operator: String,
        /// Where, as a dotted path (or "the top level").
        at: String,
    },
    /// An operator given the wrong kind of operand.
    #[error("{operator} at {at} takes {expected}")]
    BadOperand {
        /// The operator.
        operator: String,
        /// Where.
        at: String,
        /// What it takes.
        expected: &'static str,
    },
    /// A path deeper than [`MAX_PATH_DEPTH`], or with an empty part.
    #[error("the path {path:?} is not a dotted path of 1 to {MAX_PATH_DEPTH} non-empty fields")]
    BadPath {
        /// The path.
        path: String,
    },
    /// More conditions than [`MAX_CONDITIONS`].
    #[error("the query holds more than {MAX_CONDITIONS} conditions")]
    TooLarge,
    /// A sort that cannot be read.
    #[error(
        "the sort {sort:?} is not PATH or PATH:asc or PATH:desc (at most {MAX_SORT_PATHS} of them)"
    )]
    BadSort {
        /// The sort as given.
        sort: String,
    },
    /// A limit of 0 or past [`MAX_LIMIT`].
    #[error("the limit must be from 1 to {MAX_LIMIT}, not {limit}")]
    BadLimit {
        /// The limit given.
        limit: usize,
    },
    /// A cursor that does not decode, or that another query made.
    #[error("the cursor {reason}: page again from the start of this query")]
    BadCursor {
        /// Why.
        reason: &'static str,
    },
}

/// A dotted path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(Vec<String>);

impl Path {
    /// Parses `a.b.c`.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        if text.is_empty() || parts.iter().any(String::is_empty) || parts.len() > MAX_PATH_DEPTH {
            return Err(QueryError::BadPath {
                path: text.to_string(),
            });
        }
        Ok(Self(parts))
    }

    /// The value at this path in `document`, if any.
    pub fn get<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        self.0
            .iter()
            .try_fold(document, |here, name| here.as_object()?.get(name))
    }

    /// The path, dotted.
    pub fn dotted(&self) -> String {
        self.0.join(".")
    }
}

/// A condition on one field's value.
#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Not(Vec<Condition>),
}

impl Condition {
    fn holds(&self, field: Option<&Value>) -> bool {
        let cmp = |v: &Value| order::compare(field, Some(v));
        match self {
            Condition::Eq(v) => cmp(v) == Ordering::Equal,
            Condition::Ne(v) => cmp(v) != Ordering::Equal,
            Condition::Gt(v) => field.is_some() && cmp(v) == Ordering::Greater,
            Condition::Gte(v) => field.is_some() && cmp(v) != Ordering::Less,
            Condition::Lt(v) => field.is_some() && cmp(v) == Ordering::Less,
            Condition::Lte(v) => field.is_some() && cmp(v) != Ordering::Greater,
            Condition::In(vs) => vs.iter().any(|v| cmp(v) == Ordering::Equal),
            Condition::Nin(vs) => vs.iter().all(|v| cmp(v) != Ordering::Equal),
            Condition::Exists(wanted) => field.is_some() == *wanted,
            Condition::Not(all) => !all.iter().all(|c| c.holds(field)),
        }
    }
}

/// A selector: conditions on fields, combined.
#[derive(Debug, Clone, PartialEq)]
enum Selector {
    Field(Path, Vec<Condition>),
    And(Vec<Selector>),
    Or(Vec<Selector>),
    Not(Box<Selector>),
}

impl Selector {
    fn matches(&self, document: &Value) -> bool {
        match self {
            Selector::Field(path, conditions) => {
                let field = path.get(document);
                conditions.iter().all(|c| c.holds(field))
            }
            Selector::And(all) => all.iter().all(|s| s.matches(document)),
            Selector::Or(any) => any.iter().any(|s| s.matches(document)),
            Selector::Not(inner) => !inner.matches(document),
        }
    }

    /// Every path a condition reads.
    fn paths<'s>(&'s self, out: &mut Vec<&'s Path>) {
        match self {
            Selector::Field(path, _) => out.push(path),
            Selector::And(all) | Selector::Or(all) => all.iter().for_each(|s| s.paths(out)),
            Selector::Not(inner) => inner.paths(out),
        }
    }
}

/// Parses selectors, counting conditions against [`MAX_CONDITIONS`].
struct Parser {
    conditions: usize,
}

impl Parser {
    fn count(&mut self) -> Result<(), QueryError> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(QueryError::TooLarge);
        }
        Ok(())
    }

    fn selector(&mut self, value: &Value, at: &str) -> Result<Selector, QueryError> {
        let Value::Object(fields) = value else {
            return Err(QueryError::NotASelector {
                reason: format!("{at} is not an object"),
            });
        };
        let mut all = Vec::new();
        for (name, operand) in fields {
            all.push(match name.as_str() {
                "$and" | "$or" => {
                    let Value::Array(items) = operand else {
                        return Err(QueryError::BadOperand {
                            operator: name.clone(),
                            at: at.into(),
                            expected: "an array of selectors",
                        });
                    };
                    let parts = items
                        .iter()
                        .map(|item| self.selector(item, at))
                        .collect::<Result<Vec<_>, _>>()?;
                    if name == "$and" {
                        Selector::And(parts)
                    } else {
                        Selector::Or(parts)
                    }
                }
                "$not" => Selector::Not(Box::new(self.selector(operand, at)?)),
                operator if operator.starts_with('$') => {
                    return Err(QueryError::UnknownOperator {
                        operator: operator.into(),
                        at: at.into(),
                    });
                }
                path => {
                    let parsed = Path::parse(path)?;
                    let conditions = self.conditions(operand, path)?;
                    Selector::Field(parsed, conditions)
                }
            });
        }
        Ok(Selector::And(all))
    }

    fn conditions(&mut self, operand: &Value, at: &str) -> Result<Vec<Condition>, QueryError> {
        let operators = match operand {
            Value::Object(ops) if ops.keys().next().is_some_and(|k| k.starts_with('$')) => ops,
            // A plain value (an object without operators included) is equality.
            other => {
                self.count()?;
                return Ok(vec![Condition::Eq(other.clone())]);
            }
        };
        let mut out = Vec::new();
        for (operator, value) in operators {
            self.count()?;
            let list = |v: &Value| -> Result<Vec<Value>, QueryError> {
                v.as_array().cloned().ok_or_else(|| QueryError::BadOperand {
                    operator: operator.clone(),
                    at: at.into(),
                    expected: "an array of values",
                })
            };
            out.push(match operator.as_str() {
                "$eq" => Condition::Eq(value.clone()),
                "$ne" => Condition::Ne(value.clone()),
                "$gt" => Condition::Gt(value.clone()),
                "$gte" => Condition::Gte(value.clone()),
                "$lt" => Condition::Lt(value.clone()),
                "$lte" => Condition::Lte(value.clone()),
                "$in" => Condition::In(list(value)?),
                "$nin" => Condition::Nin(list(value)?),
                "$exists" => {
                    Condition::Exists(value.as_bool().ok_or_else(|| QueryError::BadOperand {
                        operator: operator.clone(),
                        at: at.into(),
                        expected: "true or false",
                    })?)
                }
                "$not" => {
                    let Value::Object(_) = value else {
                        return Err(QueryError::BadOperand {
                            operator: operator.clone(),
                            at: at.into(),
                            expected: "an object of operators",
                        });
                    };
                    Condition::Not(self.conditions(value, at)?)
                }
                other => {
                    return Err(QueryError::UnknownOperator {
                        operator: other.into(),
                        at: at.into(),
                    });
                }
            });
        }
        Ok(out)
    }
}

/// One sort path and its direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    /// The field.
    pub path: Path,
    /// Descending rather than ascending.
    pub descending: bool,
}

impl Sort {
    /// Parses `PATH`, `PATH:asc` or `PATH:desc`.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let bad = || QueryError::BadSort {
            sort: text.to_string(),
        };
        let (path, descending) = match text.rsplit_once(':') {
            Some((path, "desc")) => (path, true),
            Some((path, "asc")) => (path, false),
            Some(_) => return Err(bad()),
            None => (text, false),
        };
        Ok(Self {
            path: Path::parse(path).map_err(|_| bad())?,
            descending,
        })
    }

    /// As given to [`Sort::parse`].
    pub fn text(&self) -> String {
        format!(
            "{}:{}",
            self.path.dotted(),
            if self.descending { "desc" } else { "asc" }
        )
    }
}

/// A parsed query: what matches, in which order, how many per page.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    selector: Selector,
    sort: Vec<Sort>,
    limit: usize,
    /// What a cursor names so that another query's is refused.
    fingerprint: u64,
}

/// Where a page ended: the last result's sort values and key.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    values: Vec<Option<Value>>,
    key: String,
}

impl Position {
    /// The key of the last result.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Query {
    /// Parses a selector (JSON text), its sort and a limit (1 to [`MAX_LIMIT`]).
    pub fn parse(selector: &str, sort: &[Sort], limit: usize) -> Result<Self, QueryError> {
        let value: Value =
            serde_json::from_str(selector).map_err(|e| QueryError::NotASelector {
                reason: e.to_string(),
            })?;
        if sort.len() > MAX_SORT_PATHS {
            return Err(QueryError::BadSort {
                sort: sort.iter().map(Sort::text).collect::<Vec<_>>().join(","),
            });
        }
        if limit == 0 || limit > MAX_LIMIT {
            return Err(QueryError::BadLimit { limit });
        }
        let parsed = Parser { conditions: 0 }.selector(&value, "the top level")?;
        let canonical = format!(
            "{}|{}",
            value,
            sort.iter().map(Sort::text).collect::<Vec<_>>().join(",")
        );
        Ok(Self {
            selector: parsed,
            sort: sort.to_vec(),
            limit,
            fingerprint: fnv(canonical.as_bytes()),
        })
    }

    /// Whether `document` matches.
    pub fn matches(&self, document: &Value) -> bool {
        self.selector.matches(document)
    }

    /// A parser of the fields this query reads (its conditions' and its sort's) and of
    /// those `also` read: [`Query::matches`] and [`Query::position`] on what it parses
    /// give what they give on the whole document.
    pub fn pruner<'p>(&'p self, also: impl IntoIterator<Item = &'p Path>) -> pruned::Pruner {
        let mut paths = Vec::new();
        self.selector.paths(&mut paths);
        paths.extend(self.sort.iter().map(|s| &s.path));
        paths.extend(also);
        pruned::Pruner::new(paths)
    }

    /// The most results per page.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The sort paths.
    pub fn sort(&self) -> &[Sort] {
        &self.sort
    }

    /// Where `document` (under `key`) sits in this query's order.
    pub fn position(&self, key: &str, document: &Value) -> Position {
        Position {
            values: self
                .sort
                .iter()
                .map(|s| s.path.get(document).cloned())
                .collect(),
            key: key.to_string(),
        }
    }

    /// Orders two positions: by the sort paths (each in its direction), then by key.
    pub fn compare(&self, a: &Position, b: &Position) -> Ordering {
        self.sort
            .iter()
            .zip(a.values.iter().zip(&b.values))
            .map(|(sort, (x, y))| {
                let o = order::compare(x.as_ref(), y.as_ref());
                if sort.descending { o.reverse() } else { o }
            })
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.key.cmp(&b.key))
    }

    /// The cursor that resumes this query after `position`: opaque text.
    pub fn cursor(&self, position: &Position) -> String {
        let body = Value::Array(vec![
            Value::from(format!("{:016x}", self.fingerprint)),
            Value::Array(
                position
                    .values
                    .iter()
                    .map(|v| match v {
                        None => Value::Array(Vec::new()),
                        Some(v) => Value::Array(vec![v.clone()]),
                    })
                    .collect(),
            ),
            Value::from(position.key.clone()),
        ])
        .to_string();
        let sum = fnv(body.as_bytes());
        let hex: String = body.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{hex}{sum:016x}")
    }

    /// Reads a cursor this query made; refuses another query's, and a tampered one.
    pub fn resume(&self, cursor: &str) -> Result<Position, QueryError> {
        let bad = |reason| QueryError::BadCursor { reason };
        if cursor.len() < 16 || cursor.len() % 2 != 0 || cursor.len() > 2 * 1024 * 1024 {
            return Err(bad("does not decode"));
        }
        let (hex, sum) = cursor.split_at(cursor.len() - 16);
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad("does not decode"))?;
        if format!("{:016x}", fnv(&bytes)) != sum {
            return Err(bad("was altered"));
        }
        let body: Value = serde_json::from_slice(&bytes).map_err(|_| bad("does not decode"))?;
        let (Some(fingerprint), Some(Value::Array(values)), Some(key)) = (
            body.get(0).and_then(Value::as_str),
            body.get(1),
            body.get(2).and_then(Value::as_str),
        ) else {
            return Err(bad("does not decode"));
        };
        if fingerprint != format!("{:016x}", self.fingerprint) || values.len() != self.sort.len() {
            return Err(bad("belongs to another query"));
        }
        let values = values
            .iter()
            .map(|v| match v.as_array().map(Vec::as_slice) {
                Some([]) => Ok(None),
                Some([value]) => Ok(Some(value.clone())),
                _ => Err(bad("does not decode")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Position {
            values,
            key: key.to_string(),
        })
    }
}

/// Keeps the first `limit` results in a query's order after a position, from documents
/// offered one at a time, in any order: memory bounded by twice the limit, whatever the
/// collection's size. Results gather unsorted; whenever twice the limit are held, the
/// best `limit` are selected (linear time) and the rest dropped, so each offer costs a
/// constant on average, and only the page that is returned is sorted.
/// `T` is what the caller wants back for each result.
#[derive(Debug)]
pub struct Page<'q, T> {
    query: &'q Query,
    after: Option<Position>,
    kept: Vec<(Position, T)>,
    /// Whether a result past the limit was seen (there is a next page).
    more: bool,
}

impl<'q, T> Page<'q, T> {
    /// A page of `query` after `after` (`None`: from the start).
    pub fn new(query: &'q Query, after: Option<Position>) -> Self {
        Self {
            query,
            after,
            kept: Vec::new(),
            more: false,
        }
    }

    /// Offers a document (its key and value, and what to give back for it); kept if it
    /// matches and belongs to the page.
    pub fn offer(&mut self, key: &str, document: &Value, result: T) {
        if self.query.matches(document) {
            let position = self.query.position(key, document);
            self.keep(position, result);
        }
    }

    /// Offers a document already known to match (read from an exact index range), without
    /// its value: only a query ordered by key alone can place it, so for a query with
    /// sort paths nothing is kept and `false` comes back.
    pub fn offer_matching(&mut self, key: String, result: T) -> bool {
        if !self.query.sort.is_empty() {
            return false;
        }
        let position = Position {
            values: Vec::new(),
            key,
        };
        self.keep(position, result);
        true
    }

    fn keep(&mut self, position: Position, result: T) {
        if self
            .after
            .as_ref()
            .is_some_and(|after| self.query.compare(&position, after) != Ordering::Greater)
        {
            return;
        }
        self.kept.push((position, result));
        if self.kept.len() >= 2 * self.query.limit {
            self.trim();
        }
    }

    /// Keeps the best `limit` results, in no particular order.
    fn trim(&mut self) {
        let limit = self.query.limit;
        if self.kept.len() > limit {
            let query = self.query;
            self.kept
                .select_nth_unstable_by(limit, |a, b| query.compare(&a.0, &b.0));
            self.kept.truncate(limit);
            self.more = true;
        }
    }

    /// Whether the page holds more results after its position than its limit: a reader
    /// offering documents in the query's order (see [`index::Plan::Ranges`]) may then
    /// stop where [`index::IndexRange::stop_after`] says.
    pub fn is_full(&self) -> bool {
        self.more || self.kept.len() > self.query.limit
    }

    /// The results in order, and the cursor to the next page when there is more.
    pub fn finish(mut self) -> (Vec<T>, Option<String>) {
        self.trim();
        let query = self.query;
        // Sorted by where each result goes, not by moving the results themselves (a
        // page of 10,000 documents would move each of them a dozen times).
        let mut order: Vec<usize> = (0..self.kept.len()).collect();
        order.sort_unstable_by(|&a, &b| query.compare(&self.kept[a].0, &self.kept[b].0));
        let next = match (self.more, order.last()) {
            (true, Some(&last)) => Some(query.cursor(&self.kept[last].0)),
            _ => None,
        };
        let mut slots: Vec<Option<T>> = self.kept.into_iter().map(|(_, t)| Some(t)).collect();
        let results = order.iter().filter_map(|&at| slots[at].take()).collect();
        (results, next)
    }
}

#[cfg(test)]
mod tests;

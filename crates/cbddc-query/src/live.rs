//! Live queries: a query applied to a stream of changes, saying of each change whether
//! its document enters the result, changes within it, or leaves it.

use crate::Query;
use serde_json::Value;
use std::collections::HashSet;

/// What a change does to a query's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The document matches now and did not.
    Enter,
    /// The document matched and still does (it changed).
    Stay,
    /// The document matched and does not any more (changed, or deleted).
    Leave,
}

impl Match {
    /// `enter`, `stay` or `leave`.
    pub fn as_str(self) -> &'static str {
        match self {
            Match::Enter => "enter",
            Match::Stay => "stay",
            Match::Leave => "leave",
        }
    }
}

/// Follows which documents match, change by change. Keeps the keys that match (memory
/// in proportion to the result, not the collection).
#[derive(Debug)]
pub struct LiveQuery {
    query: Query,
    matching: HashSet<String>,
    /// Started without the current state (a resumed feed): what matched before is not
    /// known, so a change of a document that does not match is reported as leaving.
    unknown_before: bool,
}

impl LiveQuery {
    /// Follows `query`. With `from_current_state`, the changes start with every current
    /// document (and `leave` is said only of documents seen entering); otherwise what
    /// matched before is unknown, and every change of a non-matching document is
    /// reported as `leave` (a consumer that did not hold it drops the line).
    pub fn new(query: Query, from_current_state: bool) -> Self {
        Self {
            query,
            matching: HashSet::new(),
            unknown_before: !from_current_state,
        }
    }

    /// The document under `key` changed to `document` (`None`: deleted); what that does
    /// to the result, if anything.
    pub fn change(&mut self, key: &str, document: Option<&Value>) -> Option<Match> {
        let matches = document.is_some_and(|d| self.query.matches(d));
        let matched = self.matching.contains(key);
        match (matched, matches) {
            (false, true) => {
                self.matching.insert(key.to_string());
                Some(Match::Enter)
            }
            (true, true) => Some(Match::Stay),
            (true, false) => {
                self.matching.remove(key);
                Some(Match::Leave)
            }
            (false, false) => self.unknown_before.then_some(Match::Leave),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_enter_stay_and_leave() {
        let query = Query::parse(r#"{"status": "open"}"#, &[], 10).unwrap();
        let mut live = LiveQuery::new(query.clone(), true);
        let open = json!({"status": "open"});
        let closed = json!({"status": "closed"});
        assert_eq!(live.change("a", Some(&closed)), None);
        assert_eq!(live.change("a", Some(&open)), Some(Match::Enter));
        assert_eq!(
            live.change("a", Some(&json!({"status": "open", "n": 1}))),
            Some(Match::Stay)
        );
        assert_eq!(live.change("a", None), Some(Match::Leave));
        assert_eq!(live.change("a", None), None);
        // Resumed: what matched before is unknown.
        let mut resumed = LiveQuery::new(query, false);
        assert_eq!(resumed.change("b", Some(&closed)), Some(Match::Leave));
        assert_eq!(resumed.change("b", Some(&open)), Some(Match::Enter));
    }
}

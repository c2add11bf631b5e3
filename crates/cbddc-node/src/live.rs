//! Live queries on the embedding API: the change feed, filtered by a query.

use crate::{ChangeFeed, NodeError};
use cbddc_query::live::{LiveQuery, Match};
use serde_json::Value;

/// A change that moves a document into, within or out of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryChange {
    /// The change's feed position (0 for the current state of a feed started
    /// [`crate::FeedStart::Current`]); resume after it like any feed.
    pub position: u64,
    /// The document's key.
    pub key: String,
    /// The document after the change (`None`: deleted).
    pub document: Option<Value>,
    /// What the change does to the result.
    pub matched: Match,
}

/// A query's result as it changes ([`crate::Node::watch_query`]). It reads the change
/// feed, so a slow consumer loses nothing.
#[derive(Debug)]
pub struct QueryFeed {
    feed: ChangeFeed,
    live: LiveQuery,
}

impl QueryFeed {
    pub(crate) fn new(feed: ChangeFeed, live: LiveQuery) -> Self {
        Self { feed, live }
    }

    /// The next change that enters, stays in or leaves the result, waiting for one.
    /// `Ok(None)` once the database is closed.
    pub async fn next(&mut self) -> Result<Option<QueryChange>, NodeError> {
        while let Some(change) = self.feed.next().await? {
            let document = change.document();
            if let Some(matched) = self.live.change(&change.entry.key, document.as_ref()) {
                return Ok(Some(QueryChange {
                    position: change.position,
                    key: change.entry.key,
                    document,
                    matched,
                }));
            }
        }
        Ok(None)
    }

    /// Where to resume (see [`ChangeFeed::position`]).
    pub fn position(&self) -> u64 {
        self.feed.position()
    }
}

//! The change feed: every change applied to the node's documents, local writes and
//! entries from peers alike, in apply order.
//!
//! The feed reads the store's `changes` table at the consumer's pace, so a slow consumer
//! never holds the writer up and never loses a change: it just reads further behind. A
//! position handed out with each change stays valid across restarts; resume after it.

use crate::NodeError;
use cbddc_core::{Change, DocumentStore, StorageError};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How many changes a feed reads from the store at a time.
const FEED_PAGE: usize = 256;

/// Where a feed starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedStart {
    /// With the first change the database recorded.
    Beginning,
    /// With the next change: nothing from before the subscription.
    #[default]
    Now,
    /// With the change after this position (a [`Change::position`] seen earlier).
    After(u64),
}

/// Which changes a feed yields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// Only this collection's changes; `None`: every collection.
    pub collection: Option<String>,
    /// Where to start.
    pub start: FeedStart,
}

impl ChangeFilter {
    /// Every change of `collection` from now on.
    pub fn collection(collection: impl Into<String>) -> Self {
        Self {
            collection: Some(collection.into()),
            start: FeedStart::Now,
        }
    }

    /// The same filter, starting at `start`.
    pub fn starting(mut self, start: FeedStart) -> Self {
        self.start = start;
        self
    }
}

/// A subscription to the changes of one database; see [`crate::Node::changes`].
///
/// A node id change opens another database: a feed of the old one ends (`next` returns
/// `Ok(None)`), since its positions mean nothing in the new one.
#[derive(Debug)]
pub struct ChangeFeed {
    store: Arc<dyn DocumentStore>,
    collection: Option<String>,
    /// Positions up to this one are read.
    cursor: u64,
    /// The position of the last change yielded (or where the feed started).
    yielded: u64,
    buffered: VecDeque<Change>,
    last_position: watch::Receiver<u64>,
}

impl ChangeFeed {
    pub(crate) async fn open(
        store: Arc<dyn DocumentStore>,
        filter: ChangeFilter,
    ) -> Result<Self, NodeError> {
        let last_position = store.watch_changes();
        let cursor = match filter.start {
            FeedStart::Beginning => 0,
            FeedStart::After(position) => position,
            FeedStart::Now => *last_position.borrow(),
        };
        Ok(Self {
            store,
            collection: filter.collection,
            cursor,
            yielded: cursor,
            buffered: VecDeque::new(),
            last_position,
        })
    }

    /// Where to resume: a feed started [`FeedStart::After`] this position yields exactly
    /// the changes this one has not yielded yet.
    pub fn position(&self) -> u64 {
        if self.buffered.is_empty() {
            self.cursor
        } else {
            self.yielded
        }
    }

    /// The next change, waiting for one. `Ok(None)` once the database is closed (the node
    /// stopped or moved to another node id).
    pub async fn next(&mut self) -> Result<Option<Change>, NodeError> {
        loop {
            if let Some(change) = self.buffered.pop_front() {
                self.yielded = change.position;
                return Ok(Some(change));
            }
            if !self.fill(FEED_PAGE).await? {
                return Ok(None);
            }
        }
    }

    /// Up to `max` changes: those available now, or if there are none the first that
    /// come within `wait` (an empty page when none do). `Ok(None)` once the database is
    /// closed.
    pub async fn next_page(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Option<Vec<Change>>, NodeError> {
        let max = max.max(1);
        if self.buffered.is_empty() {
            match tokio::time::timeout(wait, self.fill(max)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(Some(Vec::new())),
            }
        }
        let take = max.min(self.buffered.len());
        let page: Vec<Change> = self.buffered.drain(..take).collect();
        if let Some(last) = page.last() {
            self.yielded = last.position;
        }
        Ok(Some(page))
    }

    /// Reads until at least one change is buffered; `false` once the store is closed.
    async fn fill(&mut self, limit: usize) -> Result<bool, NodeError> {
        loop {
            let page = match self
                .store
                .changes_after(self.cursor, self.collection.clone(), limit)
                .await
            {
                Ok(page) => page,
                Err(StorageError::Closed) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            self.cursor = self.cursor.max(page.scanned_to);
            if !page.changes.is_empty() {
                self.buffered.extend(page.changes);
                return Ok(true);
            }
            if page.scanned_to < page.last_position {
                continue;
            }
            // Nothing more yet: wait for the next commit that changes a document.
            let seen = self.cursor;
            if self
                .last_position
                .wait_for(|last| *last > seen)
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
    }
}

//! The change feed: every change applied to the node's documents, local writes and
//! entries from peers alike, in apply order.
//!
//! The feed reads the store's `changes` table at the consumer's pace, so a slow consumer
//! never holds the writer up and never loses a change: it just reads further behind. A
//! position handed out with each change stays valid across restarts; resume after it.
//!
//! What a resumed feed promises: for every document changed after the position, its
//! latest state (deletes included) at a later position. Superseded changes may have left
//! (compaction); a delete stays for `feed_retention_ms` after compaction collected its
//! tombstone, and for as long as a named consumer that acknowledged within the retention
//! has not read it. A feed that can no longer keep the promise says so
//! ([`NodeError::FeedCompacted`]) instead of skipping: the consumer resyncs with
//! [`FeedStart::Current`] (the current state, then the changes after it).

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
    /// With the first change the feed still holds (position 0). Fails with
    /// [`NodeError::FeedCompacted`] once the feed lost changes after 0; a consumer that
    /// wants everything takes [`FeedStart::Current`].
    Beginning,
    /// With the current state: every live document, each as a change at position 0 (in
    /// `(collection, key)` order), then every change after the position the state was
    /// read at. Never fails as compacted: the way to (re)sync from nothing.
    Current,
    /// With the next change: nothing from before the subscription.
    #[default]
    Now,
    /// With the change after this position (a [`Change::position`] seen earlier).
    After(u64),
    /// After the position the named consumer ([`ChangeFilter::consumer`]) acknowledged;
    /// like [`FeedStart::Current`] for a consumer the node does not know yet.
    Acknowledged,
}

/// Which changes a feed yields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// Only this collection's changes; `None`: every collection.
    pub collection: Option<String>,
    /// Where to start.
    pub start: FeedStart,
    /// A named consumer: the node keeps the position it acknowledges
    /// ([`ChangeFeed::acknowledge`]), holds deletes it has not read (within the feed
    /// retention), and shows its lag in `status` and the metrics.
    pub consumer: Option<String>,
}

impl ChangeFilter {
    /// Every change of `collection` from now on.
    pub fn collection(collection: impl Into<String>) -> Self {
        Self {
            collection: Some(collection.into()),
            ..Self::default()
        }
    }

    /// The same filter, starting at `start`.
    pub fn starting(mut self, start: FeedStart) -> Self {
        self.start = start;
        self
    }

    /// The same filter for the named consumer `name`, resuming where it acknowledged
    /// ([`FeedStart::Acknowledged`]).
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self.start = FeedStart::Acknowledged;
        self
    }
}

/// Reading the current state before following the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    /// The feed position the state was read at: the feed continues after it.
    pub(crate) position: u64,
    /// The last document read.
    pub(crate) after: Option<(String, String)>,
    /// Every document is read.
    pub(crate) read_all: bool,
}

/// A subscription to the changes of one database; see [`crate::Node::changes`].
///
/// A node id change opens another database: a feed of the old one ends (`next` returns
/// `Ok(None)`), since its positions mean nothing in the new one.
#[derive(Debug)]
pub struct ChangeFeed {
    store: Arc<dyn DocumentStore>,
    collection: Option<String>,
    consumer: Option<String>,
    /// Positions up to this one are read.
    cursor: u64,
    /// The position of the last change yielded (or where the feed started).
    yielded: u64,
    /// The current state being read first, if the feed started with it.
    listing: Option<Listing>,
    /// The last document of the current state yielded.
    listed: Option<(String, String)>,
    buffered: VecDeque<Change>,
    last_position: watch::Receiver<u64>,
}

/// A storage error as the feed reports it.
fn feed_error(e: StorageError) -> NodeError {
    match e {
        StorageError::FeedCompacted { after, oldest } => NodeError::FeedCompacted { after, oldest },
        e => NodeError::Storage(e),
    }
}

impl ChangeFeed {
    pub(crate) async fn open(
        store: Arc<dyn DocumentStore>,
        filter: ChangeFilter,
    ) -> Result<Self, NodeError> {
        if let Some(name) = &filter.consumer {
            cbddc_core::validate_consumer_name(name).map_err(|e| NodeError::InvalidRequest {
                reason: e.to_string(),
            })?;
        }
        let last_position = store.watch_changes();
        let mut start = filter.start;
        if start == FeedStart::Acknowledged {
            let Some(name) = &filter.consumer else {
                return Err(NodeError::InvalidRequest {
                    reason: "a feed that resumes where its consumer acknowledged needs the consumer's name (ChangeFilter::consumer)".into(),
                });
            };
            let known = store.feed_consumers().await?;
            start = match known.iter().find(|c| &c.name == name) {
                Some(consumer) => FeedStart::After(consumer.position),
                None => FeedStart::Current,
            };
        }
        let (cursor, listing) = match start {
            FeedStart::Beginning => (0, None),
            FeedStart::After(position) => (position, None),
            FeedStart::Now => (*last_position.borrow(), None),
            FeedStart::Current | FeedStart::Acknowledged => {
                // The position first: whatever commits after it is read again from the
                // feed, so nothing falls between the state and the changes.
                let listing = Listing {
                    position: *last_position.borrow(),
                    after: None,
                    read_all: false,
                };
                (0, Some(listing))
            }
        };
        let feed = Self {
            store,
            collection: filter.collection,
            consumer: filter.consumer,
            cursor,
            yielded: cursor,
            listing,
            listed: None,
            buffered: VecDeque::new(),
            last_position,
        };
        if feed.listing.is_none() {
            // Asked after a position the feed lost: say so now, not at the first read.
            feed.store
                .changes_after(cursor, feed.collection.clone(), 0)
                .await
                .map_err(feed_error)?;
        }
        Ok(feed)
    }

    /// A feed continuing a listing of the current state (the wire's `listing`).
    pub(crate) fn continuing(
        store: Arc<dyn DocumentStore>,
        collection: Option<String>,
        listing: Listing,
    ) -> Self {
        let last_position = store.watch_changes();
        Self {
            store,
            collection,
            consumer: None,
            cursor: 0,
            yielded: 0,
            listed: listing.after.clone(),
            listing: Some(listing),
            buffered: VecDeque::new(),
            last_position,
        }
    }

    /// Where to resume: a feed started [`FeedStart::After`] this position yields exactly
    /// the changes this one has not yielded yet. 0 while the current state is still being
    /// yielded: a feed resumed then starts over with the current state.
    pub fn position(&self) -> u64 {
        if self.buffered.is_empty() {
            self.cursor
        } else {
            self.yielded
        }
    }

    /// Where a listing of the current state stands, while one goes on (for the wire).
    pub(crate) fn listing(&self) -> Option<Listing> {
        let listing = self.listing.as_ref()?;
        let pending = self.buffered.iter().any(|c| c.position == 0);
        (pending || !listing.read_all).then(|| Listing {
            position: listing.position,
            after: self.listed.clone(),
            read_all: false,
        })
    }

    /// Records, for the named consumer, that every change up to `position` is processed:
    /// a restart of the consumer resumes after it ([`FeedStart::Acknowledged`]). Position
    /// 0 (the current state, while it is being yielded) records nothing.
    pub async fn acknowledge(&self, position: u64) -> Result<(), NodeError> {
        let Some(name) = &self.consumer else {
            return Err(NodeError::InvalidRequest {
                reason: "only a named consumer's feed acknowledges (ChangeFilter::consumer)".into(),
            });
        };
        if position == 0 {
            return Ok(());
        }
        Ok(self.store.acknowledge_feed(name.clone(), position).await?)
    }

    /// The next change, waiting for one. `Ok(None)` once the database is closed (the node
    /// stopped or moved to another node id).
    pub async fn next(&mut self) -> Result<Option<Change>, NodeError> {
        loop {
            if let Some(change) = self.buffered.pop_front() {
                self.note_yielded(&change);
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
        for change in &page {
            self.note_yielded(change);
        }
        Ok(Some(page))
    }

    fn note_yielded(&mut self, change: &Change) {
        self.yielded = change.position;
        if change.position == 0 {
            self.listed = Some((change.entry.collection.clone(), change.entry.key.clone()));
        }
    }

    /// Reads until at least one change is buffered; `false` once the store is closed.
    async fn fill(&mut self, limit: usize) -> Result<bool, NodeError> {
        if self.fill_listing(limit).await? {
            return Ok(true);
        }
        loop {
            let page = match self
                .store
                .changes_after(self.cursor, self.collection.clone(), limit)
                .await
            {
                Ok(page) => page,
                Err(StorageError::Closed) => return Ok(false),
                Err(e) => return Err(feed_error(e)),
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

    /// While the current state is being read, buffers its next documents; once it is
    /// all read, moves the feed on to the position it was read at.
    async fn fill_listing(&mut self, limit: usize) -> Result<bool, NodeError> {
        let Some(listing) = &mut self.listing else {
            return Ok(false);
        };
        if listing.read_all {
            return Ok(false);
        }
        let entries = match self
            .store
            .current_state(self.collection.clone(), listing.after.clone(), limit)
            .await
        {
            Ok(entries) => entries,
            Err(StorageError::Closed) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if entries.len() < limit {
            listing.read_all = true;
            self.cursor = listing.position;
        }
        if let Some(last) = entries.last() {
            listing.after = Some((last.collection.clone(), last.key.clone()));
        }
        let found = !entries.is_empty();
        self.buffered
            .extend(entries.into_iter().map(|entry| Change {
                position: 0,
                entry,
                merged: None,
            }));
        Ok(found)
    }
}

/// What `status` shows of the change feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedReport {
    /// How long a delete stays in the feed after compaction collected its tombstone.
    pub retention_ms: u64,
    /// Deletes the feed keeps for its consumers, apart from the oplog.
    pub feed_entries: u64,
    /// The oldest position a consumer can resume after.
    pub oldest_position: u64,
    /// The feed's last position.
    pub last_position: u64,
    /// Named consumers, by name.
    pub consumers: Vec<ConsumerReport>,
}

/// A named consumer of the change feed, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Its name.
    pub name: String,
    /// The position it acknowledged.
    pub position: u64,
    /// Positions after it: how far behind the feed it is.
    pub lag: u64,
    /// Time since it acknowledged last, in milliseconds.
    pub acked_age_ms: u64,
    /// It acknowledged within the retention, so deletes it has not read stay.
    pub holding_back: bool,
}

impl FeedReport {
    pub(crate) async fn read(
        store: &dyn DocumentStore,
        retention_ms: u64,
    ) -> Result<Self, StorageError> {
        let stats = store.stats().await?;
        let last_position = *store.watch_changes().borrow();
        let now = cbddc_core::unix_millis();
        let consumers = store
            .feed_consumers()
            .await?
            .into_iter()
            .map(|c| {
                let age = now.saturating_sub(c.acked_ms);
                ConsumerReport {
                    lag: last_position.saturating_sub(c.position),
                    acked_age_ms: age,
                    holding_back: age <= retention_ms,
                    name: c.name,
                    position: c.position,
                }
            })
            .collect();
        Ok(Self {
            retention_ms,
            feed_entries: stats.feed_entries,
            oldest_position: stats.feed_oldest,
            last_position,
            consumers,
        })
    }
}

//! Indexes a node keeps on its own documents, so queries read a range of entries instead
//! of a whole collection. Declared in a node's configuration, built in the background, and
//! never sent to peers: every node builds its own from the documents it holds.

use crate::Document;

/// An index: the values at some dotted paths of every document of a collection, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexDefinition {
    /// The collection indexed.
    pub collection: String,
    /// The dotted paths indexed, in order (the first one narrows most).
    pub fields: Vec<String>,
    /// Whether each entry keeps a copy of its document: a query reads the documents
    /// from the index's range alone, with no lookup of each one elsewhere in the file,
    /// at the cost of the copy's space and of writing it.
    pub covering: bool,
}

impl IndexDefinition {
    /// An index on `fields` of `collection` (not covering).
    pub fn new(collection: impl Into<String>, fields: &[&str]) -> Self {
        Self {
            collection: collection.into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            covering: false,
        }
    }

    /// The same index keeping a copy of each document in its entries (see
    /// [`IndexDefinition::covering`]).
    pub fn covering_documents(mut self) -> Self {
        self.covering = true;
        self
    }

    /// How people name it: `orders(shop, total)`.
    pub fn name(&self) -> String {
        format!("{}({})", self.collection, self.fields.join(", "))
    }
}

/// An index as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatus {
    /// What it indexes.
    pub definition: IndexDefinition,
    /// Entries held (one per live document once built); while building, the documents
    /// read so far.
    pub entries: u64,
    /// While it is being built: how far. `None`: built, queries use it.
    pub building: Option<IndexBuild>,
    /// Writes to its collection recorded and not yet folded into its entries (the store
    /// folds them in batches; a query folds them first).
    pub pending: u64,
}

/// How far the background build of an index has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexBuild {
    /// Documents of the collection read so far.
    pub done: u64,
    /// Documents the collection held when the build started.
    pub total: u64,
}

/// One read of a built index: entries from `low` (included) to `high` (excluded;
/// `None`: to the end), after `after` (the entry and key the previous page ended on),
/// at most `limit` of them, each with its live document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRead {
    /// The index read.
    pub index: IndexDefinition,
    /// The first entry of the range.
    pub low: Vec<u8>,
    /// The first entry past the range.
    pub high: Option<Vec<u8>>,
    /// Where the previous page of this range ended.
    pub after: Option<(Vec<u8>, String)>,
    /// The most entries to return.
    pub limit: usize,
    /// Read from the highest entry and key down (a page then ends at its lowest, and
    /// `after` resumes below it).
    pub reverse: bool,
}

/// A page read from an index: the documents under its entries, in entry order, and
/// where the page ended (to resume after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexPage {
    /// The live documents.
    pub documents: Vec<Document>,
    /// The entry and key of the last document; `None` for an empty page.
    pub last: Option<(Vec<u8>, String)>,
}

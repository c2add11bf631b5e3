//! Running a query: through the built index that narrows it most (see
//! [`cbddc_query::index`]), else by a scan of the collection in key order, a page of
//! documents at a time, keeping at most twice the query's limit whatever the collection's
//! size.

use crate::NodeError;
use crate::indexes::Indexes;
use cbddc_core::{Document, DocumentStore, IndexDefinition};

/// Documents a scan reads per step of a query.
const SCAN_PAGE: usize = 1_000;
/// Entries an exact range read in key order takes per step: each is a result the page
/// keeps (up to twice the limit), so a step of up to the limit holds no more than the
/// page does, in fewer trips to the store.
const EXACT_STEP: usize = 10_000;

/// A page of a query's results.
#[derive(Debug, Clone)]
pub struct Found {
    /// The matching documents, in the query's order.
    pub documents: Vec<Document>,
    /// The cursor of the next page; `None` when there is no more.
    pub next: Option<String>,
    /// How the node ran the query.
    pub plan: String,
}

/// A page of `query`'s results in `collection` after the cursor `after`: read through
/// the built index that narrows it most, else a scan of the collection in key order,
/// a page of documents at a time, keeping at most the query's limit (memory bounded
/// whatever the collection's size).
pub(crate) async fn find(
    store: &dyn DocumentStore,
    indexes: &Indexes,
    collection: &str,
    query: &cbddc_query::Query,
    after: Option<&str>,
) -> Result<Found, NodeError> {
    cbddc_core::validate_collection(collection).map_err(|e| NodeError::InvalidRequest {
        reason: e.to_string(),
    })?;
    let position = after
        .map(|cursor| query.resume(cursor))
        .transpose()
        .map_err(|e| NodeError::InvalidRequest {
            reason: e.to_string(),
        })?;
    let built = indexes.built(collection);
    let fields: Vec<Vec<cbddc_query::Path>> = built
        .iter()
        .map(|index| {
            index
                .fields
                .iter()
                .filter_map(|f| cbddc_query::Path::parse(f).ok())
                .collect()
        })
        .collect();
    let plan = query.plan(&fields);
    if let cbddc_query::index::Plan::Ranges { ranges, .. } = &plan {
        let read = find_by_index(
            store,
            query,
            &plan,
            ranges,
            (&built, &fields),
            position.clone(),
        )
        .await?;
        if let Some(mut found) = read {
            // Sorted but not read in the sort's order: every match was read.
            if !query.sort().is_empty() && !plan.in_sort_order() {
                found.plan.push_str(&advice(collection, query, &built));
            }
            return Ok(found);
        }
        // An index dropped since it was planned: the scan answers.
    }
    let mut found = find_by_scan(store, collection, query, position).await?;
    let advised = advice(collection, query, &built);
    found.plan = if built.is_empty() && advised.is_empty() {
        format!(
            "a scan of {collection} in key order: no index serves this query (none of {collection} is built; declare one under [[indexes]])"
        )
    } else if built.is_empty() {
        format!(
            "a scan of {collection} in key order: no index serves this query (none of {collection} is built){advised}"
        )
    } else {
        format!(
            "a scan of {collection} in key order: no index serves this query (built: {})",
            built
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        ) + &advised
    };
    Ok(found)
}

/// What a plan ends with when an index this node lacks would serve the query: its name
/// and the configuration that declares it (empty when there is none to advise).
fn advice(collection: &str, query: &cbddc_query::Query, built: &[IndexDefinition]) -> String {
    let Some(fields) = query.advise() else {
        return String::new();
    };
    let fields: Vec<String> = fields.iter().map(cbddc_query::Path::dotted).collect();
    if built.iter().any(|index| index.fields == fields) {
        return String::new();
    }
    let index = IndexDefinition {
        collection: collection.to_string(),
        fields,
        covering: false,
    };
    format!(
        "; an index on {} would serve it: [[indexes]] collection = {:?}, fields = {:?}",
        index.name(),
        index.collection,
        index.fields
    )
}

async fn find_by_scan(
    store: &dyn DocumentStore,
    collection: &str,
    query: &cbddc_query::Query,
    position: Option<cbddc_query::Position>,
) -> Result<Found, NodeError> {
    // In key order, the next page starts after the last key: nothing before it is
    // part of it.
    let mut scanned_after: Option<String> = match &position {
        Some(position) if query.sort().is_empty() => Some(position.key().to_string()),
        _ => None,
    };
    let mut page = cbddc_query::Page::new(query, position);
    // Only the fields the query reads are parsed.
    let pruner = query.pruner([]);
    loop {
        let docs = store
            .list(collection, scanned_after.clone(), SCAN_PAGE)
            .await?;
        let Some(last) = docs.last() else { break };
        scanned_after = Some(last.key.clone());
        let full = docs.len() < SCAN_PAGE;
        for doc in docs {
            if let Ok(value) = pruner.parse(&doc.value) {
                page.offer(&doc.key.clone(), &value, doc);
            }
        }
        if full {
            break;
        }
    }
    let (documents, next) = page.finish();
    Ok(Found {
        documents,
        next,
        plan: String::new(),
    })
}

/// One page of an index; `None` if the index is no longer built.
async fn read_index(
    store: &dyn DocumentStore,
    read: cbddc_core::IndexRead,
) -> Result<Option<cbddc_core::IndexPage>, NodeError> {
    match store.read_index(read).await {
        Ok(hits) => Ok(Some(hits)),
        Err(cbddc_core::StorageError::IndexUnavailable { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the plan's ranges, each document once; `None` if an index is no longer built.
async fn find_by_index(
    store: &dyn DocumentStore,
    query: &cbddc_query::Query,
    plan: &cbddc_query::index::Plan,
    ranges: &[cbddc_query::index::IndexRange],
    (built, fields): (&[cbddc_core::IndexDefinition], &[Vec<cbddc_query::Path>]),
    position: Option<cbddc_query::Position>,
) -> Result<Option<Found>, NodeError> {
    // An exact plan in key order needs no document read as JSON: each one under its
    // ranges matches, once.
    let unread = matches!(plan, cbddc_query::index::Plan::Ranges { exact: true, .. })
        && query.sort().is_empty();
    let resume_key = position.as_ref().map(|p| p.key().to_string());
    let in_sort_order = plan.in_sort_order();
    let resume_sorted = position.clone().filter(|_| in_sort_order);
    let mut page = cbddc_query::Page::new(query, position);
    // Only the fields the query and the indexes' entries read are parsed.
    let pruner = query.pruner(fields.iter().flatten());
    let mut read = 0u64;
    for (at, range) in ranges.iter().enumerate() {
        // A range of one entry holds its documents in key order: in key order, a page
        // starts after the cursor's key and needs at most one more than the limit from it.
        let in_key_order = unread && range.one_entry;
        let mut after: Option<(Vec<u8>, String)> = match &resume_key {
            Some(key) if in_key_order => Some((range.range.low.clone(), key.clone())),
            _ => None,
        };
        // A range in the sort's order starts where the cursor's values are, and ends once
        // the page is full and what may still belong to it is read.
        let (mut low, mut high) = (range.range.low.clone(), range.range.high.clone());
        let mut within = None;
        if in_sort_order {
            let start = range.start(resume_sorted.as_ref());
            (low, high, after, within) = (start.low, start.high, start.after, start.within);
        }
        let reverse = in_sort_order && range.descending;
        let mut stopping = false;
        let most = if unread && !in_key_order && !in_sort_order {
            EXACT_STEP.min(query.limit() + 1)
        } else {
            SCAN_PAGE
        };
        let mut batch = if in_key_order || in_sort_order {
            SCAN_PAGE.min(query.limit() + 1)
        } else {
            most
        };
        let offer = |page: &mut cbddc_query::Page<'_, Document>, documents: Vec<Document>| {
            for document in documents {
                if unread {
                    page.offer_matching(document.key.clone(), document);
                    continue;
                }
                let Ok(value) = pruner.parse(&document.value) else {
                    continue;
                };
                if !plan.seen_before(fields, at, &value) {
                    page.offer(&document.key.clone(), &value, document);
                }
            }
        };
        // Descending from a cursor whose value is its entry's alone: the documents of that
        // entry after its key come first, upwards; a page full among them is done.
        if let Some(rest) = within {
            let mut after_key = Some((rest.entry.clone(), rest.after_key));
            let full = loop {
                let read_here = cbddc_core::IndexRead {
                    index: built[range.index].clone(),
                    low: rest.entry.clone(),
                    high: Some(rest.end.clone()),
                    after: after_key.take(),
                    limit: batch,
                    reverse: false,
                };
                let Some(hits) = read_index(store, read_here).await? else {
                    return Ok(None);
                };
                let complete = hits.documents.len() < batch;
                after_key = hits.last;
                read += hits.documents.len() as u64;
                offer(&mut page, hits.documents);
                if page.is_full() {
                    break true;
                }
                if complete {
                    break false;
                }
                batch = (batch * 2).min(SCAN_PAGE);
            };
            if full {
                continue;
            }
        }
        let mut taken = 0usize;
        loop {
            let read_here = cbddc_core::IndexRead {
                index: built[range.index].clone(),
                low: low.clone(),
                high: high.clone(),
                after: after.take(),
                limit: batch,
                reverse,
            };
            let Some(hits) = read_index(store, read_here).await? else {
                return Ok(None);
            };
            let complete = hits.documents.len() < batch;
            after = hits.last;
            read += hits.documents.len() as u64;
            taken += hits.documents.len();
            offer(&mut page, hits.documents);
            if complete || (in_key_order && taken > query.limit()) {
                break;
            }
            if in_sort_order
                && !stopping
                && page.is_full()
                && let Some((entry, _)) = &after
            {
                stopping = true;
                match range.stop_after(entry) {
                    cbddc_query::index::SortedStop::Now => break,
                    cbddc_query::index::SortedStop::Before(end) => {
                        if high.as_ref().is_none_or(|h| &end < h) {
                            high = Some(end);
                        }
                    }
                    cbddc_query::index::SortedStop::From(start) => {
                        if start > low {
                            low = start;
                        }
                    }
                    cbddc_query::index::SortedStop::ToTheEnd => {}
                }
            }
            // Documents the query does not match make a sorted read go on: fewer trips.
            batch = (batch * 2).min(most);
        }
    }
    let mut names: Vec<String> = ranges
        .iter()
        .map(|r| {
            let index = &built[r.index];
            if index.covering {
                format!("{} (covering)", index.name())
            } else {
                index.name()
            }
        })
        .collect();
    names.dedup();
    let (documents, next) = page.finish();
    Ok(Some(Found {
        documents,
        next,
        plan: format!(
            "index {}: {} range{}{}, {read} entr{} read{}",
            names.join(" and "),
            ranges.len(),
            if ranges.len() == 1 { "" } else { "s" },
            if in_sort_order {
                " in the sort's order"
            } else {
                ""
            },
            if read == 1 { "y" } else { "ies" },
            if unread {
                " (exact: no document checked)"
            } else {
                ", each document checked against the query"
            }
        ),
    }))
}

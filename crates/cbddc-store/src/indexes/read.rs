//! Reading a page of an index's range with its documents, never behind them.

use crate::error::{SqlContext, StoreError};
use crate::rows::stamp_after;
use cbddc_core::{Document, IndexPage, IndexRead};
use rusqlite::{Connection, OptionalExtension, params};

/// What a read of an index found.
#[derive(Debug)]
pub(crate) enum IndexLookup {
    /// The page read.
    Page(IndexPage),
    /// The index is not built (or not held).
    NotBuilt,
    /// Writes are pending: the writer must fold them before the index is read.
    Behind,
}

/// A page of a built index's range, each entry with its live document, in one read
/// transaction; [`IndexLookup::Behind`] when writes are pending in it.
pub(crate) fn read(conn: &Connection, read: &IndexRead) -> Result<IndexLookup, StoreError> {
    crate::rows::consistently(conn, "reading an index", |c| {
        // Only this collection's pending writes concern its indexes.
        let behind: bool = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM index_pending WHERE collection = ?1)")
            .and_then(|mut s| s.query_row([&read.index.collection], |r| r.get(0)))
            .during("reading an index")?;
        if behind {
            return Ok(IndexLookup::Behind);
        }
        Ok(match read_page(c, read)? {
            Some(page) => IndexLookup::Page(page),
            None => IndexLookup::NotBuilt,
        })
    })
}

/// [`read`] once no write is pending; `None` when the index is not built (or not held).
fn read_page(conn: &Connection, read: &IndexRead) -> Result<Option<IndexPage>, StoreError> {
    const OP: &str = "reading an index";
    let Ok(fields) = serde_json::to_string(&read.index.fields) else {
        return Ok(None);
    };
    let held: Option<(i64, bool)> = conn
        .prepare_cached(
            "SELECT id, covering FROM indexes
             WHERE collection = ?1 AND fields = ?2 AND NOT building",
        )
        .and_then(|mut s| {
            s.query_row(params![read.index.collection, fields], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .during(OP)?;
    let Some((id, covering)) = held else {
        return Ok(None);
    };
    // Resuming after an entry and key starts right there, even among many equal entries.
    // Where a page resumes, that bound replaces the range's own on that side: given both,
    // SQLite may seek by the range's and filter by the resume point, rereading every
    // earlier page of the range.
    let resumes = read.after.as_ref().filter(|(entry, _)| {
        if read.reverse {
            read.high.as_ref().is_none_or(|high| entry < high)
        } else {
            entry >= &read.low
        }
    });
    let mut conditions = Vec::new();
    if resumes.is_none() || read.reverse {
        conditions.push("i.entry >= :low");
    }
    if read.high.is_some() && (resumes.is_none() || !read.reverse) {
        conditions.push("i.entry < :high");
    }
    if resumes.is_some() {
        conditions.push(if read.reverse {
            "(i.entry, i.key) < (:after_entry, :after_key)"
        } else {
            "(i.entry, i.key) > (:after_entry, :after_key)"
        });
    }
    let order = if read.reverse {
        "i.entry DESC, i.key DESC"
    } else {
        "i.entry, i.key"
    };
    // A covering index holds its documents; another's are looked up one by one.
    let (columns, from) = if covering {
        (
            "i.entry, i.key, i.value, i.hlc_wall, i.hlc_counter, i.hlc_node",
            format!("index_{id} i"),
        )
    } else {
        conditions.push("d.value IS NOT NULL");
        (
            "i.entry, i.key, d.value, d.hlc_wall, d.hlc_counter, d.hlc_node",
            format!(
                "index_{id} i JOIN documents d ON d.collection = :collection AND d.key = i.key"
            ),
        )
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {columns} FROM {from} WHERE {} ORDER BY {order} LIMIT :limit",
            conditions.join(" AND ")
        ))
        .during(OP)?;
    let limit = i64::try_from(read.limit).unwrap_or(i64::MAX);
    let mut bind = |name: &str, value: &dyn rusqlite::ToSql| -> rusqlite::Result<()> {
        if let Some(at) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(at, value)?;
        }
        Ok(())
    };
    bind(":collection", &read.index.collection).during(OP)?;
    bind(":limit", &limit).during(OP)?;
    bind(":low", &read.low).during(OP)?;
    bind(":high", &read.high).during(OP)?;
    if let Some((entry, key)) = resumes {
        bind(":after_entry", entry).during(OP)?;
        bind(":after_key", key).during(OP)?;
    }
    let mut rows = stmt.raw_query();
    let mut page = IndexPage::default();
    // The last row's entry, in one buffer reused row after row.
    let mut entry: Vec<u8> = Vec::new();
    while let Some(r) = rows.next().during(OP)? {
        let key: String = r.get(1).during(OP)?;
        let value: String = r.get(2).during(OP)?;
        let hlc = stamp_after(r, 3, page.documents.last().map(|d| &d.hlc), OP)?;
        entry.clear();
        entry.extend_from_slice(r.get_ref(0).during(OP)?.as_blob().unwrap_or_default());
        page.documents.push(Document {
            collection: read.index.collection.clone(),
            key,
            value,
            hlc,
        });
    }
    page.last = page.documents.last().map(|d| (entry, d.key.clone()));
    Ok(Some(page))
}

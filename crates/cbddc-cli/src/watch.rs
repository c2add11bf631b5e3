//! `cbddc watch`: follow a node's change feed.

use crate::Target;
use anyhow::{Context, Result};
use cbddc_core::Change;
use cbddc_net::{ChangesAsk, FeedFrom, NetError};
use cbddc_query::live::Match;
use std::process::ExitCode;
use std::time::Duration;

/// How long one long poll waits for a change before asking again.
const POLL_WAIT: Duration = Duration::from_secs(10);

/// Where `--from` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum From {
    /// The current documents, then every change.
    Start,
    /// The next change.
    Now,
    /// The change after this position.
    After(u64),
}

impl std::str::FromStr for From {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "start" | "beginning" => Ok(Self::Start),
            "now" => Ok(Self::Now),
            n => n.parse().map(Self::After).map_err(|_| {
                format!("{n:?} is not a position: give a number printed by an earlier watch, `start` or `now`")
            }),
        }
    }
}

/// One change as a JSON line: the value goes out byte for byte as stored (the merged
/// document for a write merged field by field, with the paths it changed); with a live
/// query, what the change does to its result.
pub(crate) fn change_json(change: &Change, matched: Option<Match>) -> Result<String> {
    let entry = &change.entry;
    let position = change.position;
    let value = change.document_text().unwrap_or("null");
    let paths = match &change.merged {
        Some(merged) => format!(",\"paths\":{}", serde_json::to_string(&merged.paths)?),
        None => String::new(),
    };
    Ok(format!(
        "{{\"position\":{position},\"collection\":{},\"key\":{},\"value\":{value},\"deleted\":{}{paths},\"origin\":{},\"node\":{},\"hlc\":{}{}}}",
        serde_json::to_string(&entry.collection)?,
        serde_json::to_string(&entry.key)?,
        change.deletes(),
        serde_json::to_string(entry.origin.as_str())?,
        serde_json::to_string(entry.node.as_str())?,
        serde_json::to_string(&entry.hlc.to_string())?,
        matched
            .map(|m| format!(",\"match\":\"{}\"", m.as_str()))
            .unwrap_or_default(),
    ))
}

/// The exit code of a watch asked to resume from before what the node's feed holds.
pub(crate) const EXIT_FEED_COMPACTED: u8 = 3;

/// What a watch prints: every change, or (with `--where`) what moves a document into,
/// within or out of a query's result.
pub(crate) struct Watching {
    pub(crate) collection: Option<String>,
    pub(crate) as_json: bool,
    pub(crate) from: Option<From>,
    pub(crate) consumer: Option<String>,
    pub(crate) selector: Option<String>,
}

pub(crate) async fn watch(watching: Watching, target: &Target) -> Result<ExitCode> {
    let Watching {
        collection,
        as_json,
        from,
        consumer,
        selector,
    } = watching;
    if let Some(name) = &consumer {
        cbddc_core::validate_consumer_name(name)?;
    }
    // Parsed before connecting: a bad query is refused naming the part, nothing asked.
    let mut live = match &selector {
        Some(selector) => Some(cbddc_query::live::LiveQuery::new(
            cbddc_query::Query::parse(selector, &[], 1)?,
            from == Some(From::Start),
        )),
        None => None,
    };
    let mut client = target.connect().await?;
    let mut next = match (from, &consumer) {
        (Some(From::Start), _) => FeedFrom::Current,
        (Some(From::Now), _) | (None, None) => FeedFrom::End,
        (Some(From::After(position)), _) => FeedFrom::After(position),
        (None, Some(_)) => FeedFrom::Resume,
    };
    loop {
        let resume_hint = match &next {
            FeedFrom::After(position) => format!("; resume with --from {position}"),
            FeedFrom::Current | FeedFrom::Listing(_) => "; resume with --from start".into(),
            FeedFrom::End | FeedFrom::Resume => String::new(),
        };
        let ask = ChangesAsk {
            collection: collection.clone(),
            start: next.clone(),
            consumer: consumer.clone(),
        };
        let poll = client.changes(ask, POLL_WAIT);
        let page = tokio::select! {
            answer = poll => answer,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let page = match page {
            Ok(page) => page,
            Err(NetError::FeedCompacted { message, .. }) => {
                eprintln!("error: {message}");
                return Ok(ExitCode::from(EXIT_FEED_COMPACTED));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("the node stopped answering{resume_hint}"));
            }
        };
        for change in &page.changes {
            let (position, entry) = (change.position, &change.entry);
            if let Some(live) = &mut live {
                let Some(matched) = live.change(&entry.key, change.document().as_ref()) else {
                    continue;
                };
                if as_json {
                    say!("{}", change_json(change, Some(matched))?);
                } else {
                    let value = change.document_text().unwrap_or("deleted");
                    say!(
                        "{position}\t{}\t{}\t{}\t{value}",
                        matched.as_str(),
                        entry.collection,
                        entry.key
                    );
                }
                continue;
            }
            if as_json {
                say!("{}", change_json(change, None)?);
            } else {
                match (change.document_text(), &change.merged) {
                    (Some(value), None) => say!(
                        "{position}\tput\t{}\t{}\t{value}",
                        entry.collection,
                        entry.key
                    ),
                    (Some(value), Some(merged)) => say!(
                        "{position}\tmerge\t{}\t{}\t{value}\t{}",
                        entry.collection,
                        entry.key,
                        merged.paths.join(",")
                    ),
                    (None, _) => {
                        say!("{position}\tdelete\t{}\t{}", entry.collection, entry.key)
                    }
                }
            }
        }
        if page.synced
            && let FeedFrom::After(position) = page.next
        {
            // The current state is complete: the changes after `position` follow.
            if as_json {
                say!("{{\"position\":{position},\"synced\":true}}");
            } else {
                say!("{position}\tsynced");
            }
        }
        next = page.next;
    }
}

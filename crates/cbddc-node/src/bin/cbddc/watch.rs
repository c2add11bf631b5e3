//! `cbddc watch`: follow a node's change feed.

use crate::Target;
use anyhow::{Context, Result};
use cbddc_core::{Operation, OplogEntry};
use std::process::ExitCode;
use std::time::Duration;

/// How long one long poll waits for a change before asking again.
const POLL_WAIT: Duration = Duration::from_secs(10);

/// Where `--from` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum From {
    /// The first change the node recorded.
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

/// One change as a JSON line: the value goes out byte for byte as stored.
pub(crate) fn change_json(position: u64, entry: &OplogEntry) -> Result<String> {
    let value = match &entry.op {
        Operation::Put { value } => value.as_str(),
        Operation::Delete => "null",
    };
    Ok(format!(
        "{{\"position\":{position},\"collection\":{},\"key\":{},\"value\":{value},\"deleted\":{},\"origin\":{},\"node\":{},\"hlc\":{}}}",
        serde_json::to_string(&entry.collection)?,
        serde_json::to_string(&entry.key)?,
        matches!(entry.op, Operation::Delete),
        serde_json::to_string(entry.origin.as_str())?,
        serde_json::to_string(entry.node.as_str())?,
        serde_json::to_string(&entry.hlc.to_string())?,
    ))
}

pub(crate) async fn watch(
    collection: Option<String>,
    as_json: bool,
    from: From,
    target: &Target,
) -> Result<ExitCode> {
    let mut client = target.connect().await?;
    let (mut after, mut from_end) = match from {
        From::Start => (0, false),
        From::Now => (0, true),
        From::After(position) => (position, false),
    };
    loop {
        let poll = client.changes(collection.as_deref(), after, from_end, POLL_WAIT);
        let (changes, resume_after) = tokio::select! {
            answer = poll => answer.with_context(|| {
                if from_end {
                    "the node stopped answering".to_string()
                } else {
                    format!("the node stopped answering; resume with --from {after}")
                }
            })?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        for (position, entry) in &changes {
            if as_json {
                say!("{}", change_json(*position, entry)?);
            } else {
                match &entry.op {
                    Operation::Put { value } => say!(
                        "{position}\tput\t{}\t{}\t{value}",
                        entry.collection,
                        entry.key
                    ),
                    Operation::Delete => {
                        say!("{position}\tdelete\t{}\t{}", entry.collection, entry.key)
                    }
                }
            }
        }
        after = resume_after;
        from_end = false;
    }
}

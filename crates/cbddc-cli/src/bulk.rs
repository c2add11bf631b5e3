//! `cbddc import` and `cbddc export`: a collection as JSON lines `{"key": …, "value": …}`
//! (an import line may carry `"patch": {…}` instead of `"value"`: a JSON Merge Patch of
//! the document).

use crate::Target;
use anyhow::{Context, Result, bail};
use cbddc_core::LocalWrite;
use cbddc_net::PeerClient;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Progress goes to stderr at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    #[serde(borrow)]
    patch: Option<&'a RawValue>,
}

const LINE_SHAPE: &str = "each line must be an object {\"key\": \"…\", \"value\": <JSON>} or {\"key\": \"…\", \"patch\": {…}}";

/// A line of an import file, checked as the node would check it.
fn parse_line(collection: &str, text: &str) -> Result<LocalWrite, String> {
    let line: Line<'_> = serde_json::from_str(text).map_err(|e| format!("{e}; {LINE_SHAPE}"))?;
    let write = match (line.value, line.patch) {
        (Some(value), None) => {
            LocalWrite::put(collection, line.key.into_owned(), value.get().to_string())
        }
        (None, Some(patch)) => {
            LocalWrite::patch(collection, line.key.into_owned(), patch.get().to_string())
        }
        _ => {
            return Err(format!(
                "a line carries one of \"value\" and \"patch\"; {LINE_SHAPE}"
            ));
        }
    };
    write.validate().map_err(|e| e.to_string())?;
    Ok(write)
}

fn open_input(file: &PathBuf) -> Result<Box<dyn BufRead + Send>> {
    if file.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    let opened =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    Ok(Box::new(std::io::BufReader::new(opened)))
}

/// Reads lines on a thread of its own, so a slow disk or pipe never stalls the runtime.
fn read_lines(file: &PathBuf) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<String>>> {
    let mut input = open_input(file)?;
    let (tx, rx) = tokio::sync::mpsc::channel(4_096);
    std::thread::Builder::new()
        .name("cbddc-import-reader".into())
        .spawn(move || {
            loop {
                let mut line = String::new();
                match input.read_line(&mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.blocking_send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        })
        .context("cannot start the reading thread")?;
    Ok(rx)
}

async fn send_batch(client: &mut PeerClient, batch: &mut Vec<LocalWrite>) -> Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    Ok(client.write_batch(std::mem::take(batch)).await?)
}

pub(crate) async fn import(
    collection: &str,
    file: &PathBuf,
    batch_size: usize,
    skip: u64,
    target: &Target,
) -> Result<ExitCode> {
    cbddc_core::validate_collection(collection)?;
    let batch_size = batch_size.clamp(1, 10_000);
    let mut client = target.connect().await?;
    let mut lines = read_lines(file)?;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut number = 0u64;
    let mut imported = 0u64;
    let mut batch = Vec::with_capacity(batch_size);
    while let Some(line) = lines.recv().await {
        number += 1;
        let line = line.with_context(|| format!("cannot read line {number}"))?;
        if number <= skip {
            continue;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(collection, text) {
            Ok(write) => batch.push(write),
            Err(reason) => {
                // Everything before the bad line goes in; nothing from it on.
                imported += send_batch(&mut client, &mut batch).await?;
                bail!(
                    "line {number}: {reason}\n{imported} documents from the lines before it were imported, nothing from it on; fix it and resume with --skip {}",
                    number - 1
                );
            }
        }
        if batch.len() >= batch_size {
            let first = number + 1 - batch.len() as u64;
            imported += send_batch(&mut client, &mut batch)
                .await
                .with_context(|| {
                    format!("the batch of lines {first}..={number} was refused; it stored nothing, the {imported} documents before it are imported; resume with --skip {}", first - 1)
                })?;
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                let rate = imported as f64 / started.elapsed().as_secs_f64().max(1e-3);
                eprintln!("imported {imported} documents ({rate:.0}/s), line {number}");
            }
        }
    }
    imported += send_batch(&mut client, &mut batch).await?;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {imported} documents into {collection} in {elapsed:.1} s ({:.0}/s)",
        imported as f64 / elapsed.max(1e-3)
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn export(collection: &str, target: &Target) -> Result<ExitCode> {
    let mut client = target.connect().await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after: Option<String> = None;
    let quiet_on_closed = |e: std::io::Error| -> Result<()> {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        Err(e.into())
    };
    loop {
        let (page, more) = client.list(collection, after.as_deref(), 1_000).await?;
        for doc in &page {
            // The value goes out byte for byte as stored, so an import restores it exactly.
            if let Err(e) = writeln!(
                out,
                "{{\"key\":{},\"value\":{}}}",
                serde_json::to_string(&doc.key)?,
                doc.value
            ) {
                quiet_on_closed(e)?;
            }
        }
        after = page.last().map(|d| d.key.clone());
        if !more || after.is_none() {
            break;
        }
    }
    if let Err(e) = out.flush() {
        quiet_on_closed(e)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_line;
    use cbddc_core::Edit;

    #[test]
    fn a_line_keeps_its_value_byte_for_byte() {
        let write = parse_line(
            "c",
            r#"{"key": "k", "value": {"x": 0.30000000000000004, "y" : [1,2]}}"#,
        )
        .unwrap();
        assert_eq!(write.key, "k");
        assert_eq!(
            write.edit,
            Edit::Put(r#"{"x": 0.30000000000000004, "y" : [1,2]}"#.into())
        );
        let write = parse_line("c", r#"{"key":"a\"b","value":1}"#).unwrap();
        assert_eq!(write.key, "a\"b");
    }

    #[test]
    fn a_line_may_carry_a_patch_instead_of_a_value() {
        let write = parse_line("c", r#"{"key": "k", "patch": {"status": "open"}}"#).unwrap();
        assert_eq!(write.edit, Edit::Patch(r#"{"status": "open"}"#.into()));
        for bad in [
            r#"{"key": "k", "patch": [1]}"#,
            r#"{"key": "k", "patch": {"a": 1}, "value": 1}"#,
        ] {
            assert!(parse_line("c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        for bad in [
            r#"{"key": "k"}"#,
            r#"{"value": 1}"#,
            r#"{"key": 1, "value": 1}"#,
            r#"{"key": "k", "value": 1, "extra": 2}"#,
            r#"{"key": "", "value": 1}"#,
            "not json",
        ] {
            assert!(parse_line("c", bad).is_err(), "{bad}");
        }
    }
}

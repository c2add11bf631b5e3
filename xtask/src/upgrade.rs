//! `cargo xtask upgrade`: this build against an older release, through both binaries.
//!
//! The older release is checked out in a worktree of its own and built in a target
//! directory of its own, both under `target/upgrade/<commit>/` and kept between runs.
//! The scenarios are the ignored tests `t97_upgrade::upgrade_*` of the CLI's test suite,
//! run with the older binary in `CBDDC_OLD_BINARY`; each appends a row to a report that is
//! printed as a table.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Releases by tag, for clones that do not carry the tags.
const RELEASES: &[(&str, &str)] = &[("v0.1.0", "2a25e7e048a362aa0ce6431909acb3e8b5fae672")];

pub struct Options {
    pub from: String,
    pub without_negotiation: bool,
}

fn git(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit `from` names: a tag, a branch or a commit of this repository, or a release
/// this tool knows by name.
fn resolve(root: &Path, from: &str) -> Result<String> {
    let known = RELEASES
        .iter()
        .find(|(tag, _)| *tag == from)
        .map(|(_, c)| *c);
    for candidate in [Some(from), known].into_iter().flatten() {
        if let Ok(commit) = git(
            root,
            &["rev-parse", "--verify", &format!("{candidate}^{{commit}}")],
        ) {
            return Ok(commit);
        }
    }
    bail!(
        "{from} is not a commit of this repository{}: fetch the full history (`git fetch --unshallow --tags`) or name a commit",
        known
            .map(|c| format!(" (it is release commit {c})"))
            .unwrap_or_default()
    )
}

/// Checks out `commit` under `target/upgrade/<commit>/src` (once) and builds its `cbddc`
/// in `target/upgrade/<commit>/target`; returns the binary.
fn build_old(root: &Path, from: &str, commit: &str) -> Result<PathBuf> {
    let base = root.join("target/upgrade").join(commit);
    let src = base.join("src");
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&base)?;
        let _ = git(root, &["worktree", "prune"]);
        eprintln!("== checking out {from} ({commit}) in {}", src.display());
        git(
            root,
            &[
                "worktree",
                "add",
                "--force",
                "--detach",
                &src.to_string_lossy(),
                commit,
            ],
        )?;
    }
    eprintln!(
        "== building cbddc of {from} in {} (kept between runs)",
        base.join("target").display()
    );
    let status = Command::new(env!("CARGO"))
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", base.join("target"))
        .args(["build", "--bin", "cbddc"])
        .status()
        .context("cannot run cargo build for the older release")?;
    if !status.success() {
        bail!("building cbddc of {from} failed (see above)");
    }
    Ok(base.join("target/debug/cbddc"))
}

pub fn run(root: &Path, options: Options) -> Result<()> {
    let commit = resolve(root, &options.from)?;
    let old = build_old(root, &options.from, &commit)?;
    let report = root.join("target/upgrade/report.jsonl");
    let _ = std::fs::remove_file(&report);
    eprintln!(
        "== running the mixed-version scenarios against {} ({}){}",
        options.from,
        &commit[..12],
        if options.without_negotiation {
            ", this build speaking only its newest protocol"
        } else {
            ""
        }
    );
    let started = std::time::Instant::now();
    let mut test = Command::new(env!("CARGO"));
    test.current_dir(root)
        // `--workspace`, as `cargo xtask test` builds: with `-p cbddc-cli` cargo unifies
        // features over that package alone and builds tokio, SQLite and every crate of
        // ours a second time (about a gigabyte more on a CI disk that may have little).
        .args([
            "test",
            "--workspace",
            "--test",
            "cli",
            "t97_upgrade::upgrade_",
            "--",
            "--ignored",
            "--test-threads=1",
        ])
        .env("CBDDC_OLD_BINARY", &old)
        .env("CBDDC_UPGRADE_REPORT", &report);
    if options.without_negotiation {
        test.env("CBDDC_UPGRADE_WITHOUT_NEGOTIATION", "1");
    }
    let status = test.status().context("running cargo test")?;
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    if !status.success() && text.trim().is_empty() {
        bail!(
            "the mixed-version scenarios did not run against {}: cargo test failed before any reported (see above)",
            options.from
        );
    }
    println!(
        "\n{:<54} {:>12} {:>5} {:>8} {:>14}  result",
        "scenario", "acknowledged", "lost", "refused", "converged in"
    );
    let mut failed = 0;
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let ok = row["ok"].as_bool().unwrap_or(false);
        failed += usize::from(!ok);
        println!(
            "{:<54} {:>12} {:>5} {:>8} {:>11} ms  {}",
            row["scenario"].as_str().unwrap_or("?"),
            row["acknowledged"].as_u64().unwrap_or(0),
            row["lost"].as_u64().unwrap_or(0),
            row["refused"].as_u64().unwrap_or(0),
            row["slowest_convergence_ms"].as_u64().unwrap_or(0),
            if ok { "ok" } else { "FAILED" }
        );
        for problem in row["problems"].as_array().into_iter().flatten() {
            println!("    {}", problem.as_str().unwrap_or("?"));
        }
    }
    println!(
        "\n{} scenarios in {:.0} s against {}",
        text.lines().count(),
        started.elapsed().as_secs_f64(),
        options.from
    );
    if !status.success() || failed > 0 {
        bail!(
            "{failed} of {} mixed-version scenarios failed against {}",
            text.lines().count(),
            options.from
        );
    }
    Ok(())
}

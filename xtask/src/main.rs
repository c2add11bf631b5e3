//! `cargo xtask`: project automation that needs more than one cargo command.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

mod cluster;
mod modules;
mod test;
mod upgrade;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "CBDDC project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the whole test suite (`cargo test --workspace`), after installing what the
    /// multi-host and browser tests need when it is missing (iproute2, chromium,
    /// chromium-driver; with apt-get, as root). Without root it names what to install.
    /// Arguments after `--` go to `cargo test`.
    Test {
        /// Passed on to `cargo test --workspace`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show the module cycles of every crate (a module that imports, directly or through
    /// others, a module that imports it back); exits non-zero if there is one.
    Modules,
    /// Run the criterion benchmarks and print each one as a ratio of its baseline
    /// (raw SQLite measured in the same run).
    Bench {
        /// Print the table from the figures of the last run (target/cbddc-bench) without
        /// running any benchmark.
        #[arg(long)]
        report_only: bool,
    },
    /// Run a local cluster: build cbddc, write a configuration for each node (loopback
    /// ports, every node a static peer of the others), start them, and show a live table
    /// (node, port, leader, peers alive, documents) until Ctrl-C stops them cleanly.
    Cluster {
        /// How many nodes (node-a, node-b, …).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Port of node-a; the others follow.
        #[arg(long, default_value_t = 27000)]
        base_port: u16,
        /// Where configurations, data and logs go.
        #[arg(long, default_value = "target/xtask-cluster")]
        dir: PathBuf,
        /// Build and run the release binary.
        #[arg(long)]
        release: bool,
    },
    /// Run the seeded simulations of the control plane for many seeds (the test suite
    /// runs a few hundred): reconfiguration under drops, delays and reorders, and a
    /// member cut off or paused during its removal, checked for lost acknowledged writes;
    /// then the field-merge properties over 20 cases per seed. A failing seed is printed
    /// with the command that replays it.
    Sim {
        /// Seeds per simulation (1..=N).
        #[arg(long, default_value_t = 5_000)]
        seeds: u64,
    },
    /// Run the multi-host fault scenarios long: three `cbddc` processes, each on its own
    /// host (a network namespace on a bridge; needs root and iproute2), through
    /// partitions with writes on both sides, a kill -9 loop under write load, a paused
    /// leader and follower, discovery by broadcast with a live port change and the
    /// leader's death. Every acknowledged write is checked afterwards; prints a table.
    Faults {
        /// Chooses which host each fault hits; the same seed replays the same faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rounds of each scenario (`cargo test` runs one).
        #[arg(long, default_value_t = 5)]
        rounds: u64,
    },
    /// Run the mixed-version scenarios against an older release: build it in a worktree
    /// and target directory of its own (under target/upgrade/, kept between runs), then run
    /// both binaries side by side — a rolling upgrade of three peers under writes, the same
    /// for a [cluster] of three with a reconfiguration decided in the mixed cluster, each
    /// release's CLI against the other's node, and a node rolled back to the old binary.
    /// Prints a table (acknowledged, lost, refused writes, slowest convergence); exits
    /// non-zero if a scenario failed.
    Upgrade {
        /// The older release: a tag (v0.1.0), a branch or a commit.
        #[arg(long, default_value = "v0.1.0")]
        from: String,
        /// Run this build's nodes on their newest protocol only (min_protocol_version), to
        /// show what negotiation buys: the scenarios are expected to fail.
        #[arg(long)]
        without_negotiation: bool,
    },
}

/// A benchmark, its baseline, and how to read them: both report elements per second.
struct Comparison {
    label: &'static str,
    group: &'static str,
    subject: &'static str,
    baseline: &'static str,
    target: Option<f64>,
}

const COMPARISONS: &[Comparison] = &[
    Comparison {
        label: "batched puts (1,000 per call) vs raw SQLite batches of 1,000",
        group: "puts",
        subject: "store_batch_1000",
        baseline: "raw_sqlite_batch_1000",
        target: Some(0.5),
    },
    Comparison {
        label: "single puts (one commit each) vs raw SQLite single-row commits",
        group: "puts",
        subject: "store_single_put",
        baseline: "raw_sqlite_single",
        target: None,
    },
    Comparison {
        label: "64 tasks putting concurrently (group commit) vs raw single-row commits",
        group: "puts",
        subject: "store_concurrent_64_tasks",
        baseline: "raw_sqlite_single",
        target: None,
    },
    Comparison {
        label: "catch-up of 100,000 documents from a peer vs raw SQLite insert of the same rows",
        group: "catch_up_100k",
        subject: "node_catch_up",
        baseline: "raw_sqlite_insert",
        target: Some(0.75),
    },
    Comparison {
        label: "catch-up of 100,000 field entries vs raw SQLite insert of the same rows",
        group: "catch_up_100k",
        subject: "node_catch_up_field_entries",
        // The rows a field entry stores: oplog entry, document, field state, change.
        baseline: "raw_sqlite_insert_field_rows",
        target: Some(0.8),
    },
    Comparison {
        label: "catch-up of 100,000 field entries vs raw SQLite insert of a whole entry's rows",
        group: "catch_up_100k",
        subject: "node_catch_up_field_entries",
        baseline: "raw_sqlite_insert",
        target: None,
    },
    Comparison {
        label: "one-field patches of 4 KiB documents (1,000 per call) vs whole puts of them",
        group: "field_merge",
        subject: "patch_batch_1000",
        baseline: "put_batch_1000",
        target: Some(0.7),
    },
    Comparison {
        label: "handshakes/s: protocol 2 (node keys, XXpsk0) vs protocol 1 (cluster key only, NNpsk0)",
        group: "handshake",
        subject: "v2_node_keys_xxpsk0",
        baseline: "v1_cluster_key_nnpsk0",
        target: None,
    },
    Comparison {
        label: "handshakes/s: protocol 2 vs a bare loopback TCP connect",
        group: "handshake",
        subject: "v2_node_keys_xxpsk0",
        baseline: "tcp_connect",
        target: None,
    },
    Comparison {
        label: "puts/s with a change-feed subscriber reading every change vs none",
        group: "feed",
        subject: "puts_with_subscriber",
        baseline: "puts_without_subscriber",
        target: None,
    },
    Comparison {
        label: "cbddc import of 10,000 JSON lines vs Node::write in batches of 1,000",
        group: "import",
        subject: "cli_import",
        baseline: "node_write_batches",
        target: None,
    },
];

fn main() -> std::process::ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with its causes, never a backtrace: this is a report, not a crash.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        // cargo test's own exit code, so CI and scripts see a failing suite as such.
        Task::Test { args } => std::process::exit(test::test(&args)?),
        Task::Modules => {
            if !modules::check(&workspace_root())? {
                bail!("module cycles found: move what both sides share into a leaf module");
            }
            Ok(())
        }
        Task::Bench { report_only } => bench(report_only),
        Task::Sim { seeds } => sim(seeds),
        Task::Faults { seed, rounds } => faults(seed, rounds),
        Task::Upgrade {
            from,
            without_negotiation,
        } => upgrade::run(
            &workspace_root(),
            upgrade::Options {
                from,
                without_negotiation,
            },
        ),
        Task::Cluster {
            nodes,
            base_port,
            dir,
            release,
        } => {
            let root = workspace_root();
            let dir = if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            };
            cluster::run(
                &root,
                cluster::Options {
                    nodes,
                    base_port,
                    dir,
                    release,
                },
            )
        }
    }
}

/// The long run of the simulations; a failure names its seed (and `SIM_SEED=… cargo test
/// -p cbddc-election …` replays it).
fn sim(seeds: u64) -> Result<()> {
    eprintln!("running the handover simulations over seeds 1..={seeds} (release build)");
    release_tests(
        &[
            "-p",
            "cbddc-election",
            "--lib",
            "handover_sim",
            "--",
            "--nocapture",
        ],
        ("SIM_HANDOVER_SEEDS", seeds),
        "a simulation failed: its seed is printed above",
    )?;
    eprintln!("{seeds} seeds of each simulation passed");
    let cases = seeds.saturating_mul(20);
    eprintln!(
        "running the field-merge properties over {cases} cases each (five replicas, reordering, duplication, partitions, restarts)"
    );
    release_tests(
        &["-p", "cbddc-core", "--lib", "field_merge_props"],
        ("CBDDC_MERGE_CASES", cases),
        "a field-merge property failed: proptest printed the smallest case above",
    )?;
    eprintln!("{cases} cases of each field-merge property passed");
    Ok(())
}

/// Runs `cargo test --release` with `args` and one setting in the environment; says how
/// long it took, and fails with `failed` if a test did.
fn release_tests(args: &[&str], (name, value): (&str, u64), failed: &str) -> Result<()> {
    let started = std::time::Instant::now();
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["test", "--release"])
        .args(args)
        .env(name, value.to_string())
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("{failed}");
    }
    eprintln!("   in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn faults(seed: u64, rounds: u64) -> Result<()> {
    let root = workspace_root();
    let dir = root.join("target/cbddc-faults");
    std::fs::create_dir_all(&dir)?;
    let report = dir.join(format!("seed-{seed}.jsonl"));
    let _ = std::fs::remove_file(&report);
    eprintln!("running the multi-host fault scenarios: seed {seed}, {rounds} rounds each");
    let started = std::time::Instant::now();
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "test",
            "-p",
            "cbddc-cli",
            "--test",
            "cli",
            "t99_faults::hosts_",
            "--",
            "--test-threads=1",
        ])
        .env("CBDDC_FAULT_SEED", seed.to_string())
        .env("CBDDC_FAULT_ROUNDS", rounds.to_string())
        .env("CBDDC_FAULT_REPORT", &report)
        .status()
        .context("running cargo test")?;
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    println!(
        "\n{:<60} {:>6} {:>12} {:>8} {:>5} {:>14}",
        "scenario", "rounds", "acknowledged", "refused", "lost", "converged in"
    );
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line)?;
        println!(
            "{:<60} {:>6} {:>12} {:>8} {:>5} {:>11} ms",
            row["scenario"].as_str().unwrap_or("?"),
            row["rounds"].as_u64().unwrap_or(0),
            row["acknowledged"].as_u64().unwrap_or(0),
            row["refused"].as_u64().unwrap_or(0),
            row["lost"].as_u64().unwrap_or(0),
            row["slowest_convergence_ms"].as_u64().unwrap_or(0)
        );
    }
    if !status.success() {
        bail!(
            "a fault scenario failed (its message is above); replay it with `cargo xtask faults --seed {seed} --rounds {rounds}`"
        );
    }
    eprintln!(
        "every scenario held in {:.0} s: nothing acknowledged was lost",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every benchmark `cargo xtask bench` runs, in order: (package, bench).
const BENCHES: [(&str, &str); 15] = [
    ("cbddc-store", "puts"),
    ("cbddc-net", "handshake"),
    ("cbddc-node", "catch_up"),
    ("cbddc-cli", "data_tools"),
    ("cbddc-node", "reconfigure"),
    ("cbddc-cli", "cluster"),
    ("cbddc-election", "control_reconfigure"),
    ("cbddc-node", "membership"),
    ("cbddc-node", "compaction"),
    ("cbddc-node", "queries"),
    ("cbddc-node", "index_writes"),
    ("cbddc-node", "field_merge"),
    ("cbddc-cli", "cluster_cost"),
    ("cbddc-cli", "hostile"),
    ("cbddc-cli", "hosts"),
];

fn bench(report_only: bool) -> Result<()> {
    let root = workspace_root();
    let benches = if report_only { &[][..] } else { &BENCHES[..] };
    for (package, bench) in benches {
        eprintln!("== cargo bench -p {package} --bench {bench}");
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["bench", "-p", package, "--bench", bench])
            .status()
            .with_context(|| format!("cannot run cargo bench for {package}"))?;
        if !status.success() {
            bail!("cargo bench -p {package} --bench {bench} failed ({status})");
        }
    }
    println!(
        "\n{:<80} {:>14} {:>14} {:>7}",
        "comparison", "subject/s", "baseline/s", "ratio"
    );
    let mut missed = Vec::new();
    for c in COMPARISONS {
        let subject = elements_per_second(&root, c.group, c.subject)?;
        let baseline = elements_per_second(&root, c.group, c.baseline)?;
        let ratio = subject / baseline;
        let verdict = match c.target {
            Some(t) if ratio < t => {
                missed.push(format!(
                    "{}: {:.0}% of its baseline, target {:.0}%",
                    c.label,
                    ratio * 100.0,
                    t * 100.0
                ));
                format!("  (below the {:.0}% target)", t * 100.0)
            }
            Some(t) => format!("  (target {:.0}%)", t * 100.0),
            None => String::new(),
        };
        println!(
            "{:<80} {:>14.0} {:>14.0} {:>6.0}%{verdict}",
            c.label,
            subject,
            baseline,
            ratio * 100.0
        );
    }
    println!("\n{:<80} {:>14}", "latency", "median");
    for (label, group, bench) in MEDIANS {
        let median_ms = median_ns(&root, group, bench)? / 1e6;
        println!("{label:<80} {median_ms:>11.1} ms");
    }
    let cluster_path = root.join("target/cbddc-bench/cluster.json");
    let cluster: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cluster_path)
            .with_context(|| format!("cannot read {}", cluster_path.display()))?,
    )?;
    let figure = |name: &str| cluster[name].as_f64().unwrap_or(f64::NAN);
    println!(
        "{:<80} {:>11.1} ms (max {:.1} ms over {} rounds)",
        "failover: kill -9 of the leader -> both survivors agree",
        figure("failover_median_ms"),
        figure("failover_max_ms"),
        cluster["failover_rounds"]
    );
    println!(
        "   settings: {}",
        cluster["failover_settings"].as_str().unwrap_or("?")
    );
    for (label, median, max, bound) in [
        (
            "paused leader (SIGSTOP) -> both survivors report it unreachable",
            "paused_unreachable_median_ms",
            "paused_unreachable_max_ms",
            // 1.5 s by design (a ping 500 ms after the last exchange, answered within
            // 1 s), plus the benchmark's own status polling.
            1_600.0,
        ),
        (
            "paused leader (SIGSTOP) -> both survivors follow the next node",
            "paused_replaced_median_ms",
            "paused_replaced_max_ms",
            2_000.0,
        ),
    ] {
        timed_row(
            label,
            figure(median),
            figure(max),
            &cluster["paused_rounds"],
            bound,
            &mut missed,
        );
    }
    println!(
        "   settings: {}",
        cluster["paused_settings"].as_str().unwrap_or("?")
    );
    for (label, max) in [
        (
            "two gateway leaders at once after a paused leader resumes (longest window)",
            "two_leaders_after_resume_max_ms",
        ),
        (
            "two gateway leaders at once after a smaller node returns (longest window)",
            "two_leaders_after_return_max_ms",
        ),
    ] {
        let verdict = if figure(max) <= 100.0 {
            "bound 100 ms"
        } else {
            missed.push(format!("{label}: {:.0} ms, bound 100 ms", figure(max)));
            "above the 100 ms bound"
        };
        println!(
            "{label:<80} {:>11.1} ms ({} rounds; {verdict})",
            figure(max),
            cluster["windows_rounds"]
        );
    }
    println!(
        "   settings: {}",
        cluster["windows_settings"].as_str().unwrap_or("?")
    );
    println!(
        "{:<80} {:>11.2} ms p50, {:.2} ms p99",
        "write propagation: put on node a -> visible on node c",
        figure("propagation_p50_ms"),
        figure("propagation_p99_ms")
    );
    println!(
        "   settings: {}",
        cluster["propagation_settings"].as_str().unwrap_or("?")
    );
    missed.extend(print_membership(&root)?);
    missed.extend(print_compaction(&root)?);
    missed.extend(print_field_merge(&root)?);
    missed.extend(print_queries(&root)?);
    missed.extend(print_cluster_cost(&root)?);
    missed.extend(print_hostile(&root)?);
    missed.extend(print_hosts(&root)?);
    if !missed.is_empty() {
        bail!("{} bound(s) missed: {}", missed.len(), missed.join("; "));
    }
    println!("\nevery bound met");
    Ok(())
}

fn read_json(root: &Path, name: &str) -> Result<serde_json::Value> {
    let path = root.join("target/cbddc-bench").join(name);
    Ok(serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )?)
}

/// Queries on 1,000,000 documents beside raw SQLite, writes with and without indexes,
/// and the memory of reading a whole collection. Returns the figures that missed.
fn print_queries(root: &Path) -> Result<Vec<String>> {
    let report = read_json(root, "queries.json")?;
    let f = |name: &str| report[name].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n{:<80} {:>14} {:>14} {:>7}",
        "queries (documents/s)", "ours", "baseline", "ratio"
    );
    let mut missed = Vec::new();
    for (label, ours, baseline, target) in [
        (
            "indexed equality (~100 documents each) vs raw SQLite on a plain indexed column",
            "equality_per_second",
            "raw_equality_per_second",
            0.8,
        ),
        (
            "the same through a covering index (covering = true)",
            "covering_equality_per_second",
            "raw_equality_per_second",
            0.8,
        ),
        (
            "range returning 1% (10,000 documents) vs raw SQLite on a plain indexed column",
            "range_per_second",
            "raw_range_per_second",
            0.7,
        ),
        (
            "the same through a covering index",
            "covering_range_per_second",
            "raw_range_per_second",
            0.7,
        ),
        (
            "writes (batches of 1,000) with two indexes vs with none",
            "writes_two_indexes_per_second",
            "writes_no_index_per_second",
            0.6,
        ),
        (
            "the same with two covering indexes",
            "writes_two_covering_indexes_per_second",
            "writes_no_index_per_second",
            0.6,
        ),
    ] {
        let ratio = f(ours) / f(baseline);
        let verdict = if ratio >= target {
            format!("  (target {:.0}%)", target * 100.0)
        } else {
            missed.push(format!(
                "{label}: {:.0}% of its baseline, target {:.0}%",
                ratio * 100.0,
                target * 100.0
            ));
            format!("  (below the {:.0}% target)", target * 100.0)
        };
        println!(
            "{label:<80} {:>14.0} {:>14.0} {:>6.0}%{verdict}",
            f(ours),
            f(baseline),
            ratio * 100.0
        );
    }
    if f("sorted_page_per_second").is_finite() {
        println!(
            "{:<80} {:>14.0} {:>14.0} {:>6.0}%  (no bound)",
            "first page of 100 of a range sorted by its indexed field vs raw ORDER BY … LIMIT 100",
            f("sorted_page_per_second"),
            f("raw_sorted_page_per_second"),
            f("sorted_page_ratio") * 100.0
        );
        println!(
            "{:<80} {:>14.0} {:>14.0} {:>6.0}%  (no bound)",
            "the same through a covering index",
            f("covering_sorted_page_per_second"),
            f("raw_sorted_page_per_second"),
            f("covering_sorted_page_ratio") * 100.0
        );
    }
    let raw_writes = f("raw_writes_two_indexes_per_second") / f("raw_writes_no_index_per_second");
    if raw_writes.is_finite() {
        println!(
            "   raw SQLite on the same writes, two indexed columns vs none: {:.0} vs {:.0} rows/s, {:.0}% (the floor of the ratio above)",
            f("raw_writes_two_indexes_per_second"),
            f("raw_writes_no_index_per_second"),
            raw_writes * 100.0
        );
    }
    println!(
        "   building four indexes (two covering) on {} documents each: {:.1} s ({:.0} entries/s)",
        report["documents"],
        f("index_build_ms") / 1e3,
        f("index_build_per_second")
    );
    print_index_writes(root)?;
    for (label, small, large) in [
        (
            "peak memory of a find reading the whole collection",
            "find_peak_mib_small",
            "find_peak_mib_large",
        ),
        (
            "peak memory of list paging through the whole collection",
            "list_peak_mib_small",
            "list_peak_mib_large",
        ),
    ] {
        // Flat: ten times the documents may not cost ten times the memory; a few MiB of
        // page cache and allocator slack are not growth.
        let flat = f(large) <= 2.0 * f(small).max(4.0);
        if !flat {
            missed.push(format!("{label}: not flat"));
        }
        println!(
            "{:<80} {:>11.1} MB {:>11.1} MB {:>7}",
            format!(
                "{label}: {} vs {} documents",
                report["documents"], report["small"]
            ),
            f(large),
            f(small),
            if flat { "flat" } else { "GROWS" }
        );
    }
    Ok(missed)
}

/// Writes into a collection with two indexes as it grows, a query every 10 batches,
/// beside the same writes without an index (figures, no bound).
fn print_index_writes(root: &Path) -> Result<()> {
    let report = read_json(root, "index_writes.json")?;
    for step in report["steps"].as_array().into_iter().flatten() {
        let f = |name: &str| step[name].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<80} {:>14.0} {:>14.0} {:>6.0}%  (no bound)",
            format!(
                "writes with two indexes vs none, a query every 10 batches, up to {} documents",
                step["documents"]
            ),
            f("two_indexes_per_second"),
            f("no_index_per_second"),
            f("ratio") * 100.0
        );
    }
    Ok(())
}

/// The bytes one entry takes on the wire: a one-field patch of a 4 KiB document beside a
/// put of it. Returns the figures that missed their bound.
fn print_field_merge(root: &Path) -> Result<Vec<String>> {
    let report = read_json(root, "field_merge.json")?;
    let f = |name: &str| report[name].as_f64().unwrap_or(f64::NAN);
    let ratio = f("patch_entry_bytes") / f("put_entry_bytes");
    let ok = ratio <= 0.1;
    println!(
        "\n{:<80} {:>11.0} B {:>11.0} B {:>6.1}%{}",
        format!(
            "on the wire: a one-field patch of a {:.0}-byte document vs a put of it",
            f("document_bytes")
        ),
        f("patch_entry_bytes"),
        f("put_entry_bytes"),
        ratio * 100.0,
        if ok {
            "  (bound 10%: the field, not the document)"
        } else {
            "  (above the 10% bound)"
        }
    );
    // cr-sqlite (a peer that merges per column) does not run here: its authors report
    // merging 11,000-20,000 changes/s.
    let ours = elements_per_second(root, "catch_up_100k", "node_catch_up_field_entries")?;
    println!(
        "{:<80} {:>14.0} {:>14} {:>7}",
        "field entries merged/s in a catch-up vs cr-sqlite's reported 11,000-20,000 changes/s",
        ours,
        "11000-20000",
        "(peer)"
    );
    Ok(if ok {
        Vec::new()
    } else {
        vec!["a one-field patch on the wire".to_string()]
    })
}

/// A long-lived node's oplog and file after 1,000,000 overwrites on 10,000 keys, beside a
/// fresh database of the same documents. Returns the figures that missed their bound.
fn print_compaction(root: &Path) -> Result<Vec<String>> {
    let report = read_json(root, "compaction.json")?;
    let f = |name: &str| report[name].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n{:<80} {:>14} {:>14} {:>7}",
        "compaction", "ours", "baseline", "bound"
    );
    let mut missed = Vec::new();
    let verdict = |ok: bool| if ok { "" } else { "  (above its bound)" };
    // The same two bounds for whole overwrites and for one-field patches: entries per
    // live document (or field) at most 2, the file at most twice a fresh one.
    for (what, entries, label, prefix, size_label) in [
        (
            "oplog entries per live document",
            "entries_per_document",
            format!(
                "oplog entries per live document after {} overwrites on {} keys",
                report["writes"], report["keys"]
            ),
            "",
            "database file size after compaction",
        ),
        (
            "oplog entries per live field after patches",
            "entries_per_live_field",
            format!(
                "oplog entries per live field after {} patches of random fields on {} documents",
                report["patches"], report["patched_documents"]
            ),
            "patched_",
            "database file size after patches and compaction",
        ),
    ] {
        let per = f(entries);
        println!(
            "{:<80} {:>14.2} {:>14} {:>7}{}",
            label,
            per,
            "",
            "2",
            verdict(per <= 2.0)
        );
        if per.is_nan() || per > 2.0 {
            missed.push(what.to_string());
        }
        let ratio = f(&format!("{prefix}size_ratio"));
        println!(
            "{:<80} {:>11.2} MB {:>11.2} MB {:>6.2}x{}",
            "database file after them vs a fresh one holding the same documents",
            f(&format!("{prefix}database_bytes")) / 1e6,
            f(&format!("fresh_{prefix}database_bytes")) / 1e6,
            ratio,
            verdict(ratio <= 2.0)
        );
        if ratio.is_nan() || ratio > 2.0 {
            missed.push(size_label.to_string());
        }
    }
    println!(
        "   {:.0} patches/s with compaction running; field states left {}",
        f("patches_per_second"),
        report["field_states_left"]
    );
    println!(
        "   {:.0} writes/s with compaction running; it caught up {:.0} ms after the last write ({})",
        f("writes_per_second"),
        f("compaction_settle_ms"),
        report["settings"].as_str().unwrap_or("?")
    );
    println!(
        "{:<80} {:>11.2} MB {:>11.2} MB {:>7}",
        format!(
            "{} documents deleted and compacted: the feed keeping the deletes vs not",
            report["feed_deletes"]
        ),
        f("feed_kept_bytes") / 1e6,
        f("feed_dropped_bytes") / 1e6,
        ""
    );
    println!(
        "   the change feed's cost: {:.0} bytes per kept delete (feed_retention_ms; 0 keeps none)",
        f("feed_bytes_per_kept_delete")
    );
    Ok(missed)
}

/// The control plane's figures, each beside its baseline from the same run. Returns the
/// figures that missed their bound.
fn print_membership(root: &Path) -> Result<Vec<String>> {
    let control = read_json(root, "control.json")?;
    let membership = read_json(root, "membership.json")?;
    let f = |v: &serde_json::Value, name: &str| v[name].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n{:<80} {:>14} {:>14} {:>7}",
        "membership", "ours", "baseline", "ratio"
    );
    let row = |label: &str, ours: f64, baseline: f64| {
        println!(
            "{label:<80} {ours:>11.3} ms {baseline:>11.3} ms {:>6.1}x",
            ours / baseline
        );
    };
    row(
        "reconfigure -> next configuration decides an entry (SQLite) vs bare omnipaxos",
        f(&control, "ours_median_ms"),
        f(&control, "bare_median_ms"),
    );
    row(
        "reconfigure -> next configuration decides an entry (in memory) vs bare omnipaxos",
        f(&control, "ours_in_memory_median_ms"),
        f(&control, "bare_median_ms"),
    );
    println!(
        "   ticks taken: ours {}, bare {} ({})",
        control["ours_ticks"],
        control["bare_ticks"],
        control["settings"].as_str().unwrap_or("?")
    );
    let mut missed = Vec::new();
    for (documents, ours, floor) in [
        (
            &membership["documents"],
            f(&membership, "newcomer_bootstrap_ms"),
            f(&membership, "raw_sqlite_apply_ms"),
        ),
        (
            &membership["large_documents"],
            f(&membership, "large_bootstrap_ms"),
            f(&membership, "large_raw_sqlite_apply_ms"),
        ),
    ] {
        let ratio = ours / floor;
        let label = format!(
            "newcomer bootstrap of {documents} documents vs raw SQLite storing them (bound 1.3x)"
        );
        let verdict = if ratio <= 1.3 {
            "met"
        } else {
            missed.push(format!("{label}: {ratio:.2}x"));
            "MISSED"
        };
        println!("{label:<80} {ours:>11.1} ms {floor:>11.1} ms {ratio:>6.2}x {verdict}");
    }
    row(
        "   the first bootstrap vs raw loopback TCP copy of the same keys and values",
        f(&membership, "newcomer_bootstrap_ms"),
        f(&membership, "raw_tcp_copy_ms"),
    );
    let (small, large) = (
        f(&membership, "bootstrap_peak_rss_growth_mib"),
        f(&membership, "large_bootstrap_peak_rss_growth_mib"),
    );
    let growth = large / small;
    let verdict = if growth <= 2.0 {
        "met"
    } else {
        missed.push(format!(
            "memory of a bootstrap ten times larger: {growth:.2}x (bound 2x; proportional would be 10x)"
        ));
        "MISSED"
    };
    println!(
        "{:<80} {large:>11.1} MB {small:>11.1} MB {growth:>6.2}x {verdict}",
        format!(
            "memory (both nodes) a bootstrap of {} vs {} documents adds (flat: bound 2x)",
            membership["large_documents"], membership["documents"]
        ),
    );
    println!(
        "{:<80} {:>11.1} ms (all members running it: {:.1} ms)",
        "reconfigure over TCP -> seal decided, median",
        f(&membership, "reconfigure_decided_median_ms"),
        f(&membership, "reconfigure_all_running_median_ms")
    );
    Ok(missed)
}

/// What a control plane costs: a 16-member cluster beside 16 plain nodes, one run.
/// Returns the figures that missed their bound.
fn print_cluster_cost(root: &Path) -> Result<Vec<String>> {
    let cost = read_json(root, "cluster_cost.json")?;
    let f = |name: &str| cost[name].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n{:<80} {:>14} {:>14} {:>7}",
        "control plane cost (16 nodes)", "cluster", "plain", "ratio"
    );
    let mut missed = Vec::new();
    let rows: [(&'static str, &str, &str, &str, f64); 2] = [
        (
            "idle CPU per node (% of one core)",
            "cluster_idle_cpu_percent",
            "plain_idle_cpu_percent",
            "%",
            2.0,
        ),
        (
            "burst of writes on one node -> held by all 16",
            "cluster_burst_spread_ms",
            "plain_burst_spread_ms",
            "ms",
            1.5,
        ),
    ];
    for (label, ours, plain, unit, bound) in rows {
        let ratio = f(ours) / f(plain);
        let verdict = if ratio <= bound {
            format!("  (bound {bound}x)")
        } else {
            missed.push(label.to_string());
            format!("  (above the {bound}x bound)")
        };
        println!(
            "{label:<80} {:>11.2} {unit:<2} {:>11.2} {unit:<2} {ratio:>6.2}x{verdict}",
            f(ours),
            f(plain)
        );
    }
    println!("   settings: {}", cost["settings"].as_str().unwrap_or("?"));
    Ok(missed)
}

/// One timed figure: its median, and its maximum beside `bound_ms`; a maximum above
/// the bound is added to `missed`.
fn timed_row(
    label: &'static str,
    median_ms: f64,
    max_ms: f64,
    rounds: &serde_json::Value,
    bound_ms: f64,
    missed: &mut Vec<String>,
) {
    let verdict = if max_ms <= bound_ms {
        format!("bound {bound_ms:.0} ms")
    } else {
        missed.push(format!(
            "{label}: max {max_ms:.0} ms, bound {bound_ms:.0} ms"
        ));
        format!("above the {bound_ms:.0} ms bound")
    };
    println!(
        "{label:<80} {median_ms:>11.1} ms (max {max_ms:.1} ms over {rounds} rounds; {verdict})"
    );
}

/// Failure detection on real links (hosts as network namespaces). Returns missed bounds.
fn print_hosts(root: &Path) -> Result<Vec<String>> {
    let hosts = read_json(root, "hosts.json")?;
    let f = |name: &str| hosts[name].as_f64().unwrap_or(f64::NAN);
    let mut missed = Vec::new();
    println!(
        "\n{:<80} {:>14}",
        "failure detection on real links", "median"
    );
    for (label, median, max, bound) in [
        (
            "black-holed leader (its host's link down) -> both others report it unreachable",
            "black_hole_unreachable_median_ms",
            "black_hole_unreachable_max_ms",
            1_600.0,
        ),
        (
            "black-holed leader (its host's link down) -> both others follow the next node",
            "black_hole_replaced_median_ms",
            "black_hole_replaced_max_ms",
            2_000.0,
        ),
    ] {
        timed_row(
            label,
            f(median),
            f(max),
            &hosts["rounds"],
            bound,
            &mut missed,
        );
    }
    println!("   settings: {}", hosts["settings"].as_str().unwrap_or("?"));
    Ok(missed)
}

/// A node under hostile load beside the same node unloaded. Returns the missed bounds.
fn print_hostile(root: &Path) -> Result<Vec<String>> {
    let hostile = read_json(root, "hostile.json")?;
    let f = |name: &str| hostile[name].as_f64().unwrap_or(f64::NAN);
    let mut missed = Vec::new();
    println!(
        "\n{:<80} {:>14} {:>14} {:>7}",
        "hostile load", "loaded", "unloaded", "ratio"
    );
    let success = f("flood_success");
    let verdict = if success >= 0.99 {
        "  (bound 99%)"
    } else {
        missed.push("status calls under the idle-connection flood: success".to_string());
        "  (below the 99% bound)"
    };
    println!(
        "{:<80} {:>13.1}% {:>13.1}%{verdict}",
        "status calls under a flood of idle connections: success",
        success * 100.0,
        f("quiet_success") * 100.0
    );
    let ratio = f("flood_p99_ms") / f("quiet_p99_ms");
    let verdict = if ratio <= 2.0 {
        "  (bound 2x)"
    } else {
        missed.push("status calls under the idle-connection flood: p99".to_string());
        "  (above the 2x bound)"
    };
    println!(
        "{:<80} {:>11.2} ms {:>11.2} ms {ratio:>6.2}x{verdict}",
        "status calls under a flood of idle connections: p99 latency",
        f("flood_p99_ms"),
        f("quiet_p99_ms")
    );
    let bound = f("rss_before_mib") + f("buffer_budget_mib") * 1.1;
    let verdict = if f("rss_peak_mib") <= bound {
        format!("  (bound {bound:.0} MiB: before + the budget + 10%)")
    } else {
        missed.push("peak RSS under stalled large messages".to_string());
        format!("  (above the {bound:.0} MiB bound)")
    };
    println!(
        "{:<80} {:>10.0} MiB {:>10.0} MiB{verdict}",
        "peak RSS, 32 key holders stalled inside ~16 MiB messages (vs before)",
        f("rss_peak_mib"),
        f("rss_before_mib")
    );
    println!(
        "   settings: {}",
        hostile["settings"].as_str().unwrap_or("?")
    );
    Ok(missed)
}

/// Latencies reported by their median.
const MEDIANS: &[(&str, &str, &str)] = &[
    (
        "single put, committed (synchronous=FULL)",
        "puts",
        "store_single_put",
    ),
    (
        "config file replaced -> new port accepts connections",
        "reconfigure",
        "file_port_change",
    ),
    (
        "node id change -> back in sync with a peer holding 10,000 documents",
        "reconfigure",
        "node_id_change_10k",
    ),
];

fn median_ns(root: &Path, group: &str, bench: &str) -> Result<f64> {
    let path = root
        .join("target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    value["median"]["point_estimate"]
        .as_f64()
        .context("estimates.json has no median")
}

/// Criterion's mean time per iteration, turned into elements per second with the
/// throughput the benchmark declared.
fn elements_per_second(root: &Path, group: &str, bench: &str) -> Result<f64> {
    let dir = root
        .join("target/criterion")
        .join(group)
        .join(bench)
        .join("new");
    let read = |name: &str| -> Result<serde_json::Value> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
    };
    let mean_ns = read("estimates.json")?["mean"]["point_estimate"]
        .as_f64()
        .context("estimates.json has no mean")?;
    let elements = read("benchmark.json")?["throughput"]["Elements"]
        .as_f64()
        .context("benchmark.json declares no element throughput")?;
    Ok(elements / (mean_ns / 1e9))
}

//! `cbddc`: run a node, or talk to a running one.

use anyhow::{Context, Result, bail};
use cbddc_config::{
    ConfigProvider, DEFAULT_CLUSTER_KEY, EnvProvider, FileProvider, RemoteOptions, RemoteProvider,
    env_layer,
};
use cbddc_net::{ClientSettings, ClusterKey, LocalIdentity, PeerClient, proto};
use cbddc_node::Node;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// CBDDC: documents in a local SQLite database on every node, synced peer to peer.
///
/// Start a node with `cbddc run`; talk to it with the other commands.
/// Prints a line on stdout. A closed stdout (`cbddc status --json | head -c 20`) ends
/// the command quietly instead of failing; any other write error is returned.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(e.into());
        }
    }};
}

mod bulk;
mod watch;

#[derive(Debug, Parser)]
#[command(
    name = "cbddc",
    version,
    propagate_version = true,
    about = "Run a CBDDC node, or talk to one.",
    after_help = "Exit codes: 0 done; 1 not found (get); 2 an error, with its cause on stderr (a bad argument, a node that cannot be reached or refused the request, a retired node refusing a write).\nClient commands reach the node at --node (default 127.0.0.1:25000) with the cluster key from --cluster-key or CBDDC_CLUSTER_KEY."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node until Ctrl-C or SIGTERM.
    ///
    /// Without --config the node runs on embedded defaults: data in ./cbddc-data, a node
    /// id generated once and kept there, listening on 127.0.0.1:25000, and the default
    /// cluster key (anyone who knows it can join: set your own for real use).
    ///
    /// The configuration is followed while the node runs: edit the file (or change what
    /// the URL serves) and the node applies the change without a restart: a new port is
    /// listened on, a new node id opens that id's database. An invalid change is refused
    /// with a log line naming the field, and the node keeps its last good configuration.
    /// The variables CBDDC_NODE_ID, CBDDC_TCP_PORT, CBDDC_BIND_ADDRESS, CBDDC_DATA_DIR
    /// and CBDDC_CLUSTER_KEY override the file.
    Run {
        /// Configuration file: TOML, or JSON when the name ends in .json.
        #[arg(long, value_name = "FILE", conflicts_with = "config_url")]
        config: Option<PathBuf>,
        /// A configuration server serving the configuration as JSON, polled with
        /// If-None-Match (https:// needs a build with the remote-https feature).
        #[arg(long, value_name = "URL")]
        config_url: Option<String>,
        /// Seconds between polls of --config-url.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 10,
            requires = "config_url"
        )]
        poll_seconds: u64,
    },
    /// Manage the known peers of a running node (kept across restarts).
    #[command(subcommand)]
    Peers(PeersCommand),
    /// See and forget the named consumers of a node's change feed (`watch --consumer`).
    #[command(subcommand)]
    Consumers(ConsumersCommand),
    /// See and change the members of a cluster (nodes started with a [cluster] section).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// See the indexes a node keeps for `find` (declared under [[indexes]] in its
    /// configuration; each node builds its own).
    #[command(subcommand)]
    Index(IndexCommand),
    /// Write a document: its value is JSON text.
    Put {
        /// Collection of the document.
        collection: String,
        /// Key of the document.
        key: String,
        /// The document, as JSON (e.g. '{"name":"Ada"}').
        json: String,
        #[command(flatten)]
        target: Target,
    },
    /// Merge a JSON Merge Patch (RFC 7386) into a document: the fields it names are set,
    /// `null` removes a field, an object merges into the field; an absent document is {}.
    ///
    /// Once field-level merge is in force (every peer of the node reads it: `cbddc status`
    /// says so), the patch syncs as itself and merges field by field, so a concurrent
    /// edit of another field on another node survives. Until then the node resolves the
    /// patch into the whole document it makes and syncs that (a note on stderr says so).
    /// Needs a node of release 0.2.0 or later.
    Patch {
        /// Collection of the document.
        collection: String,
        /// Key of the document.
        key: String,
        /// The patch, a JSON object (e.g. '{"status":"open","addr":{"zip":"2"}}').
        json: String,
        #[command(flatten)]
        target: Target,
    },
    /// Add a signed integer to a field of a document (a missing field counts from 0).
    ///
    /// Once field-level merge is in force, concurrent increments on different nodes all
    /// count, once each (+5 and +5 here, -2 there, from 10: 18 everywhere); until then
    /// resolved like `patch`. Refused, storing nothing: a path through a field that is
    /// not an object, a field holding something else than an integer, a sum past 64 bits.
    Increment {
        /// Collection of the document.
        collection: String,
        /// Key of the document.
        key: String,
        /// The field, dotted (e.g. stock.count).
        path: String,
        /// The amount (negative to subtract).
        #[arg(allow_hyphen_values = true)]
        by: i64,
        #[command(flatten)]
        target: Target,
    },
    /// Print a document's JSON; exit code 1 when it does not exist.
    Get {
        /// Collection of the document.
        collection: String,
        /// Key of the document.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a document.
    Delete {
        /// Collection of the document.
        collection: String,
        /// Key of the document.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the documents of a collection, sorted by key.
    List {
        /// The collection.
        collection: String,
        /// Print a JSON array of {"key", "value"} objects.
        #[arg(long)]
        json: bool,
        /// One page of at most N documents (1 to 10000) instead of the whole collection;
        /// when there are more, stderr names the --after that continues.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start after this key (the last key of the previous page).
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Print the documents of a collection that match a query, a page at a time.
    ///
    /// The query is a JSON selector: {"status":"open"} (equality on a dotted path such as
    /// "addr.city"), {"n":{"$gt":3,"$lte":9}} (operators $eq $ne $gt $gte $lt $lte $in
    /// $nin $exists $not), {"$or":[{..},{..}]}, {"$and":[..]}, {"$not":{..}}. Values of
    /// different types compare in one order: missing < null < false < true < numbers <
    /// strings < arrays < objects. Results come sorted by --sort, then by key. With more
    /// results than --limit, the last line (stderr without --json) names the cursor that
    /// resumes after them (--after): documents that did not change meanwhile are neither
    /// skipped nor repeated. A query reads through the built index that narrows it most
    /// ([[indexes]] in the node's configuration), else scans its collection; --explain says
    /// which, and names the index that would serve a query none of the node's serves.
    /// Sorted one way by the index's fields after its equalities (on users(city, age):
    /// {"city":"Paris"} --sort age, or --sort age:desc), a page reads about --limit
    /// entries, not every match.
    Find {
        /// The collection.
        collection: String,
        /// The selector, a JSON object (e.g. '{"status":"open","n":{"$gte":2}}').
        query: String,
        /// Sort by this path, PATH or PATH:desc (repeat for more); then by key.
        #[arg(long, value_name = "PATH[:desc]")]
        sort: Vec<String>,
        /// Results per page, 1 to 10000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Resume after the cursor a previous page printed.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
        /// One JSON object per line ({"key","value"}), then {"cursor": …} when there is more.
        #[arg(long)]
        json: bool,
        /// Say how the node ran the query (stderr).
        #[arg(long)]
        explain: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print every change to a collection as it is applied, until Ctrl-C.
    ///
    /// Local writes and writes from peers alike, deletes included, in the order the node
    /// applied them; each line starts with the change's position. Resume later with
    /// --from POSITION: every document changed after it is printed in its latest state
    /// (deletes included). Deletes stay resumable for feed_retention_ms (7 days by
    /// default) after compaction; resuming from before what the node still holds exits
    /// with code 3 and says where it can resume, and `--from start` resyncs: the current
    /// documents (position 0), then every change.
    ///
    /// With --consumer NAME the node keeps the position for you: the watch resumes
    /// where that consumer left off, and deletes it has not read stay in the feed while it
    /// keeps coming back within the retention.
    Watch {
        /// The collection.
        collection: String,
        /// One JSON object per line: position, collection, key, value (the document's
        /// JSON, null for a delete), deleted, origin, node, hlc. After the current state
        /// (`--from start`) one line {"position": P, "synced": true} says it is complete
        /// and the changes after position P follow.
        #[arg(long)]
        json: bool,
        /// Where to start: `now` (the default), `start` (the current documents, then every
        /// change), or a position printed earlier (start after it). With --consumer the
        /// default is where that consumer left off.
        #[arg(long, value_name = "POSITION")]
        from: Option<watch::From>,
        /// A named consumer (1-128 of A-Z a-z 0-9 . _ -): the node keeps its position,
        /// acknowledged by the poll that follows each printed page (a watch stopped just
        /// after a page may print that page again when it resumes: at least once).
        #[arg(long, value_name = "NAME")]
        consumer: Option<String>,
        /// A live query: print only changes that make a document enter the result of
        /// this selector (the language of `cbddc find`), change within it or leave it,
        /// each marked enter / stay / leave ("match" with --json). With --from start the
        /// current matches come first; resumed elsewhere, what matched before is not
        /// known and a change of a non-matching document is printed as leave.
        #[arg(long = "where", value_name = "QUERY")]
        selector: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Write JSON lines {"key": …, "value": …} from FILE (or - for stdin) into a collection.
    ///
    /// Lines are written in batches, one transaction each; progress goes to stderr. A bad
    /// line stops the import: it is named by its number, the lines before it are written
    /// and nothing from it on. `cbddc export` writes the same format.
    Import {
        /// The collection.
        collection: String,
        /// The file, or - for stdin.
        file: PathBuf,
        /// Writes per transaction (at most 10000).
        #[arg(long, value_name = "LINES", default_value_t = 1_000)]
        batch: usize,
        /// Skip the first LINES lines (to resume after a stopped import).
        #[arg(long, value_name = "LINES", default_value_t = 0)]
        skip: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Print a collection as JSON lines {"key": …, "value": …}, sorted by key; values
    /// byte for byte as stored, so `cbddc import` restores them exactly.
    Export {
        /// The collection.
        collection: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show the node's id, port, document counts and peers.
    Status {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
enum ConsumersCommand {
    /// List them: the position each acknowledged, how far behind the feed it is, and
    /// whether it still holds deletes back (it came back within feed_retention_ms).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Forget one: it holds no delete back any more, and its next watch starts over with
    /// the current documents.
    Forget {
        /// The consumer's name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
enum IndexCommand {
    /// List them: collection, fields, entries, and how far a build has come (a query uses
    /// an index once it is built).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
enum PeersCommand {
    /// Add (or update) a known peer; syncing with it starts at once.
    Add {
        /// The peer's node id.
        node_id: String,
        /// Where it listens, as HOST:PORT.
        address: String,
        /// `static` for a member of the cluster, `cloud` for a cloud gateway.
        #[arg(long = "type", value_name = "TYPE", default_value = "static", value_parser = ["static", "cloud"])]
        peer_type: String,
        /// Keep the peer but never contact it.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List known peers and peers seen in sessions.
    List {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a known peer; syncing with it stops.
    Remove {
        /// The peer's node id.
        node_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Forget the node key pinned for a peer, so its next session pins the key it
    /// presents. Only for a peer that really has a new key (a new disk, a rebuilt
    /// machine): until then a different key under its name is refused.
    Repin {
        /// The peer's node id.
        node_id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Show the node's cluster configuration and members.
    ///
    /// Also the control plane's leader, how many control entries are decided in the
    /// running configuration, and whether the node was removed from the cluster.
    Status {
        /// Print JSON: configuration_id, members, leader, decided_idx, retired,
        /// retired_after, handover.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Replace the cluster's members (against any current member).
    ///
    /// Exits 0 once the new configuration is decided: members that are new are then sent the data
    /// and join, members left out stop syncing with the cluster. Every member named must
    /// be a current member or a known peer of the target node (`cbddc peers add`).
    Reconfigure {
        /// The next configuration's members, by node id, comma-separated (e.g. a,b,d).
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        members: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// Which node to talk to, and the key to prove membership with.
#[derive(Debug, Args)]
struct Target {
    /// Address of the node.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:25000")]
    node: String,
    /// The cluster key the node was started with.
    #[arg(long, env = "CBDDC_CLUSTER_KEY", hide_env_values = true, default_value = DEFAULT_CLUSTER_KEY, hide_default_value = true)]
    cluster_key: String,
}

impl Target {
    async fn connect(&self) -> Result<PeerClient> {
        self.connect_with(ClientSettings::default()).await
    }

    async fn connect_with(&self, settings: ClientSettings) -> Result<PeerClient> {
        cbddc_core::validate_peer_address(&self.node)?;
        let client = PeerClient::connect(
            &self.node,
            &ClusterKey::derive(&self.cluster_key),
            &LocalIdentity::tool()?,
            settings,
        )
        .await?;
        Ok(client)
    }
}

async fn cluster(command: ClusterCommand) -> Result<ExitCode> {
    match command {
        ClusterCommand::Status { json, target } => {
            let mut client = target.connect().await?;
            let status = client.cluster_status().await?;
            let leader = (!status.leader.is_empty()).then_some(status.leader.as_str());
            if json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "configuration_id": status.configuration_id,
                        "members": status.members,
                        "leader": leader,
                        "decided_idx": status.decided_idx,
                        "retired": status.retired,
                        "retired_after": status.retired_after,
                        "handover": status.handover.as_ref().map(|h| json!({
                            "to_configuration": h.to_configuration,
                            "pending": h.pending,
                            "done": h.done,
                            "complete": h.complete,
                        })),
                    }))?
                );
            } else {
                match status.configuration_id {
                    Some(id) => say!("configuration {id}: {}", status.members.join(", ")),
                    None if status.retired => say!(
                        "retired: removed from the cluster after configuration {}",
                        status.retired_after.unwrap_or_default()
                    ),
                    None => say!("waiting to be invited into a cluster"),
                }
                if status.configuration_id.is_some() {
                    say!("leader: {}", leader.unwrap_or("none yet"));
                    say!("decided entries: {}", status.decided_idx);
                }
                if let Some(handover) = &status.handover {
                    if handover.complete {
                        say!(
                            "hand-over complete: the members of configuration {} hold every write this node took",
                            handover.to_configuration
                        );
                    } else {
                        say!(
                            "handing its writes over to configuration {}: waiting for {}",
                            handover.to_configuration,
                            handover.pending.join(", ")
                        );
                    }
                }
            }
        }
        ClusterCommand::Reconfigure { members, target } => {
            let settings = ClientSettings {
                // The node answers once the change is decided, or after its own deadline.
                request_timeout: cbddc_node::RECONFIGURE_DEADLINE + Duration::from_secs(10),
                ..ClientSettings::default()
            };
            let mut client = target.connect_with(settings).await?;
            eprintln!("proposing members {} ...", members.join(", "));
            let configuration = client.reconfigure_cluster(members).await?;
            let names: Vec<&str> = configuration
                .members
                .iter()
                .map(|m| m.node_id.as_str())
                .collect();
            say!(
                "configuration {} decided: {}",
                configuration.configuration_id,
                names.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: many of our errors already
/// name their cause in their own message, and printing it again only repeats it.
fn describe(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run {
            config,
            config_url,
            poll_seconds,
        } => run(config, config_url, poll_seconds).await,
        Command::Peers(command) => peers(command).await,
        Command::Consumers(command) => consumers(command).await,
        Command::Cluster(command) => cluster(command).await,
        Command::Index(IndexCommand::List { json, target }) => {
            let status = target.connect().await?.status().await?;
            print_indexes(&status.indexes, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Put {
            collection,
            key,
            json,
            target,
        } => {
            let (seq, hlc) = target
                .connect()
                .await?
                .put(&collection, &key, &json)
                .await?;
            say!("ok seq={seq} hlc={hlc}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Patch {
            collection,
            key,
            json,
            target,
        } => {
            let written = target
                .connect()
                .await?
                .patch(&collection, &key, &json)
                .await?;
            edited(written)
        }
        Command::Increment {
            collection,
            key,
            path,
            by,
            target,
        } => {
            let written = target
                .connect()
                .await?
                .increment(&collection, &key, &path, by)
                .await?;
            edited(written)
        }
        Command::Get {
            collection,
            key,
            target,
        } => match target.connect().await?.get(&collection, &key).await? {
            Some(doc) => {
                say!("{}", doc.value);
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("not found: {collection}/{key}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Delete {
            collection,
            key,
            target,
        } => {
            let (seq, hlc) = target.connect().await?.delete(&collection, &key).await?;
            say!("ok seq={seq} hlc={hlc}");
            Ok(ExitCode::SUCCESS)
        }
        Command::List {
            collection,
            json,
            limit,
            after,
            target,
        } => list(&collection, json, limit, after, &target).await,
        Command::Status { json, target } => status(json, &target).await,
        Command::Find {
            collection,
            query,
            sort,
            limit,
            after,
            json,
            explain,
            target,
        } => {
            let found = target
                .connect()
                .await?
                .find(&collection, &query, &sort, limit, after.as_deref())
                .await?;
            if explain {
                eprintln!("plan: {}", found.plan);
            }
            for d in &found.documents {
                if json {
                    // The value goes out byte for byte as stored (validated JSON).
                    say!(
                        "{{\"key\": {}, \"value\": {}}}",
                        serde_json::to_string(&d.key)?,
                        d.value
                    );
                } else {
                    say!("{}\t{}", d.key, d.value);
                }
            }
            if !found.next.is_empty() {
                if json {
                    say!("{}", json!({ "cursor": found.next }));
                } else {
                    eprintln!("more: resume with --after {}", found.next);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch {
            collection,
            json,
            from,
            consumer,
            selector,
            target,
        } => {
            let watching = watch::Watching {
                collection: Some(collection),
                as_json: json,
                from,
                consumer,
                selector,
            };
            watch::watch(watching, &target).await
        }
        Command::Import {
            collection,
            file,
            batch,
            skip,
            target,
        } => bulk::import(&collection, &file, batch, skip, &target).await,
        Command::Export { collection, target } => bulk::export(&collection, &target).await,
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

async fn run(
    config_path: Option<PathBuf>,
    config_url: Option<String>,
    poll_seconds: u64,
) -> Result<ExitCode> {
    init_logging();
    let provider: Arc<dyn ConfigProvider> = match (&config_path, &config_url) {
        (Some(path), _) => Arc::new(FileProvider::watch_with_env(path)?),
        (None, Some(url)) => Arc::new(RemoteProvider::start(
            url,
            RemoteOptions {
                poll_interval: Duration::from_secs(poll_seconds.max(1)),
                overrides: env_layer(|name| std::env::var(name).ok())?,
                ..RemoteOptions::default()
            },
        )?),
        (None, None) => Arc::new(EnvProvider::from_env()?),
    };
    if provider.current().uses_default_cluster_key() {
        tracing::warn!(
            "running with the default cluster key: any node that knows it can sync with this one; \
             set cluster_key in the configuration file"
        );
    }
    let node = Node::start_with_provider(provider).await?;
    say!(
        "cbddc node {} listening on {}",
        node.node_id(),
        node.local_addr()
    );
    if let Some(address) = node.metrics_addr().await {
        say!("metrics on http://{address}/metrics, cluster page on http://{address}/");
    }
    wait_for_stop_signal().await?;
    tracing::info!("stop requested; shutting down");
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
async fn wait_for_stop_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_stop_signal() -> Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")
}

async fn list(
    collection: &str,
    as_json: bool,
    limit: Option<u32>,
    mut after: Option<String>,
    target: &Target,
) -> Result<ExitCode> {
    if let Some(limit) = limit
        && !(1..=10_000).contains(&limit)
    {
        bail!("--limit must be from 1 to 10000, not {limit}");
    }
    let mut client = target.connect().await?;
    let mut docs = Vec::new();
    loop {
        let want = limit.unwrap_or(1_000);
        let (page, more) = client.list(collection, after.as_deref(), want).await?;
        after = page.last().map(|d| d.key.clone());
        docs.extend(page);
        if limit.is_some() {
            if more && let Some(last) = &after {
                eprintln!(
                    "more: continue with --after {}",
                    serde_json::to_string(last)?
                );
            }
            break;
        }
        if !more || after.is_none() {
            break;
        }
    }
    if as_json {
        // Each value goes out byte for byte as stored (it is validated JSON): parsing and
        // printing it again would change the last digit of some floats.
        let mut out = String::from("[");
        for (index, d) in docs.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str("\n  {\"key\": ");
            out.push_str(&serde_json::to_string(&d.key)?);
            out.push_str(", \"value\": ");
            out.push_str(&d.value);
            out.push('}');
        }
        out.push_str(if docs.is_empty() { "]" } else { "\n]" });
        say!("{out}");
    } else {
        for d in &docs {
            say!("{}\t{}", d.key, d.value);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn peer_json(p: &proto::PeerStatus) -> Value {
    json!({
        "node_id": p.node_id,
        "address": p.address,
        "type": p.peer_type,
        "enabled": p.enabled,
        "last_exchange_ms": (p.last_exchange_ms > 0).then_some(p.last_exchange_ms),
        "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
        "key_fingerprint": (!p.key_fingerprint.is_empty()).then_some(&p.key_fingerprint),
        "lag_entries": p.lag_entries,
        "protocol_version": (p.protocol_version > 0).then_some(p.protocol_version),
        "release": (!p.release.is_empty()).then_some(&p.release),
        "features": p.features,
    })
}

fn print_peers(peers: &[proto::PeerStatus], as_json: bool) -> Result<()> {
    if as_json {
        let items: Vec<Value> = peers.iter().map(peer_json).collect();
        say!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if peers.is_empty() {
        say!("no peers");
    }
    for p in peers {
        let state = if p.enabled { "enabled" } else { "disabled" };
        let key = if p.key_fingerprint.is_empty() {
            "key not pinned yet"
        } else {
            p.key_fingerprint.as_str()
        };
        say!(
            "{}\t{}\t{}\t{}\t{}",
            p.node_id,
            p.address,
            p.peer_type,
            state,
            key
        );
    }
    Ok(())
}

fn consumers_json(feed: &proto::FeedStatus) -> Value {
    json!(
        feed.consumers
            .iter()
            .map(|c| json!({
                "name": c.name,
                "position": c.position,
                "lag": c.lag,
                "acked_age_ms": c.acked_age_ms,
                "holding_back": c.holding_back,
            }))
            .collect::<Vec<_>>()
    )
}

fn print_consumers(feed: &proto::FeedStatus, as_json: bool) -> Result<()> {
    if as_json {
        say!("{}", serde_json::to_string_pretty(&consumers_json(feed))?);
        return Ok(());
    }
    if feed.consumers.is_empty() {
        say!(
            "no named consumers (feed at position {})",
            feed.last_position
        );
    }
    for c in &feed.consumers {
        let holding = if c.holding_back {
            "holds deletes back"
        } else {
            "past the retention: holds nothing back"
        };
        say!(
            "{}\tat {}\t{} behind\tacknowledged {:.1}s ago\t{holding}",
            c.name,
            c.position,
            c.lag,
            c.acked_age_ms as f64 / 1000.0
        );
    }
    Ok(())
}

fn index_json(index: &proto::IndexState) -> Value {
    json!({
        "collection": index.collection,
        "fields": index.fields,
        "covering": index.covering,
        "entries": index.entries,
        "pending": index.pending,
        "state": if index.building { "building" } else { "built" },
        "built": index.building.then_some(index.built),
        "to_build": index.building.then_some(index.to_build),
    })
}

fn index_line(index: &proto::IndexState) -> String {
    let name = format!(
        "{}({}){}",
        index.collection,
        index.fields.join(", "),
        if index.covering { " covering" } else { "" }
    );
    if index.building {
        let percent = if index.to_build == 0 {
            100.0
        } else {
            100.0 * index.built as f64 / index.to_build as f64
        };
        format!(
            "{name}: building, {} of {} documents ({percent:.0}%); queries scan until it is built",
            index.built, index.to_build
        )
    } else if index.pending > 0 {
        format!(
            "{name}: built, {} entries, {} writes to fold in (the next query on it folds them)",
            index.entries, index.pending
        )
    } else {
        format!("{name}: built, {} entries", index.entries)
    }
}

fn print_indexes(indexes: &[proto::IndexState], as_json: bool) -> Result<()> {
    if as_json {
        let all: Vec<Value> = indexes.iter().map(index_json).collect();
        say!("{}", serde_json::to_string_pretty(&all)?);
    } else if indexes.is_empty() {
        eprintln!("no indexes: declare them under [[indexes]] in the node's configuration");
    } else {
        for index in indexes {
            say!("{}", index_line(index));
        }
    }
    Ok(())
}

async fn consumers(command: ConsumersCommand) -> Result<ExitCode> {
    match command {
        ConsumersCommand::List { json, target } => {
            let status = target.connect().await?.status().await?;
            print_consumers(&status.feed.unwrap_or_default(), json)?;
        }
        ConsumersCommand::Forget { name, target } => {
            let feed = target.connect().await?.forget_consumer(&name).await?;
            eprintln!("forgot feed consumer {name}: it holds no delete back any more");
            print_consumers(&feed, false)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn peers(command: PeersCommand) -> Result<ExitCode> {
    match command {
        PeersCommand::Add {
            node_id,
            address,
            peer_type,
            disabled,
            target,
        } => {
            let peers = target
                .connect()
                .await?
                .add_peer(&node_id, &address, &peer_type, disabled)
                .await?;
            print_peers(&peers, false)?;
        }
        PeersCommand::List { json, target } => {
            print_peers(&target.connect().await?.peers().await?, json)?
        }
        PeersCommand::Remove { node_id, target } => {
            let peers = target.connect().await?.remove_peer(&node_id).await?;
            print_peers(&peers, false)?;
        }
        PeersCommand::Repin { node_id, target } => {
            let peers = target.connect().await?.repin_peer(&node_id).await?;
            eprintln!(
                "the key pinned for {node_id} is forgotten: its next session pins the key it presents"
            );
            print_peers(&peers, false)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The answer to a patch or an increment, with a word on how it travels.
fn edited((seq, hlc, whole): (u64, cbddc_core::Hlc, bool)) -> Result<ExitCode> {
    if whole {
        eprintln!(
            "note: written as the whole document it makes (field-level merge is not in force): a concurrent write of this document elsewhere may win over it whole"
        );
    }
    say!("ok seq={seq} hlc={hlc}");
    Ok(ExitCode::SUCCESS)
}

/// `ms` as the largest whole unit that fits (days, hours, minutes, seconds).
fn human_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1_000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn status_json(status: &proto::StatusResponse) -> Value {
    let vv: serde_json::Map<String, Value> = status
        .version_vector
        .as_ref()
        .map(|vv| {
            vv.entries
                .iter()
                .map(|e| (e.origin.clone(), json!(e.seq)))
                .collect()
        })
        .unwrap_or_default();
    let peers: Vec<Value> = status.peers.iter().map(peer_json).collect();
    json!({
        "node_id": status.node_id,
        "replica": status.replica,
        "node_key": status.node_key,
        "key_fingerprint": status.key_fingerprint,
        "tcp_port": status.tcp_port,
        "bind_address": status.bind_address,
        "documents": status.documents,
        "oplog_entries": status.oplog_entries,
        "version_vector": vv,
        "protocol_version": status.protocol_version,
        "release": status.release,
        "protocols": {
            "oldest": status.oldest_protocol_version,
            "newest": status.protocol_version,
        },
        "whole_document_edits": status.whole_document_edits,
        "indexes": status.indexes.iter().map(index_json).collect::<Vec<_>>(),
        "features": status.features.as_ref().map(|f| json!({
            "in_force": f.in_force,
            "pending": f.pending.iter().map(|p| json!({
                "feature": p.feature,
                "held_back_by": p.held_back_by.iter().map(|h| json!({
                    "node_id": h.node_id,
                    "release": (!h.release.is_empty()).then_some(&h.release),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        "leader": (!status.leader.is_empty()).then_some(&status.leader),
        "is_leader": status.is_leader,
        "wanted_listen": (!status.wanted_listen.is_empty()).then_some(&status.wanted_listen),
        "duplicates": status.duplicates,
        "folded_replicas": status.folded_replicas,
        "live_version_vector_entries": status.live_version_vector_entries,
        "compaction": status.compaction.as_ref().map(|c| json!({
            "retention_ms": c.retention_ms,
            "collectable": c.collectable,
            "collected": c.collected,
            "field_states": c.field_states,
            "holding_back": c.holding_back,
            "oldest_unacknowledged_peer": (!c.oldest_unacknowledged_peer.is_empty()).then(|| json!({
                "node_id": c.oldest_unacknowledged_peer,
                "age_ms": c.oldest_unacknowledged_age_ms,
            })),
            "snapshot_in_progress": (!c.snapshot_from.is_empty()).then(|| json!({
                "from": c.snapshot_from,
                "staged_documents": c.snapshot_staged,
            })),
        })),
        "feed": status.feed.as_ref().map(|f| json!({
            "retention_ms": f.retention_ms,
            "feed_entries": f.feed_entries,
            "oldest_position": f.oldest_position,
            "last_position": f.last_position,
            "consumers": f.consumers.iter().map(|c| json!({
                "name": c.name,
                "position": c.position,
                "lag": c.lag,
                "acked_age_ms": c.acked_age_ms,
                "holding_back": c.holding_back,
            })).collect::<Vec<_>>(),
        })),
        "peers": peers,
    })
}

async fn status(as_json: bool, target: &Target) -> Result<ExitCode> {
    let status = target.connect().await?.status().await?;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&status_json(&status))?);
        return Ok(ExitCode::SUCCESS);
    }
    say!("node       {} (replica {})", status.node_id, status.replica);
    if !status.release.is_empty() {
        say!(
            "release    cbddc {} (protocols {} to {})",
            status.release,
            status.oldest_protocol_version,
            status.protocol_version
        );
    }
    if status.whole_document_edits {
        say!(
            "edits      patch and increment are written as whole documents (field-level merge is not in force)"
        );
    }
    if let Some(f) = &status.features {
        if !f.in_force.is_empty() {
            say!("features   {} in force", f.in_force.join(", "));
        }
        for p in &f.pending {
            let holders: Vec<String> = p
                .held_back_by
                .iter()
                .map(|h| match h.release.as_str() {
                    "" => format!("{} (not heard from)", h.node_id),
                    release => format!("{} (cbddc {release})", h.node_id),
                })
                .collect();
            say!(
                "features   {} held back by {}",
                p.feature,
                holders.join(", ")
            );
        }
    }
    for index in &status.indexes {
        say!("index      {}", index_line(index));
    }
    say!("node key   {}", status.key_fingerprint);
    say!("listening  {}:{}", status.bind_address, status.tcp_port);
    for duplicate in &status.duplicates {
        say!("DUPLICATE  {duplicate}");
    }
    if !status.wanted_listen.is_empty() {
        say!(
            "wanted     {} (cannot bind it yet; retrying)",
            status.wanted_listen
        );
    }
    say!(
        "documents  {} ({} oplog entries)",
        status.documents,
        status.oplog_entries
    );
    if let Some(c) = &status.compaction {
        let waiting = if c.oldest_unacknowledged_peer.is_empty() {
            String::new()
        } else {
            format!(
                "; oldest unacknowledged: {} ({:.1}s)",
                c.oldest_unacknowledged_peer,
                c.oldest_unacknowledged_age_ms as f64 / 1000.0
            )
        };
        say!(
            "compaction {} collected, {} waiting for {} peer(s){waiting}; retention {}",
            c.collected,
            c.collectable,
            c.holding_back,
            human_ms(c.retention_ms)
        );
        if c.field_states > 0 {
            say!(
                "merging    {} documents keep field states (until every peer holds their writes)",
                c.field_states
            );
        }
        if !c.snapshot_from.is_empty() {
            say!(
                "snapshot   from {}: {} documents staged",
                c.snapshot_from,
                c.snapshot_staged
            );
        }
    }
    if let Some(f) = &status.feed {
        say!(
            "feed       last position {}, resumable after {}; {} deletes kept; retention {}",
            f.last_position,
            f.oldest_position,
            f.feed_entries,
            human_ms(f.retention_ms)
        );
        for c in &f.consumers {
            let holding = if c.holding_back {
                ""
            } else {
                " (past the retention: holds nothing back)"
            };
            say!(
                "consumer   {} at {} ({} behind; acknowledged {:.1}s ago){holding}",
                c.name,
                c.position,
                c.lag,
                c.acked_age_ms as f64 / 1000.0
            );
        }
    }
    let leader = if status.leader.is_empty() {
        "none yet"
    } else {
        status.leader.as_str()
    };
    let this_node = if status.is_leader { " (this node)" } else { "" };
    say!("leader     {leader}{this_node}");
    if status.peers.is_empty() {
        say!("peers      none");
    }
    let now = cbddc_core::unix_millis();
    for p in &status.peers {
        let seen = match p.last_exchange_ms {
            0 => "never".to_string(),
            ms => format!("{:.1}s ago", now.saturating_sub(ms) as f64 / 1000.0),
        };
        let state = if !p.enabled {
            "disabled".to_string()
        } else if p.last_error.is_empty() {
            format!("last exchange {seen}")
        } else {
            format!("last exchange {seen}; last error: {}", p.last_error)
        };
        let lag = match p.lag_entries {
            Some(entries) => format!("; {entries} entries behind"),
            None => String::new(),
        };
        let build = match p.protocol_version {
            0 => String::new(),
            protocol => format!("; cbddc {} at protocol {protocol}", p.release),
        };
        say!(
            "peer       {} {} ({}) {}{lag}{build}",
            p.node_id,
            p.address,
            p.peer_type,
            state
        );
    }
    if status.node_id.is_empty() {
        bail!("the node sent an empty status");
    }
    Ok(ExitCode::SUCCESS)
}

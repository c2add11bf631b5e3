//! `cbddc`: run a node, or talk to a running one.

use anyhow::{Context, Result, bail};
use cbddc_config::{ConfigFile, DEFAULT_CLUSTER_KEY, load_file};
use cbddc_net::{ClientSettings, ClusterKey, PeerClient, proto};
use cbddc_node::Node;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// CBDDC: documents in a local SQLite database on every node, synced peer to peer.
///
/// Start a node with `cbddc run`; talk to it with the other commands.
#[derive(Debug, Parser)]
#[command(name = "cbddc", version, propagate_version = true)]
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
    Run {
        /// Configuration file: TOML, or JSON when the name ends in .json.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
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
        cbddc_core::validate_peer_address(&self.node)?;
        let client = PeerClient::connect(
            &self.node,
            &ClusterKey::derive(&self.cluster_key),
            None,
            ClientSettings::default(),
        )
        .await?;
        Ok(client)
    }
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
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config } => run(config).await,
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
            println!("ok seq={seq} hlc={hlc}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            collection,
            key,
            target,
        } => match target.connect().await?.get(&collection, &key).await? {
            Some(doc) => {
                println!("{}", doc.value);
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
            println!("ok seq={seq} hlc={hlc}");
            Ok(ExitCode::SUCCESS)
        }
        Command::List {
            collection,
            json,
            target,
        } => list(&collection, json, &target).await,
        Command::Status { json, target } => status(json, &target).await,
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

async fn run(config_path: Option<PathBuf>) -> Result<ExitCode> {
    init_logging();
    let file = match &config_path {
        Some(path) => load_file(path)?,
        None => ConfigFile::default(),
    };
    let config = file.resolve()?;
    if config.uses_default_cluster_key() {
        tracing::warn!(
            "running with the default cluster key: any node that knows it can sync with this one; \
             set cluster_key in the configuration file"
        );
    }
    let node = Node::start(config).await?;
    println!(
        "cbddc node {} listening on {}",
        node.node_id(),
        node.local_addr()
    );
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

async fn list(collection: &str, as_json: bool, target: &Target) -> Result<ExitCode> {
    let mut client = target.connect().await?;
    let mut docs = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = client.list(collection, after.as_deref(), 1_000).await?;
        after = page.last().map(|d| d.key.clone());
        docs.extend(page);
        if !more || after.is_none() {
            break;
        }
    }
    if as_json {
        let items: Vec<Value> = docs
            .iter()
            .map(|d| {
                let value: Value = serde_json::from_str(&d.value)
                    .unwrap_or_else(|_| Value::String(d.value.clone()));
                json!({ "key": d.key, "value": value })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for d in &docs {
            println!("{}\t{}", d.key, d.value);
        }
    }
    Ok(ExitCode::SUCCESS)
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
    let peers: Vec<Value> = status
        .peers
        .iter()
        .map(|p| {
            json!({
                "node_id": p.node_id,
                "address": p.address,
                "type": p.peer_type,
                "enabled": p.enabled,
                "last_exchange_ms": (p.last_exchange_ms > 0).then_some(p.last_exchange_ms),
                "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
            })
        })
        .collect();
    json!({
        "node_id": status.node_id,
        "tcp_port": status.tcp_port,
        "bind_address": status.bind_address,
        "documents": status.documents,
        "oplog_entries": status.oplog_entries,
        "version_vector": vv,
        "protocol_version": status.protocol_version,
        "peers": peers,
    })
}

async fn status(as_json: bool, target: &Target) -> Result<ExitCode> {
    let status = target.connect().await?.status().await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("node       {}", status.node_id);
    println!("listening  {}:{}", status.bind_address, status.tcp_port);
    println!(
        "documents  {} ({} oplog entries)",
        status.documents, status.oplog_entries
    );
    if status.peers.is_empty() {
        println!("peers      none");
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
        println!(
            "peer       {} {} ({}) {}",
            p.node_id, p.address, p.peer_type, state
        );
    }
    if status.node_id.is_empty() {
        bail!("the node sent an empty status");
    }
    Ok(ExitCode::SUCCESS)
}

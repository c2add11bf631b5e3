//! `cargo xtask cluster`: a local cluster of `cbddc` processes on loopback, with a live table.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "xtask-local-cluster";

pub struct Options {
    pub nodes: usize,
    pub base_port: u16,
    pub dir: PathBuf,
    pub release: bool,
}

struct Member {
    id: String,
    port: u16,
    child: Child,
}

pub fn run(root: &Path, options: Options) -> Result<()> {
    if options.nodes == 0 || options.nodes > 26 {
        bail!("--nodes must be from 1 to 26");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot listen for Ctrl-C")?;

    eprintln!("== building cbddc");
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(root).args(["build", "--bin", "cbddc"]);
    if options.release {
        build.arg("--release");
    }
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("cargo build --bin cbddc failed");
    }
    let binary = root
        .join("target")
        .join(if options.release { "release" } else { "debug" })
        .join("cbddc");

    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("cannot create {}", options.dir.display()))?;
    let ports: Vec<u16> = (0..options.nodes)
        .map(|i| options.base_port + i as u16)
        .collect();
    let ids: Vec<String> = (0..options.nodes)
        .map(|i| format!("node-{}", (b'a' + i as u8) as char))
        .collect();
    let mut members = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let peers: Vec<String> = ids
            .iter()
            .zip(&ports)
            .filter(|(other, _)| *other != id)
            .map(|(other, port)| {
                format!("{{ node_id = \"{other}\", address = \"127.0.0.1:{port}\" }}")
            })
            .collect();
        let config = options.dir.join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "node_id = \"{id}\"\ntcp_port = {}\ndata_dir = {:?}\ncluster_key = \"{KEY}\"\nknown_peers = [{}]\n",
                ports[i],
                options.dir.join(format!("{id}-data")).display().to_string(),
                peers.join(", ")
            ),
        )?;
        let log = std::fs::File::create(options.dir.join(format!("{id}.log")))?;
        let child = Command::new(&binary)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {id}"))?;
        members.push(Member {
            id: id.clone(),
            port: ports[i],
            child,
        });
    }
    eprintln!(
        "== {} nodes on 127.0.0.1:{}..{}; configs and logs in {}; Ctrl-C stops them",
        options.nodes,
        ports[0],
        ports[ports.len() - 1],
        options.dir.display()
    );
    eprintln!(
        "   try: CBDDC_CLUSTER_KEY={KEY} {} put notes n1 '{{\"hi\":1}}' --node 127.0.0.1:{}",
        binary.display(),
        ports[0]
    );

    while !stop.load(Ordering::SeqCst) {
        let mut table = format!(
            "\x1b[2J\x1b[H{:<10} {:>6} {:<10} {:>6} {:>10}  {}\n",
            "node", "port", "leader", "alive", "documents", "state"
        );
        for member in &mut members {
            let state = match member.child.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                _ => "running".to_string(),
            };
            match status(&binary, member.port) {
                Some(s) => {
                    let now = now_ms();
                    let alive = s["peers"]
                        .as_array()
                        .map(|peers| {
                            peers
                                .iter()
                                .filter(|p| {
                                    p["last_exchange_ms"]
                                        .as_u64()
                                        .is_some_and(|t| now.saturating_sub(t) < 3_000)
                                })
                                .count()
                        })
                        .unwrap_or(0);
                    table.push_str(&format!(
                        "{:<10} {:>6} {:<10} {:>6} {:>10}  {state}\n",
                        member.id,
                        member.port,
                        s["leader"].as_str().unwrap_or("-"),
                        format!("{alive}/{}", options.nodes - 1),
                        s["documents"].as_u64().unwrap_or(0),
                    ));
                }
                None => table.push_str(&format!(
                    "{:<10} {:>6} {:<10} {:>6} {:>10}  {state}, not answering\n",
                    member.id, member.port, "?", "?", "?"
                )),
            }
        }
        print!("{table}");
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_secs(1) && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    eprintln!("\n== stopping");
    for member in &members {
        let _ = Command::new("kill")
            .args(["-TERM", &member.child.id().to_string()])
            .status();
    }
    for member in &mut members {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match member.child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!("   {} stopped ({status})", member.id);
                    break;
                }
                _ if Instant::now() > deadline => {
                    eprintln!("   {} did not stop in 15 s; killing it", member.id);
                    let _ = member.child.kill();
                    let _ = member.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    Ok(())
}

fn status(binary: &Path, port: u16) -> Option<Value> {
    let out = Command::new(binary)
        .args(["status", "--json", "--node", &format!("127.0.0.1:{port}")])
        .env("CBDDC_CLUSTER_KEY", KEY)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

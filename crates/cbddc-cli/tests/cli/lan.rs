//! Hosts of a LAN on one machine: each host is a network namespace with its own address
//! on one bridge, so every node listens on the same port as on real machines, and a
//! host's link can be cut (packets dropped, no RST: a dead switch port) and healed.
//!
//! Needs root and iproute2 (`ip netns`), as CI has. Where namespaces cannot be made the
//! test fails and says why; it never passes without running. Every namespace and the
//! bridge are removed when the [`Lan`] is dropped, also when the test fails.

use crate::harness::{KEY, stderr, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The port every node listens on, on its own host.
pub const PORT: u16 = 25000;

static NEXT_LAN: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), stderr(&out)))
    }
}

/// One host: a namespace, its address, and the bridge-side end of its link.
#[derive(Debug)]
pub struct Host {
    pub namespace: String,
    pub address: String,
    link: String,
}

/// A bridge and the hosts on it.
#[derive(Debug)]
pub struct Lan {
    bridge: String,
    pub hosts: Vec<Host>,
}

impl Lan {
    /// `count` hosts on a fresh bridge, with addresses 10.X.Y.1, .2, … in a /24 of their own.
    pub fn new(count: usize) -> Self {
        match Self::build(count) {
            Ok(lan) => lan,
            Err(e) => panic!(
                "this multi-host test needs network namespaces (run as root with iproute2 installed; CI does): {e}"
            ),
        }
    }

    fn build(count: usize) -> Result<Self, String> {
        let serial = NEXT_LAN.fetch_add(1, Ordering::SeqCst);
        // Unique per test run and per LAN, within the 15 characters of an interface name.
        let tag = format!("{:04x}{serial:x}", std::process::id() % 0x10000);
        let subnet = format!(
            "10.{}.{}",
            100 + std::process::id() % 100,
            (serial * 7 + std::process::id() / 100) % 250
        );
        let mut lan = Self {
            bridge: format!("cbr{tag}"),
            hosts: Vec::new(),
        };
        ip(&["link", "add", &lan.bridge, "type", "bridge"])?;
        ip(&["link", "set", &lan.bridge, "up"])?;
        for index in 0..count {
            let host = Host {
                namespace: format!("cbddc-{tag}-{index}"),
                address: format!("{subnet}.{}", index + 1),
                link: format!("cv{tag}h{index}"),
            };
            let inside = format!("{}i", host.link);
            ip(&["netns", "add", &host.namespace])?;
            lan.hosts.push(host);
            let host = &lan.hosts[index];
            ip(&[
                "link", "add", &host.link, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &host.namespace])?;
            ip(&["link", "set", &host.link, "master", &lan.bridge])?;
            ip(&["link", "set", &host.link, "up"])?;
            let ns = host.namespace.as_str();
            let cidr = format!("{}/24", host.address);
            ip(&["-n", ns, "addr", "add", &cidr, "brd", "+", "dev", &inside])?;
            ip(&["-n", ns, "link", "set", &inside, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "route", "add", "default", "dev", &inside])?;
        }
        Ok(lan)
    }

    /// One node per host, named `names` in host order, each knowing all the others,
    /// listening on `bind` (`None`: its host's address), with `extra_toml`.
    pub fn mesh(
        &self,
        dir: &Path,
        names: &[&str],
        extra_toml: &str,
        bind: Option<&str>,
    ) -> Vec<HostNode> {
        (0..names.len())
            .map(|i| {
                let peers: Vec<(&str, usize)> = (0..names.len())
                    .filter(|j| *j != i)
                    .map(|j| (names[j], j))
                    .collect();
                let own = self.hosts[i].address.clone();
                let bind = bind.unwrap_or(&own);
                HostNode::start_bound(self, i, dir, names[i], &peers, extra_toml, bind)
            })
            .collect()
    }

    /// Cuts host `index` off the LAN: its packets are dropped, nobody is told.
    pub fn cut(&self, index: usize) {
        ip(&["link", "set", &self.hosts[index].link, "down"]).unwrap();
    }

    /// Plugs host `index` back in.
    pub fn heal(&self, index: usize) {
        ip(&["link", "set", &self.hosts[index].link, "up"]).unwrap();
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for host in &self.hosts {
            // Its veth goes with it.
            let _ = ip(&["netns", "del", &host.namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A `cbddc run` process on one host of a [`Lan`]; killed when dropped.
pub struct HostNode {
    pub node_id: String,
    pub namespace: String,
    pub address: String,
    pub config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl HostNode {
    /// Starts `node_id` on host `index` with `extra_toml` after the generated fields;
    /// `peers` are the other nodes, by node id and host index.
    pub fn start(
        lan: &Lan,
        index: usize,
        dir: &Path,
        node_id: &str,
        peers: &[(&str, usize)],
        extra_toml: &str,
    ) -> Self {
        let bind = lan.hosts[index].address.clone();
        Self::start_bound(lan, index, dir, node_id, peers, extra_toml, &bind)
    }

    /// Like [`HostNode::start`], listening on `bind` (say `0.0.0.0`, as a new user
    /// would: then LAN broadcasts reach it too).
    pub fn start_bound(
        lan: &Lan,
        index: usize,
        dir: &Path,
        node_id: &str,
        peers: &[(&str, usize)],
        extra_toml: &str,
        bind: &str,
    ) -> Self {
        let host = &lan.hosts[index];
        let known: Vec<String> = peers
            .iter()
            .map(|(id, i)| {
                format!(
                    "{{ node_id = \"{id}\", address = \"{}:{PORT}\" }}",
                    lan.hosts[*i].address
                )
            })
            .collect();
        let data_dir = dir.join(format!("{node_id}-data"));
        let text = format!(
            "node_id = \"{node_id}\"\nbind_address = \"{bind}\"\ntcp_port = {PORT}\ndata_dir = {:?}\ncluster_key = \"{KEY}\"\nsync_interval_ms = 200\nknown_peers = [{}]\n{extra_toml}",
            data_dir.display().to_string(),
            known.join(", ")
        );
        let config = dir.join(format!("{node_id}.toml"));
        std::fs::write(&config, text).unwrap();
        let mut node = Self {
            node_id: node_id.to_string(),
            namespace: host.namespace.clone(),
            address: format!("{}:{PORT}", host.address),
            config,
            log: dir.join(format!("{node_id}.log")),
            child: None,
        };
        node.launch();
        node
    }

    /// Starts the process (again) and waits until it answers.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // `ip netns exec` execs: the child's pid is the node's own, so signals reach it.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespace,
                env!("CARGO_BIN_EXE_cbddc"),
            ])
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(
            &format!("{} to answer status", self.node_id),
            Duration::from_secs(20),
            || self.cli(&["status"]).status.success(),
        );
    }

    /// Runs a client command on this node's host, against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespace,
                env!("CARGO_BIN_EXE_cbddc"),
            ])
            .args(args)
            .args(["--node", &self.address])
            .env("CBDDC_CLUSTER_KEY", KEY)
            .output()
            .unwrap()
    }

    /// The JSON a client command prints on this node's host, if it succeeded.
    pub fn json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = self.cli(args);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// `cbddc status --json`.
    pub fn status(&self) -> Option<serde_json::Value> {
        self.json(&["status", "--json"])
    }

    /// `cbddc cluster status --json`.
    pub fn cluster_status(&self) -> Option<serde_json::Value> {
        self.json(&["cluster", "status", "--json"])
    }

    /// Rewrites the running node's config file through `change` (the node follows it
    /// live), replacing the file whole, as an editor does.
    pub fn change_config(&self, change: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let changed = change(&text);
        assert_ne!(changed, text, "the change changed nothing");
        let staged = self.config.with_extension("toml.tmp");
        std::fs::write(&staged, changed).unwrap();
        std::fs::rename(&staged, &self.config).unwrap();
    }

    /// Moves the running node to `port` (see [`HostNode::change_config`]); client
    /// commands follow it there.
    pub fn move_to_port(&mut self, port: u16) {
        self.change_config(|text| {
            text.replace(
                &format!("tcp_port = {PORT}\n"),
                &format!("tcp_port = {port}\n"),
            )
        });
        let host = self
            .address
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        self.address = format!("{host}:{port}");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("not running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGSTOP: the process stands still; its sockets stay open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().expect("not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HostNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "cli-test-key";

#[path = "../../../../tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

/// Runs a client command against `port` with the test key.
pub fn cbddc(args: &[&str], port: u16) -> Output {
    cbddc_with_key(args, port, KEY)
}

pub fn cbddc_with_key(args: &[&str], port: u16, key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .args(args)
        .args(["--node", &format!("127.0.0.1:{port}")])
        .env("CBDDC_CLUSTER_KEY", key)
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `condition` every 50 ms; panics naming `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `cbddc run` process with its own config file and log; killed when dropped.
pub struct RunningNode {
    pub name: String,
    pub node_id: String,
    pub port: u16,
    pub peers: Vec<(String, u16)>,
    /// Cloud remotes, as (node id, port).
    pub cloud: Vec<(String, u16)>,
    /// Appended to the generated configuration (e.g. `[election]` settings).
    pub extra_toml: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl RunningNode {
    /// Writes `name.toml` into `dir` and starts a node on it.
    pub fn start(dir: &Path, name: &str, port: u16, peers: &[(&str, u16)]) -> Self {
        Self::start_with(dir, name, port, peers, &[], "")
    }

    /// Like [`RunningNode::start`], with cloud remotes and extra configuration.
    pub fn start_with(
        dir: &Path,
        name: &str,
        port: u16,
        peers: &[(&str, u16)],
        cloud: &[(&str, u16)],
        extra_toml: &str,
    ) -> Self {
        let mut node = Self {
            name: name.to_string(),
            node_id: name.to_string(),
            port,
            peers: peers.iter().map(|(id, p)| (id.to_string(), *p)).collect(),
            cloud: cloud.iter().map(|(id, p)| (id.to_string(), *p)).collect(),
            extra_toml: extra_toml.to_string(),
            dir: dir.to_path_buf(),
            config: dir.join(format!("{name}.toml")),
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        node.write_config_text(&node.config_text());
        node.launch();
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(format!("{}-data", self.name))
    }

    pub fn config_text(&self) -> String {
        let entry = |(id, p): &(String, u16), kind: &str| {
            format!("{{ node_id = \"{id}\", address = \"127.0.0.1:{p}\", type = \"{kind}\" }}")
        };
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|p| entry(p, "static"))
            .chain(self.cloud.iter().map(|p| entry(p, "cloud")))
            .collect();
        format!(
            "node_id = \"{}\"\ntcp_port = {}\ndata_dir = {:?}\ncluster_key = \"{KEY}\"\nsync_interval_ms = 200\nknown_peers = [{}]\n{}",
            self.node_id,
            self.port,
            self.data_dir().display().to_string(),
            peers.join(", "),
            self.extra_toml
        )
    }

    /// Replaces the config file the way orchestrators do: write aside, then rename over it.
    pub fn write_config_text(&self, text: &str) {
        let staged = self.dir.join(format!(".{}.toml.tmp", self.name));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &self.config).unwrap();
    }

    /// Writes the config file in place, as `cat > file` does: truncated, then written.
    pub fn write_config_in_place(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    /// Rewrites the config file from the fields.
    pub fn rewrite_config(&self) {
        self.write_config_text(&self.config_text());
    }

    pub fn launch(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cbddc"))
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_until(
            &format!("{} to answer status", self.name),
            Duration::from_secs(20),
            || cbddc(&["status"], port).status.success(),
        );
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("not running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process, with the system's `kill`.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("not running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
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

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `cbddc status --json`, retried for up to 5 s: a node swapping its database (a node id
/// change) does not answer for a moment.
pub fn status_json(port: u16) -> serde_json::Value {
    let mut out = cbddc(&["status", "--json"], port);
    for _ in 0..50 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        out = cbddc(&["status", "--json"], port);
    }
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts a client command against `port` with the test key and piped stdio.
pub fn cbddc_child(args: &[&str], port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .args(args)
        .args(["--node", &format!("127.0.0.1:{port}")])
        .env("CBDDC_CLUSTER_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lines a child prints, read on a thread of their own so a test can wait for them
/// with a deadline.
pub struct LineReader {
    lines: std::sync::mpsc::Receiver<String>,
}

impl LineReader {
    pub fn of(child: &mut Child) -> Self {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { lines }
    }

    /// The next `count` lines; panics naming `what` if they do not come within `deadline`.
    pub fn take(&self, count: usize, what: &str, deadline: Duration) -> Vec<String> {
        let until = Instant::now() + deadline;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => panic!(
                    "timed out after {deadline:?} waiting for {what}: got {} of {count} lines: {out:#?}",
                    out.len()
                ),
            }
        }
        out
    }
}

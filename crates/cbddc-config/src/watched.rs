use crate::provider::ConfigCell;
use crate::successor::LiveSource;
use crate::{ConfigError, ConfigFile, env_layer, load_file, parse_str};
use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the file must be quiet before it is read again, and how long its text must
/// then stay the same before it is used: editors and orchestrators write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Reads of a file that keeps changing before the latest text is judged as it stands.
const MAX_STABILITY_READS: usize = 20;

/// A configuration file (TOML, or JSON by its `.json` name), watched for changes, with an
/// optional layer on top (the environment, for [`FileProvider::watch_with_env`]).
///
/// The directory is watched rather than the file, so a file replaced by rename (editors,
/// Kubernetes ConfigMaps) is followed; events are debounced, and the file is re-read
/// only when its text changed and then stayed the same for the debounce. A file that fails
/// to parse or validate is announced as [`ConfigEvent::Rejected`] and the last good
/// configuration stays in force; so is a file that became empty, or one from which
/// `node_id`, `cluster_key` or `data_dir` vanished (see [`crate::check_live_successor`]):
/// a running node never falls back to a generated id, the default key or the default
/// data directory because a file was half-written.
pub struct FileProvider {
    shared: Arc<Shared>,
    _debouncer: Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for FileProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProvider")
            .field("path", &self.shared.path)
            .finish()
    }
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    live: LiveSource,
    cell: ConfigCell,
    last_text: Mutex<Option<String>>,
}

impl Shared {
    /// The file's text once two reads a debounce apart agree.
    fn read_stable(&self) -> std::io::Result<String> {
        let mut text = std::fs::read_to_string(&self.path)?;
        for _ in 0..MAX_STABILITY_READS {
            std::thread::sleep(DEBOUNCE);
            let again = std::fs::read_to_string(&self.path)?;
            if again == text {
                break;
            }
            text = again;
        }
        Ok(text)
    }

    /// Re-reads the file if its text changed since the last read.
    fn reload(&self) {
        let source = self.path.display().to_string();
        let read = self.read_stable();
        let text = read.as_ref().ok().cloned();
        {
            let last = self.last_text.lock().unwrap_or_else(|p| p.into_inner());
            if *last == text && text.is_some() {
                return;
            }
        }
        let judged = text.clone();
        let candidate = match read {
            Ok(text) => self
                .live
                .candidate(&text, &source, |t| parse_str(t, &source)),
            Err(source_error) => Err(ConfigError::Read {
                path: self.path.clone(),
                source: source_error,
            }),
        };
        self.cell.offer(candidate, &source);
        // Recorded once its outcome is in force (or refused), so whoever sees this text
        // as the last one read also sees what it did.
        *self.last_text.lock().unwrap_or_else(|p| p.into_inner()) = judged;
    }
}

impl FileProvider {
    /// Watches `path`. Fails if the file cannot be loaded now: there is no last good
    /// configuration to fall back on yet.
    pub fn watch(path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        Self::watch_layered(path, ConfigFile::default())
    }

    /// Watches `path`, with the `CBDDC_*` environment variables overriding the file: what
    /// `cbddc run --config FILE` uses.
    pub fn watch_with_env(path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        Self::watch_layered(path, env_layer(|name| std::env::var(name).ok())?)
    }

    /// Watches `path`, with `overrides` applied over every version of the file.
    pub fn watch_layered(
        path: impl Into<PathBuf>,
        overrides: ConfigFile,
    ) -> Result<Self, ConfigError> {
        let path = absolute(path.into());
        let text = std::fs::read_to_string(&path).ok();
        let file = load_file(&path)?;
        let initial = file.clone().overlay(&overrides).resolve()?;
        let shared = Arc::new(Shared {
            cell: ConfigCell::new(initial),
            last_text: Mutex::new(text),
            live: LiveSource::new(&file, overrides),
            path,
        });
        let watch_error = |e: notify_debouncer_full::notify::Error| ConfigError::Read {
            path: shared.path.clone(),
            source: std::io::Error::other(format!("cannot watch for changes: {e}")),
        };
        let handler_state = shared.clone();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| match result {
            Ok(events) => {
                let ours = events.iter().any(|e| {
                    e.paths
                        .iter()
                        .any(|p| p == &handler_state.path || p.parent() == handler_state.path.parent())
                });
                if ours {
                    handler_state.reload();
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!(path = %handler_state.path.display(), %error, "watching the configuration file failed");
                }
            }
        })
        .map_err(watch_error)?;
        let dir = shared
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
        tracing::info!(path = %shared.path.display(), "watching the configuration file");
        Ok(Self {
            shared,
            _debouncer: debouncer,
        })
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(&path))
        .unwrap_or(path)
}

crate::provider::backed_by_cell!(FileProvider, shared.cell);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigEvent, ConfigProvider, PeerNodeConfiguration};
    use std::time::Instant;
    use tokio::sync::broadcast;

    fn write(path: &Path, port: u16, data: &Path) {
        std::fs::write(path, body(port, data)).unwrap();
    }

    fn body(port: u16, data: &Path) -> String {
        format!(
            "node_id = \"n\"\ntcp_port = {port}\ndata_dir = {:?}\n",
            data.display().to_string()
        )
    }

    /// Waits (bounded) for the next event.
    fn next_event(events: &mut broadcast::Receiver<ConfigEvent>) -> ConfigEvent {
        let start = Instant::now();
        loop {
            match events.try_recv() {
                Ok(event) => return event,
                Err(broadcast::error::TryRecvError::Empty) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "no configuration event within 10 s"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn changed_port(event: ConfigEvent) -> u16 {
        match event {
            ConfigEvent::Changed(c) => c.tcp_port,
            ConfigEvent::Rejected { message, .. } => panic!("rejected: {message}"),
        }
    }

    #[test]
    fn an_edit_in_place_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        write(&path, 1000, dir.path());
        let provider = FileProvider::watch(&path).unwrap();
        let mut events = provider.subscribe();
        assert_eq!(provider.current().tcp_port, 1000);
        write(&path, 1001, dir.path());
        assert_eq!(changed_port(next_event(&mut events)), 1001);
        assert_eq!(provider.current().tcp_port, 1001);
    }

    #[test]
    fn a_file_replaced_by_rename_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        write(&path, 1000, dir.path());
        let provider = FileProvider::watch(&path).unwrap();
        let mut events = provider.subscribe();
        for port in [2000, 2001] {
            let staged = dir.path().join(".node.toml.tmp");
            write(&staged, port, dir.path());
            std::fs::rename(&staged, &path).unwrap();
            assert_eq!(changed_port(next_event(&mut events)), port);
        }
    }

    #[test]
    fn a_broken_or_half_written_file_is_refused_and_the_last_good_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        write(&path, 1000, dir.path());
        let provider = FileProvider::watch(&path).unwrap();
        let mut events = provider.subscribe();

        std::fs::write(&path, "node_id = \"n\"\ntcp_port = 3000\nbogus_field = 1\n").unwrap();
        match next_event(&mut events) {
            ConfigEvent::Rejected { source, message } => {
                assert!(source.ends_with("node.toml"), "{source}");
                assert!(
                    message.contains("bogus_field") && message.contains("node.toml"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(provider.current().tcp_port, 1000);

        // Written in two steps: the first half alone does not parse.
        let full = body(3001, dir.path());
        let (first, second) = full.split_at(full.len() / 2 + 3);
        std::fs::write(&path, first).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, second.as_bytes()).unwrap();
        drop(file);
        let start = Instant::now();
        while provider.current().tcp_port != 3001 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the completed file was not applied"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        // Consume the events of the two-step write, up to the change it caused.
        while !matches!(next_event(&mut events), ConfigEvent::Changed(c) if c.tcp_port == 3001) {}

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            next_event(&mut events),
            ConfigEvent::Rejected { .. }
        ));
        assert_eq!(
            provider.current().tcp_port,
            3001,
            "a deleted file leaves the last good configuration"
        );
    }

    #[test]
    fn an_emptied_or_cut_file_never_changes_the_identity_and_the_whole_file_applies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let whole = |port: u16| format!("{}cluster_key = \"secret\"\n", body(port, dir.path()));
        std::fs::write(&path, whole(1000)).unwrap();
        let provider = FileProvider::watch(&path).unwrap();
        let mut events = provider.subscribe();

        // A slow `cat > file`: truncated first, then written line by line.
        std::fs::write(&path, "").unwrap();
        match next_event(&mut events) {
            ConfigEvent::Rejected { message, .. } => {
                assert!(message.contains("is empty"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "tcp_port = 1001\n").unwrap();
        match next_event(&mut events) {
            ConfigEvent::Rejected { message, .. } => {
                assert!(message.contains("`node_id`"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let partial = whole(1002).replace("cluster_key = \"secret\"\n", "");
        std::fs::write(&path, partial).unwrap();
        match next_event(&mut events) {
            ConfigEvent::Rejected { message, .. } => {
                assert!(message.contains("`cluster_key`"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let current = provider.current();
        assert_eq!(
            (current.tcp_port, current.cluster_key.as_str()),
            (1000, "secret")
        );
        assert_eq!(current.node_id.as_str(), "n");

        std::fs::write(&path, whole(1003)).unwrap();
        assert_eq!(changed_port(next_event(&mut events)), 1003);
        assert_eq!(provider.current().cluster_key, "secret");
    }

    /// A fuzz of the real watcher: seeded random truncations, partial writes in place and
    /// partial files renamed over the real one. Every configuration it puts in force, at
    /// any moment, keeps the original node id, key and data directory.
    #[test]
    fn random_cuts_partial_writes_and_renames_never_change_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let whole = |port: u16| {
            format!(
                "node_id = \"n\"\ndata_dir = {:?}\ncluster_key = \"secret\"\ntcp_port = {port}\nsync_interval_ms = 500\nknown_peers = [{{ node_id = \"m\", address = \"127.0.0.1:7001\" }}]\n[election]\neligible = true\ninterval_ms = 300\n",
                dir.path().display().to_string()
            )
        };
        std::fs::write(&path, whole(1000)).unwrap();
        let provider = FileProvider::watch(&path).unwrap();
        let original = provider.current();
        let mut events = provider.subscribe();
        let check = |config: &PeerNodeConfiguration, after: &str| {
            assert_eq!(config.node_id, original.node_id, "after {after:?}");
            assert_eq!(config.cluster_key, original.cluster_key, "after {after:?}");
            assert_eq!(config.data_dir, original.data_dir, "after {after:?}");
        };
        // Waits until the watcher has judged `text`, then checks what it put in force.
        let judged = |text: &str, events: &mut broadcast::Receiver<ConfigEvent>| {
            let start = Instant::now();
            while provider.shared.last_text.lock().unwrap().as_deref() != Some(text) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "never read {text:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            while let Ok(event) = events.try_recv() {
                if let ConfigEvent::Changed(config) = event {
                    check(&config, text);
                }
            }
            check(&provider.current(), text);
        };
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for step in 0..12u16 {
            let full = whole(1001 + step);
            // Half the cuts fall at the end of a line: those parse, and are the dangerous ones.
            let line_ends: Vec<usize> = full.match_indices('\n').map(|(i, _)| i + 1).collect();
            let text = if step % 4 == 3 {
                full.clone()
            } else if next(2) == 0 {
                full[..line_ends[next(line_ends.len())]].to_string()
            } else {
                full[..next(full.len() + 1)].to_string()
            };
            match next(3) {
                0 => std::fs::write(&path, &text).unwrap(),
                1 => {
                    // A write in two pieces, the first left standing until it is judged.
                    let first = &text[..text.len() / 2];
                    std::fs::write(&path, first).unwrap();
                    judged(first, &mut events);
                    std::fs::write(&path, &text).unwrap();
                }
                _ => {
                    let staged = dir.path().join(".node.toml.tmp");
                    std::fs::write(&staged, &text).unwrap();
                    std::fs::rename(&staged, &path).unwrap();
                }
            }
            judged(&text, &mut events);
        }
        let last = whole(2000);
        std::fs::write(&path, &last).unwrap();
        judged(&last, &mut events);
        assert_eq!(provider.current().tcp_port, 2000, "the whole file applies");
    }

    #[test]
    fn a_missing_or_invalid_file_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileProvider::watch(dir.path().join("absent.toml")).is_err());
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\"tcp_port\": \"x\"}").unwrap();
        let err = FileProvider::watch(&path).unwrap_err();
        assert!(err.to_string().contains("bad.json"), "{err}");
    }

    #[test]
    fn overrides_stay_on_top_of_every_version_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        write(&path, 1000, dir.path());
        let env =
            crate::env_layer(|name| (name == "CBDDC_CLUSTER_KEY").then(|| "from-env".to_string()))
                .unwrap();
        let provider = FileProvider::watch_layered(&path, env).unwrap();
        let mut events = provider.subscribe();
        assert_eq!(provider.current().cluster_key, "from-env");
        std::fs::write(
            &path,
            format!("{}cluster_key = \"from-file\"\n", body(1001, dir.path())),
        )
        .unwrap();
        assert_eq!(changed_port(next_event(&mut events)), 1001);
        assert_eq!(
            provider.current().cluster_key,
            "from-env",
            "the environment wins over the file"
        );
    }
}

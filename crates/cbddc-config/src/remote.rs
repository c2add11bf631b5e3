use crate::provider::ConfigCell;
use crate::successor::LiveSource;
use crate::{ConfigError, ConfigFile, PeerNodeConfiguration, parse_json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a [`RemoteProvider`] polls.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Time between polls while the server answers.
    pub poll_interval: Duration,
    /// Longest wait between polls while the server is unreachable (the wait doubles from
    /// `poll_interval` up to this).
    pub max_backoff: Duration,
    /// Limit of one request.
    pub request_timeout: Duration,
    /// Applied over every configuration received (e.g. the environment).
    pub overrides: ConfigFile,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(120),
            request_timeout: Duration::from_secs(5),
            overrides: ConfigFile::default(),
        }
    }
}

/// A configuration served as JSON by an HTTP server, polled with `If-None-Match` so an
/// unchanged configuration costs a `304`. While the server is unreachable or failing,
/// polls back off and the last good configuration stays in force.
///
/// `https://` URLs need the crate's `remote-https` feature (rustls with ring); without it
/// they are refused at start with a message saying so.
pub struct RemoteProvider {
    url: String,
    cell: Arc<ConfigCell>,
    failures: Arc<AtomicU64>,
    stop: Option<Sender<()>>,
    poller: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RemoteProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteProvider")
            .field("url", &self.url)
            .finish()
    }
}

enum Fetched {
    NotModified,
    Body { text: String, etag: Option<String> },
}

struct Poller {
    url: String,
    agent: ureq::Agent,
    options: RemoteOptions,
    etag: Option<String>,
    /// Set once the first configuration is in force: every later one passes its gate.
    live: Option<LiveSource>,
}

impl Poller {
    fn fetch(&self) -> Result<Fetched, String> {
        let mut request = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json");
        if let Some(etag) = &self.etag {
            request = request.header("If-None-Match", etag);
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            304 => Ok(Fetched::NotModified),
            200 => {
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let text = response
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| e.to_string())?;
                Ok(Fetched::Body { text, etag })
            }
            status => Err(format!("answered HTTP {status}")),
        }
    }

    /// The configuration the server's `text` stands for: the first one as it is, later
    /// ones only if a running node may adopt them (see [`crate::check_live_successor`]).
    fn resolve(&mut self, text: &str) -> Result<PeerNodeConfiguration, ConfigError> {
        let url = self.url.clone();
        match &self.live {
            Some(live) => live.candidate(text, &url, |t| parse_json(t, &url)),
            None => {
                let file = parse_json(text, &url)?;
                let config = file.clone().overlay(&self.options.overrides).resolve()?;
                self.live = Some(LiveSource::new(&file, self.options.overrides.clone()));
                Ok(config)
            }
        }
    }

    fn run(
        mut self,
        cell: Arc<ConfigCell>,
        failures: Arc<AtomicU64>,
        stop: std::sync::mpsc::Receiver<()>,
    ) {
        let mut delay = self.options.poll_interval;
        let mut failing = false;
        // A server that sends no tag (or a new one each time) serves a broken
        // configuration again at every poll: it is refused, and logged, once per change.
        let mut refused: Option<String> = None;
        loop {
            match stop.recv_timeout(delay) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            match self.fetch() {
                Ok(fetched) => {
                    if failing {
                        tracing::info!(url = %self.url, "configuration server is reachable again");
                    }
                    failing = false;
                    failures.store(0, Ordering::SeqCst);
                    delay = self.options.poll_interval;
                    if let Fetched::Body { text, etag } = fetched {
                        self.etag = etag;
                        if refused.as_deref() == Some(text.as_str()) {
                            continue;
                        }
                        let candidate = self.resolve(&text);
                        refused = candidate.is_err().then_some(text);
                        cell.offer(candidate, &self.url);
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(url = %self.url, %error, "configuration server unreachable; keeping the last good configuration");
                    }
                    failing = true;
                    failures.fetch_add(1, Ordering::SeqCst);
                    delay = (delay * 2).min(self.options.max_backoff);
                }
            }
        }
    }
}

impl RemoteProvider {
    /// Fetches the configuration at `url` now (failing if it cannot: there is no last good
    /// configuration yet), then polls it in the background.
    pub fn start(url: &str, options: RemoteOptions) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError::Remote {
            url: url.to_string(),
            message,
        };
        if url.starts_with("https://") && !cfg!(feature = "remote-https") {
            return Err(fail(
                "https:// needs cbddc built with the `remote-https` feature; use http:// on a trusted network".into(),
            ));
        }
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(fail("the URL must start with http:// or https://".into()));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(options.request_timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut poller = Poller {
            url: url.to_string(),
            agent,
            options,
            etag: None,
            live: None,
        };
        let initial = match poller.fetch().map_err(fail)? {
            Fetched::Body { text, etag } => {
                poller.etag = etag;
                poller.resolve(&text)?
            }
            Fetched::NotModified => {
                return Err(fail("answered 304 to a request without a tag".into()));
            }
        };
        let cell = Arc::new(ConfigCell::new(initial));
        let (stop, stopped) = std::sync::mpsc::channel();
        let failures = Arc::new(AtomicU64::new(0));
        let (poller_cell, poller_failures) = (cell.clone(), failures.clone());
        let handle = std::thread::Builder::new()
            .name("cbddc-config-poll".into())
            .spawn(move || poller.run(poller_cell, poller_failures, stopped))
            .map_err(|e| fail(format!("cannot start the polling thread: {e}")))?;
        Ok(Self {
            url: url.to_string(),
            cell,
            failures,
            stop: Some(stop),
            poller: Some(handle),
        })
    }
}

impl RemoteProvider {
    /// Polls that failed in a row (0 while the server answers).
    pub fn consecutive_failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }
}

impl Drop for RemoteProvider {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.poller.take() {
            let _ = handle.join();
        }
    }
}

crate::provider::backed_by_cell!(RemoteProvider, cell);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigEvent, ConfigProvider};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// A tiny configuration server on loopback: serves `body` with an ETag of its version,
    /// answers 304 to a matching If-None-Match, and counts what it served.
    struct ConfigServer {
        port: u16,
        state: Arc<Mutex<(u32, String)>>,
        full: Arc<AtomicUsize>,
        not_modified: Arc<AtomicUsize>,
        stop: Arc<std::sync::atomic::AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl ConfigServer {
        fn start(port: u16, state: Arc<Mutex<(u32, String)>>) -> Self {
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let (full, not_modified) =
                (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (s, f, n, halt) = (
                state.clone(),
                full.clone(),
                not_modified.clone(),
                stop.clone(),
            );
            let thread = std::thread::spawn(move || {
                while !halt.load(Ordering::SeqCst) {
                    let Ok((mut stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    stream.set_nonblocking(false).unwrap();
                    let mut tag = None;
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("if-none-match:") {
                            tag = Some(v.trim().to_string());
                        }
                    }
                    let (version, body) = s.lock().unwrap().clone();
                    let etag = format!("\"v{version}\"");
                    // Version 0 stands for a server that sends no tags.
                    let reply = if version == 0 {
                        f.fetch_add(1, Ordering::SeqCst);
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else if tag.as_deref() == Some(etag.as_str()) {
                        n.fetch_add(1, Ordering::SeqCst);
                        format!(
                            "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
                        )
                    } else {
                        f.fetch_add(1, Ordering::SeqCst);
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = stream.write_all(reply.as_bytes());
                }
            });
            Self {
                port,
                state,
                full,
                not_modified,
                stop,
                thread: Some(thread),
            }
        }

        fn url(&self) -> String {
            format!("http://127.0.0.1:{}/node.json", self.port)
        }

        fn shut_down(mut self) -> (u16, Arc<Mutex<(u32, String)>>) {
            self.stop.store(true, Ordering::SeqCst);
            self.thread.take().unwrap().join().unwrap();
            (self.port, self.state.clone())
        }
    }

    fn config_json(port: u16, data: &std::path::Path) -> String {
        format!(
            r#"{{"node_id":"remote-node","tcp_port":{port},"data_dir":{:?}}}"#,
            data.display().to_string()
        )
    }

    fn fast() -> RemoteOptions {
        RemoteOptions {
            poll_interval: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            ..RemoteOptions::default()
        }
    }

    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn polls_with_etags_follows_changes_and_survives_the_server_going_away() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(Mutex::new((1, config_json(4000, dir.path()))));
        let server = ConfigServer::start(0, state.clone());
        let provider = RemoteProvider::start(&server.url(), fast()).unwrap();
        assert_eq!(provider.current().tcp_port, 4000);
        assert_eq!(provider.current().node_id.as_str(), "remote-node");

        wait_for("a few 304 answers", || {
            server.not_modified.load(Ordering::SeqCst) >= 3
        });
        assert_eq!(
            server.full.load(Ordering::SeqCst),
            1,
            "an unchanged configuration is not sent again"
        );

        let mut events = provider.subscribe();
        *state.lock().unwrap() = (2, config_json(4001, dir.path()));
        wait_for("the new port", || provider.current().tcp_port == 4001);
        assert!(matches!(events.try_recv(), Ok(ConfigEvent::Changed(_))));

        // An invalid configuration is refused once (its tag is remembered).
        *state.lock().unwrap() = (3, r#"{"tcp_port":"not a number"}"#.to_string());
        wait_for("the refusal", || {
            matches!(events.try_recv(), Ok(ConfigEvent::Rejected { .. }))
        });
        assert_eq!(provider.current().tcp_port, 4001);

        // The server goes away: the last good configuration stays; it comes back with a change.
        let (port, state) = server.shut_down();
        *state.lock().unwrap() = (4, config_json(4002, dir.path()));
        wait_for("polls to fail while the server is away", || {
            provider.consecutive_failures() >= 2
        });
        assert_eq!(provider.current().tcp_port, 4001);
        let server = ConfigServer::start(port, state);
        wait_for("the change after the server returned", || {
            provider.current().tcp_port == 4002
        });
        drop(provider);
        server.shut_down();
    }

    #[test]
    fn a_broken_configuration_served_without_tags_is_refused_once_per_change() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(Mutex::new((0, config_json(4100, dir.path()))));
        let server = ConfigServer::start(0, state.clone());
        let provider = RemoteProvider::start(&server.url(), fast()).unwrap();
        let mut events = provider.subscribe();
        *state.lock().unwrap() = (0, r#"{"tcp_port":"not a number"}"#.to_string());
        let served = server.full.load(Ordering::SeqCst);
        wait_for("several polls of the broken body", || {
            server.full.load(Ordering::SeqCst) >= served + 5
        });
        let mut refusals = 0;
        while let Ok(event) = events.try_recv() {
            if matches!(event, ConfigEvent::Rejected { .. }) {
                refusals += 1;
            }
        }
        assert_eq!(
            refusals, 1,
            "one refusal for one broken body, not one per poll"
        );
        assert_eq!(provider.current().tcp_port, 4100);

        // A change of the body is news again, broken or not.
        *state.lock().unwrap() = (0, config_json(4101, dir.path()));
        wait_for("the repaired configuration", || {
            provider.current().tcp_port == 4101
        });
        drop(provider);
        server.shut_down();
    }

    #[test]
    fn an_unreachable_server_or_a_bad_url_at_start_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err =
            RemoteProvider::start(&format!("http://127.0.0.1:{port}/c.json"), fast()).unwrap_err();
        assert!(err.to_string().contains("configuration server"), "{err}");
        assert!(RemoteProvider::start("ftp://x/c.json", fast()).is_err());
    }
}

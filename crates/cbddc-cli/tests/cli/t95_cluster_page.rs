//! The live cluster page in a real headless Chromium, driven over WebDriver
//! (chromedriver's HTTP API): it must show a write's effect on the lag and a leadership
//! change while it stays open.

use crate::harness::*;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session; both end when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn call(method: &str, url: &str, body: Option<Value>) -> Value {
    let answer = match (method, body) {
        ("POST", Some(body)) => ureq::post(url)
            .header("content-type", "application/json")
            .send(body.to_string()),
        ("DELETE", _) => ureq::delete(url).call(),
        _ => ureq::get(url).call(),
    };
    let mut answer = answer.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = answer.body_mut().read_to_string().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
}

impl Browser {
    fn open(url: &str) -> Self {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(program).exists(),
                "{program} is missing: install Debian's chromium and chromium-driver packages, or run the suite with `cargo xtask test`, which does"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver to answer", Duration::from_secs(20), || {
            ureq::get(&format!("{base}/status")).call().is_ok()
        });
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }}}});
        let created = call("POST", &format!("{base}/session"), Some(capabilities));
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_string();
        let browser = Self {
            driver,
            base,
            session,
            _profile: profile,
        };
        browser.post("url", json!({ "url": url }));
        browser
    }

    fn post(&self, what: &str, body: Value) -> Value {
        call(
            "POST",
            &format!("{}/session/{}/{what}", self.base, self.session),
            Some(body),
        )["value"]
            .clone()
    }

    /// Runs `script` in the page and returns its result.
    fn eval(&self, script: &str) -> Value {
        self.post("execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Waits until the page's `script` returns `expected`.
    fn wait_for(&self, what: &str, script: &str, expected: Value) {
        let mut seen = Value::Null;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(what, Duration::from_secs(20), || {
                seen = self.eval(script);
                seen == expected
            })
        }));
        if found.is_err() {
            let log = self.eval("return document.getElementById('log').innerText");
            panic!("the page never showed {what}: it shows {seen}; its log: {log}");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_cluster_page_shows_the_lag_of_a_write_and_a_leadership_change_live() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, metrics) = (free_port(), free_port(), free_port());
    let election = "[election]\ninterval_ms = 200\npeer_timeout_ms = 1000\n";
    let mut a = RunningNode::start_with(dir.path(), "page-a", pa, &[("page-b", pb)], &[], election);
    let _b = RunningNode::start_with(
        dir.path(),
        "page-b",
        pb,
        &[("page-a", pa)],
        &[],
        &format!("metrics_address = \"127.0.0.1:{metrics}\"\n{election}"),
    );
    wait_until(
        "both nodes to follow page-a",
        Duration::from_secs(20),
        || status_json(pb)["leader"] == "page-a" && status_json(pa)["leader"] == "page-a",
    );

    let browser = Browser::open(&format!("http://127.0.0.1:{metrics}/"));
    let leader = "return document.getElementById('leader').textContent";
    let lag = "return Array.from(document.querySelectorAll('#peers tr')).map(r => r.dataset.peer + '=' + r.querySelector('.lag').textContent).join(',')";
    browser.wait_for("page-b's view of the leader", leader, json!("page-a"));
    browser.wait_for("no lag while both are up", lag, json!("page-a=0"));

    // page-a dies: page-b takes over, and its writes wait for page-a.
    a.kill_9();
    browser.wait_for("page-b leading", leader, json!("page-b"));
    for i in 0..3 {
        assert!(
            cbddc(&["put", "docs", &format!("d{i}"), "1"], pb)
                .status
                .success()
        );
    }
    browser.wait_for("a lag of three entries", lag, json!("page-a=3"));
    // `cbddc status` tells the same lag.
    let status = status_json(pb);
    let peer = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == "page-a")
        .cloned()
        .unwrap();
    assert_eq!(peer["lag_entries"], 3, "{status}");
    let text = stdout(&cbddc(&["status"], pb));
    assert!(text.contains("3 entries behind"), "{text}");
    let log = browser.eval("return document.getElementById('log').innerText");
    let log = log.as_str().unwrap();
    assert!(log.contains("leader: page-a → page-b"), "{log}");
    assert!(log.contains("lag of page-a: 0 → "), "{log}");

    // page-a comes back and catches up: the lag goes back to nothing.
    a.launch();
    browser.wait_for("the lag to clear", lag, json!("page-a=0"));
    browser.wait_for("page-a leading again", leader, json!("page-a"));
}

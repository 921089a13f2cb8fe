//! A headless browser for the page tests: Debian's Chromium (`/usr/bin/chromium`) driven
//! through WebDriver by `chromedriver`, with fantoccini. Not part of `harness/mod.rs` (only
//! `tests/ui.rs` declares it: the other test binaries need not build fantoccini).

use super::harness::{KillOnDrop, Lines};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The browser Debian installs (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The flags the browser runs with: headless, as root, and nothing of its own on the network
/// (no background requests, updates, sync, QUIC), so the only requests are the page's.
const FLAGS: [&str; 12] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--window-size=1280,960",
];

/// The path of `chromedriver` on `PATH` (package `chromium-driver`) when it and the browser
/// are installed; the reason otherwise.
pub fn available() -> Result<PathBuf, String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    let driver = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.exists());
    driver.ok_or_else(|| "chromedriver is missing (apt-get install chromium-driver)".into())
}

/// A browser session; the driver (and with it the browser) is killed when it is dropped.
pub struct Browser {
    pub client: Client,
    _driver: KillOnDrop,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session in a new, empty profile.
    pub async fn start(driver: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = KillOnDrop(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let out = Lines::new(child.stdout.take().expect("stdout is piped"));
        out.wait_for(Duration::from_secs(20), |l| {
            l.contains("started successfully").then_some(())
        })
        .unwrap_or_else(|e| panic!("chromedriver did not start ({e}):\n{}", out.text()));
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let caps = caps.as_object().unwrap().clone().into_iter().collect();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Browser {
            client,
            _driver: child,
            _profile: profile,
        }
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Clicks the element `css` selects (found again if the page replaced it meanwhile).
    pub async fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let e = (self.client.find(Locator::Css(css)).await)
                .unwrap_or_else(|e| panic!("no {css}: {e}"));
            match e.click().await {
                Ok(()) => return,
                Err(e) if tries < 5 && e.to_string().contains("stale element") => tries += 1,
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Types `text` into the element `css` selects, replacing what it holds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e =
            (self.client.find(Locator::Css(css)).await).unwrap_or_else(|e| panic!("no {css}: {e}"));
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// A PNG of the window, kept under `target/ui-screenshots/NAME` and, when
    /// `DCORE_UI_SCREENSHOTS` names a directory (`docs/images` to refresh the docs' pictures),
    /// there too.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join(name), &png).unwrap();
        if let Some(dir) = std::env::var_os("DCORE_UI_SCREENSHOTS") {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), &png).unwrap();
        }
    }

    /// Starts recording what the page loads from now on (no entry dropped) and every request
    /// the Content-Security-Policy refused.
    pub async fn record_requests(&self) {
        self.js("performance.setResourceTimingBufferSize(100000);
             window.__refused = [];
             document.addEventListener('securitypolicyviolation',
               (e) => window.__refused.push(e.blockedURI + ' (' + e.violatedDirective + ')'));
             return true;")
            .await;
    }

    /// Asserts that every request the page made since [`Browser::record_requests`] went to
    /// `origin` (`http://host:port/`) and that the policy refused none; returns them.
    pub async fn requests_stayed_on(&self, origin: &str) -> Vec<(String, String, u64)> {
        let (seen, refused) = self.requests().await;
        let elsewhere: Vec<_> = (seen.iter())
            .filter(|(url, ..)| !url.starts_with(origin))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "requests that left {origin}: {elsewhere:?}"
        );
        assert!(
            refused.is_empty(),
            "requests the policy refused: {refused:?}"
        );
        seen
    }

    /// Every request the page made (the document and each resource or fetch): its address,
    /// its kind and the bytes of its body; and what the policy refused.
    async fn requests(&self) -> (Vec<(String, String, u64)>, Vec<String>) {
        let v = self
            .js("const all = performance.getEntriesByType('navigation')
                   .concat(performance.getEntriesByType('resource'));
                 return {
                   seen: all.map((e) => [e.name, e.initiatorType || 'navigation',
                                         e.encodedBodySize || 0]),
                   refused: window.__refused || [],
                 };")
            .await;
        let seen = (v["seen"].as_array().unwrap().iter())
            .map(|e| {
                let kind = e[1].as_str().unwrap_or("").to_string();
                (
                    e[0].as_str().unwrap().to_string(),
                    kind,
                    e[2].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let refused = (v["refused"].as_array().unwrap().iter())
            .map(|s| s.as_str().unwrap_or("").to_string())
            .collect();
        (seen, refused)
    }
}

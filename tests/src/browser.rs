//! A real headless Chromium driven over WebDriver (`chromedriver` and the `fantoccini` client), for the
//! console's tests. Screenshots go to `<target>/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::cluster::free_port;
use crate::provision;

/// A browser session; the driver (and with it the browser) ends when this is dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts Chromium headless with a window of `width` × `height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        let (chromium, chromedriver) = provision::chromium();
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let mut args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--no-first-run".to_string(),
            format!("--window-size={width},{height}"),
        ];
        if provision::running_as_root() {
            args.push("--no-sandbox".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    panic!("cannot start a Chromium session: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let browser = Browser { client, driver };
        browser.resize(width, height).await;
        browser
    }

    /// Sets the viewport (the page's inner size) to `width` × `height`.
    pub async fn resize(&self, width: u32, height: u32) {
        // The window's frame takes some of its size: measure it and make up for it.
        let inner: Value =
            self.client.execute("return [window.innerWidth, window.innerHeight]", vec![]).await.unwrap();
        let (w, h) = self.client.get_window_size().await.unwrap();
        let extra_w = w.saturating_sub(inner[0].as_u64().unwrap_or(w));
        let extra_h = h.saturating_sub(inner[1].as_u64().unwrap_or(h));
        self.client
            .set_window_size((u64::from(width) + extra_w) as u32, (u64::from(height) + extra_h) as u32)
            .await
            .unwrap();
    }

    /// Saves a PNG of the viewport as `<target>/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = provision::tools_dir().parent().expect("the target directory").join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.client.find(Locator::Css(css)).await.ok()?.text().await.ok()
    }

    /// Clicks the first element matching `css`, waiting up to ten seconds for it to be there and enabled.
    pub async fn click(&self, css: &str) {
        let el = self
            .wait(&format!("{css} to be clickable"), Duration::from_secs(10), move || async move {
                let el = self.client.find(Locator::Css(css)).await.ok()?;
                el.is_enabled().await.ok()?.then_some(el)
            })
            .await;
        el.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Replaces what the input matching `css` holds by typing `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("finding {css}: {e}"));
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Waits until `f` gives something, polling every 200 ms.
    pub async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(value) = f().await {
                return value;
            }
            if start.elapsed() > timeout {
                let _ = self
                    .screenshot(&format!("timeout-{}", what.replace(|c: char| !c.is_alphanumeric(), "-")))
                    .await;
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the page fits its viewport's width (nothing to scroll sideways outside its tables).
    pub async fn fits_width(&self) -> bool {
        let v: Value = self
            .client
            .execute("return document.documentElement.scrollWidth <= window.innerWidth + 1", vec![])
            .await
            .unwrap();
        v.as_bool().unwrap_or(false)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

//! A minimal W3C WebDriver client for headless Chromium through chromedriver: enough to
//! open pages, fill forms, click, read text, and save screenshots.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::http;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session. Ended when dropped, browser included:
/// chromedriver starts Chromium as its own child, which outlives a killed chromedriver, so
/// the driver runs in a process group of its own and the whole group is killed.
pub struct Browser {
    port: u16,
    session: String,
    driver: Child,
    profile: PathBuf,
}

/// Why a browser step failed.
pub type Result<T> = std::result::Result<T, String>;

impl Browser {
    /// Starts chromedriver and a headless Chromium, or `None` outside CI when they are not
    /// installed.
    ///
    /// # Panics
    /// In CI when chromium or chromedriver is missing, or if they do not start.
    pub async fn start() -> Option<Self> {
        let driver = crate::require("chromedriver", "chromium-driver")?;
        let chromium = crate::require("chromium", "chromium")?;
        let port = crate::free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        for _ in 0..200 {
            if let Ok(r) = http::request(port, "GET", "/status", &[], None).await {
                if r.status == 200 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = crate::temp_dir("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1000,800",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let reply = post(port, "/session", &capabilities)
            .await
            .expect("create a browser session");
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {reply}"))
            .to_owned();
        Some(Self {
            port,
            session,
            driver: child,
            profile,
        })
    }

    fn path(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    /// Opens `url`.
    ///
    /// # Errors
    /// WebDriver errors.
    pub async fn goto(&self, url: &str) -> Result<()> {
        post(self.port, &self.path("/url"), &json!({ "url": url }))
            .await
            .map(|_| ())
    }

    /// The first element matching a CSS selector.
    ///
    /// # Errors
    /// If there is none.
    pub async fn find(&self, css: &str) -> Result<String> {
        let reply = post(
            self.port,
            &self.path("/element"),
            &json!({"using": "css selector", "value": css}),
        )
        .await?;
        reply["value"][ELEMENT]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no element {css}: {reply}"))
    }

    /// Runs `step` on the element matching `css`, retrying (bounded: 2 s) while the page is
    /// still changing under it: after a click that navigates, the old page's elements go
    /// stale and the new page's may not exist yet.
    async fn on_element(&self, css: &str, step: impl Fn(String) -> String) -> Result<Value> {
        let mut last = String::new();
        for _ in 0..40 {
            let outcome = match self.find(css).await {
                Ok(id) => {
                    let path = self.path(&step(id));
                    if path.ends_with("/text") {
                        get(self.port, &path).await
                    } else {
                        post(self.port, &path, &json!({})).await
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Err(e) if e.contains("stale element") || e.contains("no element") => last = e,
                other => return other,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    /// Types `text` into the element matching `css`.
    ///
    /// # Errors
    /// WebDriver errors.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.find(css).await?;
        post(
            self.port,
            &self.path(&format!("/element/{id}/value")),
            &json!({ "text": text }),
        )
        .await
        .map(|_| ())
    }

    /// Clicks the element matching `css`.
    ///
    /// # Errors
    /// WebDriver errors.
    pub async fn click(&self, css: &str) -> Result<()> {
        self.on_element(css, |id| format!("/element/{id}/click"))
            .await
            .map(|_| ())
    }

    /// Clicks a link or submit button and waits (bounded: 5 s) until the next page has
    /// replaced this one, so that what follows reads the new page, not the old.
    ///
    /// # Errors
    /// WebDriver errors, or if no new page arrives in time.
    pub async fn navigate_by(&self, css: &str) -> Result<()> {
        let before = self.find("html").await?;
        self.click(css).await?;
        for _ in 0..100 {
            match self.find("html").await {
                Ok(now) if now != before => return Ok(()),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Err(format!("clicking {css} did not load a new page"))
    }

    /// The visible text of the element matching `css`.
    ///
    /// # Errors
    /// WebDriver errors.
    pub async fn text(&self, css: &str) -> Result<String> {
        let reply = self
            .on_element(css, |id| format!("/element/{id}/text"))
            .await?;
        Ok(reply["value"].as_str().unwrap_or_default().to_owned())
    }

    /// Where the element matching `css` is drawn: x, y, width, height in CSS pixels.
    ///
    /// # Errors
    /// WebDriver errors.
    pub async fn rect(&self, css: &str) -> Result<[f64; 4]> {
        let id = self.find(css).await?;
        let reply = get(self.port, &self.path(&format!("/element/{id}/rect"))).await?;
        let v = &reply["value"];
        let n = |k: &str| v[k].as_f64().ok_or_else(|| format!("no {k} in {reply}"));
        Ok([n("x")?, n("y")?, n("width")?, n("height")?])
    }

    /// The current URL.
    ///
    /// # Errors
    /// WebDriver errors.
    pub async fn url(&self) -> Result<String> {
        let reply = get(self.port, &self.path("/url")).await?;
        Ok(reply["value"].as_str().unwrap_or_default().to_owned())
    }

    /// Saves a PNG screenshot to `file`.
    ///
    /// # Errors
    /// WebDriver or file errors.
    pub async fn screenshot(&self, file: &Path) -> Result<()> {
        let reply = get(self.port, &self.path("/screenshot")).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(reply["value"].as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(file, png).map_err(|e| e.to_string())
    }

    /// Every cookie the browser holds for the current page (name and value).
    ///
    /// # Errors
    /// WebDriver errors.
    pub async fn cookies(&self) -> Result<Vec<(String, String)>> {
        let reply = get(self.port, &self.path("/cookie")).await?;
        Ok(reply["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or_default().to_owned(),
                            c["value"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium and its helpers are in chromedriver's process group; a helper that left
        // it still names the profile folder on its command line.
        if let Some(pid) = self.driver.id() {
            crate::kill_group(pid);
        }
        let _ = self.driver.start_kill();
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &self.profile.display().to_string()])
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn post(port: u16, path: &str, body: &Value) -> Result<Value> {
    let text = body.to_string();
    let reply = http::request(
        port,
        "POST",
        path,
        &[("content-type", "application/json")],
        Some(&text),
    )
    .await
    .map_err(|e| e.to_string())?;
    check(&reply)
}

async fn get(port: u16, path: &str) -> Result<Value> {
    let reply = http::request(port, "GET", path, &[], None)
        .await
        .map_err(|e| e.to_string())?;
    check(&reply)
}

fn check(reply: &http::Response) -> Result<Value> {
    let value: Value =
        serde_json::from_str(&reply.body).map_err(|e| format!("{e}: {}", reply.body))?;
    if reply.status == 200 {
        Ok(value)
    } else {
        Err(format!(
            "WebDriver error {}: {}",
            reply.status, value["value"]["message"]
        ))
    }
}

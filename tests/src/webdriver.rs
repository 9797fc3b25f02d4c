//! A real browser for the web UI's tests: Debian's Chromium, headless,
//! driven through ChromeDriver over the W3C WebDriver protocol (JSON over
//! HTTP on loopback). This is the protocol's client side only — sessions,
//! navigation, elements, keys, scripts, alerts, cookies, screenshots —
//! written against the W3C WebDriver specification; the browser and the
//! driver are the real programs, installed by `./scripts/test`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key WebDriver's element reference lives under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The install step named when the browser is missing.
pub const BROWSER_HINT: &str =
    "run ./scripts/test (it installs them), or: apt-get install -y chromium chromium-driver";

/// A WebDriver error: its `error` code and message.
#[derive(Debug, Clone)]
pub struct WdError {
    /// `no such element`, `no such alert`, …
    pub error: String,
    /// What the driver said.
    pub message: String,
}

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

fn find(program: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed: {BROWSER_HINT}"))
}

impl Browser {
    /// Start ChromeDriver and a headless Chromium session of
    /// `width`×`height` pixels.
    pub fn start(width: u32, height: u32) -> Self {
        let chromium = find("chromium");
        let chromedriver = find("chromedriver");
        let port = crate::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("{base}/status"))
                .send()
                .ok()
                .and_then(|r| r.bytes().ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let resp: Value = client
            .post(format!("{base}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .send()
            .and_then(|r| r.bytes())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .expect("a WebDriver session");
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromium did not start: {resp}"))
            .to_owned();
        Self {
            driver,
            base,
            session,
            client,
            _profile: profile,
        }
    }

    /// A command on the session: its `value`, or the WebDriver error.
    pub fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let bytes = req.send().and_then(|r| r.bytes()).map_err(|e| WdError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let resp: Value = serde_json::from_slice(&bytes).map_err(|e| WdError {
            error: "not JSON".into(),
            message: e.to_string(),
        })?;
        let value = resp["value"].clone();
        match value["error"].as_str() {
            Some(error) => Err(WdError {
                error: error.to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            }),
            None => Ok(value),
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {path}: {}: {}", e.error, e.message))
    }

    /// Go to `url` and wait for the page to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap().to_owned()
    }

    /// The page's title.
    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None).as_str().unwrap().to_owned()
    }

    /// The page's HTML as the browser now has it.
    pub fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The first element matching `css`, if any.
    pub fn try_find(&self, css: &str) -> Option<String> {
        let body = json!({"using": "css selector", "value": css});
        self.try_cmd("POST", "/element", Some(body))
            .ok()
            .map(|v| v[ELEMENT].as_str().unwrap().to_owned())
    }

    /// The first element matching `css`.
    pub fn find(&self, css: &str) -> String {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element {css:?} on {}:\n{}", self.url(), self.source()))
    }

    /// Every element matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let body = json!({"using": "css selector", "value": css});
        self.cmd("POST", "/elements", Some(body))
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[ELEMENT].as_str().unwrap().to_owned())
            .collect()
    }

    /// The element whose link text is `text`.
    pub fn link(&self, text: &str) -> String {
        let body = json!({"using": "link text", "value": text});
        let v = self.cmd("POST", "/element", Some(body));
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Click element `el`.
    pub fn click(&self, el: &str) {
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    /// Click element `el`, which loads another page (a link, a form's
    /// button), and wait until that page has loaded: a click returns as
    /// soon as the event is dispatched.
    pub fn click_to_load(&self, el: &str) {
        self.execute("window.__berthOldPage = true;", vec![]);
        self.click(el);
        self.wait_for_load();
    }

    /// Press `keys` on the focused element, which loads another page (Enter
    /// in a form), and wait until it has loaded.
    pub fn keys_to_load(&self, keys: &str) {
        self.execute("window.__berthOldPage = true;", vec![]);
        self.keys(keys);
        self.wait_for_load();
    }

    fn wait_for_load(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.try_cmd(
                "POST",
                "/execute/sync",
                Some(json!({"script": "return window.__berthOldPage === undefined && document.readyState === 'complete';", "args": []})),
            );
            if state.is_ok_and(|v| v == true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new page loaded: {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Type `text` into element `el`.
    pub fn type_into(&self, el: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Clear element `el` (an input).
    pub fn clear(&self, el: &str) {
        self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({})));
    }

    /// The rendered text of element `el`.
    pub fn text(&self, el: &str) -> String {
        self.cmd("GET", &format!("/element/{el}/text"), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Attribute `name` of element `el`.
    pub fn attr(&self, el: &str, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/element/{el}/attribute/{name}"), None)
            .as_str()
            .map(str::to_owned)
    }

    /// Whether element `el` is displayed.
    pub fn displayed(&self, el: &str) -> bool {
        self.cmd("GET", &format!("/element/{el}/displayed"), None) == true
    }

    /// The focused element.
    pub fn active(&self) -> String {
        let v = self.cmd("GET", "/element/active", None);
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Press keys (`\u{E004}` is Tab, `\u{E007}` Enter) on the focused
    /// element, as a keyboard would.
    pub fn keys(&self, keys: &str) {
        let mut actions = Vec::new();
        for k in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": k.to_string()}));
            actions.push(json!({"type": "keyUp", "value": k.to_string()}));
        }
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        );
    }

    /// Run `script` (a function body) with `args` in the page.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Run `script`, which calls `arguments[arguments.length - 1]` with
    /// its result, in the page.
    pub fn execute_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The text of an open alert, confirm or prompt dialog, if one is open.
    pub fn alert(&self) -> Option<String> {
        self.try_cmd("GET", "/alert/text", None)
            .ok()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// The cookies the page's origin holds.
    pub fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Set a cookie on the current page's origin.
    pub fn add_cookie(&self, name: &str, value: &str) {
        self.cmd(
            "POST",
            "/cookie",
            Some(json!({"cookie": {"name": name, "value": value, "path": "/"}})),
        );
    }

    /// Forget every cookie.
    pub fn delete_cookies(&self) {
        self.cmd("DELETE", "/cookie", None);
    }

    /// Grant the page permission `name` (`clipboard-read`, …).
    pub fn grant(&self, name: &str) {
        self.cmd(
            "POST",
            "/permissions",
            Some(json!({"descriptor": {"name": name}, "state": "granted"})),
        );
    }

    /// Save a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Resize the window (a phone: 390×844).
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .client
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

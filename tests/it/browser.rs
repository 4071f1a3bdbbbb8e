//! Real-browser tests: headless Chromium driven through chromedriver (fantoccini) against
//! the in-process gateway. They cover what only a browser shows: the login round trip
//! through `auth.localhost`, HttpOnly cookies hidden from scripts, in-page fetch before
//! and after a revocation, and SameSite=Strict apps when the auth domain is another site
//! (Chromium treats every `*.localhost` host as its own site).
//!
//! Needs Debian's `chromium` and `chromium-driver`: `.ci/install-browser.sh` installs them.
//! Without them the test fails; it never skips silently.

use crate::common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM_CANDIDATES: &[&str] = &["/usr/bin/chromium", "/usr/lib/chromium/chromium"];

/// How long one scenario may take before the test fails (a hung browser never hangs CI).
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);
/// How long the browser gets to settle on a page after a click or a navigation.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);

const STRICT_APP: &str = r#"
[[app]]
name = "strict"
hosts = ["strict.localhost"]
origin = "builtin:echo"
same_site = "strict"
allow_emails = ["*@example.com"]
"#;

fn chromium_binary() -> &'static str {
    CHROMIUM_CANDIDATES
        .iter()
        .copied()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is not installed (looked for {CHROMIUM_CANDIDATES:?}). \
                 The browser tests need Debian's `chromium` and `chromium-driver`: \
                 run `bash .ci/install-browser.sh` (as root)."
            )
        })
}

fn chromedriver_binary() -> &'static str {
    assert!(
        Path::new(CHROMEDRIVER).exists(),
        "chromedriver is not installed ({CHROMEDRIVER} is missing). The browser tests need \
         Debian's `chromium` and `chromium-driver`: run `bash .ci/install-browser.sh` (as root)."
    );
    CHROMEDRIVER
}

/// chromedriver, started by this test in its own process group. Dropping it kills the
/// group (chromedriver and any Chromium it launched), also when a test panics.
pub(crate) struct Driver {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Driver {
    pub(crate) async fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        chromium_binary();
        let bin = chromedriver_binary();
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("chromedriver log file");
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().expect("log file")))
            .stderr(Stdio::from(log.reopen().expect("log file")))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let mut d = Driver { child, port, log };
        d.wait_ready().await;
        d
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Polls `/status` until chromedriver answers (bounded).
    async fn wait_ready(&mut self) {
        let status = format!("{}/status", self.url());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(code)) = self.child.try_wait() {
                panic!(
                    "chromedriver exited at start ({code}); its output:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = http.get(&status).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {status} within 20 s; its output:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new browser session with a fresh profile (its own user-data-dir).
    pub(crate) async fn session(&self) -> Browser {
        self.session_with(None).await
    }

    /// A session that saves downloads in `downloads` (when given) without asking.
    pub(crate) async fn session_with(&self, downloads: Option<&Path>) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--ignore-certificate-errors".into(),
            "--window-size=1200,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
            // Every test host (echo.localhost, auth.localhost, ...) on loopback, port kept.
            "--host-resolver-rules=MAP * 127.0.0.1".into(),
        ];
        let caps = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 20_000, "script": 10_000, "implicit": 0},
            "goog:chromeOptions": {"binary": chromium_binary(), "args": args},
        });
        let mut caps = caps;
        if let Some(dir) = downloads {
            caps["goog:chromeOptions"]["prefs"] = json!({
                "download.default_directory": dir.display().to_string(),
                "download.prompt_for_download": false,
            });
        }
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        // The gateway installs aws-lc-rs as the process's rustls provider; do it before the
        // WebDriver client builds its (unused, plain-HTTP here) TLS connector.
        let _ = portcullis::tls::provider();
        let connect = async {
            ClientBuilder::rustls()
                .expect("rustls connector")
                .capabilities(caps)
                .connect(&self.url())
                .await
        };
        let client = match tokio::time::timeout(Duration::from_secs(60), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "could not start a Chromium session: {e}\nchromedriver output:\n{}",
                self.log_text()
            ),
            Err(_) => panic!(
                "starting a Chromium session took over 60 s\nchromedriver output:\n{}",
                self.log_text()
            ),
        };
        Browser {
            client: Some(client),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session. `close` ends it; if a test panics first, the driver's Drop kills
/// the browser.
pub(crate) struct Browser {
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn c(&self) -> &Client {
        self.client.as_ref().expect("open session")
    }

    pub(crate) async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
        }
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.c()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
    }

    pub(crate) async fn url(&self) -> String {
        self.c()
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|e| format!("<current url unavailable: {e}>"))
    }

    pub(crate) async fn source(&self) -> String {
        self.c().source().await.unwrap_or_default()
    }

    /// The current URL and the head of the page, for failure messages.
    pub(crate) async fn describe(&self) -> String {
        let src = self.source().await;
        let head: String = src.chars().take(1500).collect();
        format!(
            "final URL: {}\npage source (head):\n{head}",
            self.url().await
        )
    }

    /// Polls until the browser shows `want` (exactly) and the page contains `text`, or fails
    /// after SETTLE with the URL it ended on and the head of the page (a redirect loop shows
    /// as chrome-error://… / ERR_TOO_MANY_REDIRECTS).
    pub(crate) async fn settle_on(&self, want: &str, text: &str, what: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let here = self.url().await;
            if here == want && self.source().await.contains(text) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: the browser did not settle on {want} showing {text:?} within {SETTLE:?}\n{}",
                    self.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the login form on the auth domain, fills it in and submits it.
    pub(crate) async fn log_in(&self, email: &str, password: &str) {
        let deadline = Instant::now() + SETTLE;
        let email_field = loop {
            match self.c().find(Locator::Css("input[name=\"email\"]")).await {
                Ok(e) => break e,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!(
                    "no login form (input name=email): {e}\n{}",
                    self.describe().await
                ),
            }
        };
        let here = self.url().await;
        assert!(
            here.starts_with("https://auth.localhost:"),
            "the login form should be on the auth domain, not {here}"
        );
        email_field.clear().await.expect("clear email");
        email_field.send_keys(email).await.expect("type email");
        self.c()
            .find(Locator::Css("input[name=\"password\"]"))
            .await
            .expect("password field")
            .send_keys(password)
            .await
            .expect("type password");
        self.c()
            .find(Locator::Css("form button[type=\"submit\"]"))
            .await
            .expect("submit button")
            .click()
            .await
            .expect("click submit");
    }

    /// Runs a script in the page; a returned promise is awaited by the driver.
    pub(crate) async fn js(&self, script: &str) -> Value {
        self.c()
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\nscript: {script}"))
    }

    /// `fetch('/api')` from the page as an XHR; returns (status, body text).
    async fn fetch_api(&self) -> (u64, String) {
        let v = self
            .js(
                "return fetch('/api', {headers: {'X-Requested-With': 'XMLHttpRequest'}})
                   .then(async r => ({status: r.status, body: await r.text()}))
                   .catch(e => ({status: 0, body: 'fetch failed: ' + e}));",
            )
            .await;
        (
            v["status"].as_u64().unwrap_or(0),
            v["body"].as_str().unwrap_or_default().to_string(),
        )
    }
}

/// Bounds a scenario so a stuck browser fails the test instead of hanging it.
pub(crate) async fn bounded<F: Future<Output = ()>>(name: &str, f: F) {
    if tokio::time::timeout(SCENARIO_LIMIT, f).await.is_err() {
        panic!("browser scenario {name:?} did not finish within {SCENARIO_LIMIT:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_cookies_revocation_and_strict_apps() {
    let started = Instant::now();
    let driver = Driver::start().await;
    let mut gw = Gw::start(STRICT_APP).await;

    // SameSite=Strict first, while the demo user has not been revoked (a user revocation
    // blocks logins for `relogin_lockout`).
    let b = driver.session().await;
    bounded("strict app", strict_app(&gw, &b)).await;
    b.close().await;

    let b = driver.session().await;
    bounded("echo app", echo_app(&gw, &b)).await;
    b.close().await;

    gw.stop().await;
    drop(driver);
    eprintln!("browser scenarios took {:?}", started.elapsed());
}

/// Scenarios 1-3 on the lax, HttpOnly echo app.
async fn echo_app(gw: &Gw, b: &Browser) {
    // 1. Deep link -> auth domain login form -> back to exactly the page asked for.
    let want = gw.url("echo.localhost", "/welcome?x=1&y=two");
    b.goto(&want).await;
    b.log_in(DEMO, DEMO_PW).await;
    b.settle_on(&want, DEMO, "after logging in to echo").await;

    // 2. HttpOnly: scripts see neither the app token nor the binding cookie.
    let cookies = b.js("return document.cookie;").await;
    let cookies = cookies.as_str().unwrap_or_default();
    assert!(
        !cookies.contains("portcullis_app") && !cookies.contains("portcullis_binding"),
        "document.cookie exposes gateway cookies on an http_only app: {cookies:?}"
    );

    // 3. In-page XHR from the app's own page works, then stops working once the user is
    // revoked on the server.
    let (status, body) = b.fetch_api().await;
    assert_eq!(status, 200, "fetch /api before revocation: {body}");
    let echoed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(
        echoed["identity"]["email"], DEMO,
        "the origin should see the user: {body}"
    );

    gw.revoke("user", DEMO).await;
    let (status, body) = b.fetch_api().await;
    assert_eq!(status, 401, "fetch /api after revocation: {body}");
    let err: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("401 body should be JSON ({e}): {body}"));
    assert!(
        err["error"].is_string(),
        "401 body lacks a string `error`: {body}"
    );
    let login_url = err["login_url"].as_str().unwrap_or_default();
    assert!(
        login_url.starts_with("https://auth.localhost:"),
        "401 body lacks a `login_url` on the auth domain: {body}"
    );
}

/// Scenario 4 on a SameSite=Strict app with the auth domain on another site.
async fn strict_app(gw: &Gw, b: &Browser) {
    // (a) Typed URL on a fresh profile -> login -> exactly that page, no redirect loop.
    let want = gw.url("strict.localhost", "/s?k=v");
    b.goto(&want).await;
    b.log_in(DEMO, DEMO_PW).await;
    b.settle_on(&want, DEMO, "after logging in to the strict app")
        .await;

    // (b) A link on another site (the echo app, reached with the global session) to the
    // strict app: the Strict cookies stay behind on that cross-site navigation, and the
    // gateway must still land on the linked page without a loop.
    let echo = gw.url("echo.localhost", "/from");
    b.goto(&echo).await;
    b.settle_on(&echo, DEMO, "echo page reached with the global session")
        .await;
    let linked = gw.url("strict.localhost", "/linked?z=1");
    b.js(&format!(
        "const a = document.createElement('a');
         a.id = 'to-strict';
         a.href = {href};
         a.textContent = 'to the strict app';
         document.body.prepend(a);
         return true;",
        href = serde_json::to_string(&linked).expect("json")
    ))
    .await;
    b.c()
        .find(Locator::Id("to-strict"))
        .await
        .expect("injected link")
        .click()
        .await
        .expect("click the link");
    b.settle_on(
        &linked,
        DEMO,
        "after following a cross-site link to the strict app",
    )
    .await;
}

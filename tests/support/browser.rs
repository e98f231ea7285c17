//! A real browser for the tests that need one: a headless Chromium driven over WebDriver by a
//! chromedriver of its own (`make test` installs both; `CHROMIUM` and `CHROMEDRIVER` name others).

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eventline_testkit::eventually;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A headless Chromium driven by a chromedriver of its own (`make test` installs both; `CHROMIUM`
/// and `CHROMEDRIVER` name others).
pub struct Browser {
    driver: Child,
    pub client: Client,
}

impl Browser {
    pub async fn start() -> Browser {
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // In a process group of its own, with the browsers it starts: a failed test kills them all.
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("running {chromedriver} (run the tests through `make test`, which installs it): {e}")
            });
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"] }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let client = eventually(Duration::from_secs(20), "chromedriver to start a session", || async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
                .ok()
        })
        .await;
        Browser { driver, client }
    }

    pub async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
    }

    pub async fn click(&self, css: &str) {
        self.client.wait().for_element(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.wait().for_element(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Waits until the text of `css` satisfies `check`.
    pub async fn until_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        eventually(Duration::from_secs(30), what, || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            let text = element.text().await.ok()?;
            check(&text).then_some(text)
        })
        .await
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Also after a failed assertion: chromedriver and every browser it started go with the test.
impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

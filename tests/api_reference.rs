//! The HTML API reference at `/docs` renders in a real headless browser with no network beyond
//! the service itself: no CDN, no external fonts or scripts.

use crate::support;

use std::process::Command;

use eventline_testkit::TestEnv;

/// The DOM of `url` after its scripts ran, from headless Chromium (the binary `make test`
/// installs; `CHROMIUM` names another).
fn rendered_dom(url: &str) -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let profile = std::env::temp_dir().join(format!("eventline-chromium-{}", uuid::Uuid::new_v4()));
    let output = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .output()
        .unwrap_or_else(|e| {
            panic!("running {chromium} (run the tests through `make test`, which installs it): {e}")
        });
    let _ = std::fs::remove_dir_all(profile);
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_references_render_offline_in_a_browser() {
    let env = TestEnv::new().await;
    let query = support::query(&env).await;
    let command = support::command(&env).await;
    for (service, title, operations) in [
        (
            &query,
            "eventline query API",
            ["/users/{id}", "/users/{id}/orders", "/orders/{id}", "/inventory/{sku}"],
        ),
        (
            &command,
            "eventline command API",
            ["/users", "/orders", "/orders/{orderId}/payments", "/commands/batch"],
        ),
    ] {
        let page = reqwest::get(service.url("/docs")).await.unwrap().text().await.unwrap();
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "the page references no external resource"
        );
        let dom = tokio::task::spawn_blocking({
            let url = service.url("/docs");
            move || rendered_dom(&url)
        })
        .await
        .unwrap();
        assert!(dom.contains(r#"data-rendered="true""#), "the reference did not render:\n{dom}");
        assert!(dom.contains(title), "{title}");
        for path in operations {
            assert!(dom.contains(&format!("<code>{path}</code>")), "{path} is not in the reference");
        }
        assert!(dom.contains("Problem"), "schemas are listed");
        // The descriptions' Markdown is rendered, not shown raw: outside the page's own script, no
        // backtick or `**` is left, and code spans became <code>.
        let (before, rest) = dom.split_once("<script>").unwrap();
        let shown = format!("{before}{}", rest.split_once("</script>").unwrap().1);
        for raw in ["`", "**"] {
            let at = shown.find(raw).map(|i| &shown[i.saturating_sub(80)..(i + 80).min(shown.len())]);
            assert!(
                at.is_none(),
                "raw Markdown {raw:?} in the rendered {title}: …{}…",
                at.unwrap_or_default()
            );
        }
        assert!(dom.contains("<code>Consistency-Token</code>"), "{title}: code spans are rendered");
    }
    let dom = tokio::task::spawn_blocking({
        let url = command.url("/docs");
        move || rendered_dom(&url)
    })
    .await
    .unwrap();
    assert!(
        dom.contains("<code>202 Accepted</code>"),
        "the command API's description renders its code spans"
    );
    assert!(dom.contains(r##"href="#settle_payment""##), "links between operations are shown");
    query.stop().await.unwrap();
    command.stop().await.unwrap();
}

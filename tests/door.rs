//! Defences at the door: each client's reads are rate-limited as its commands are, and one client
//! over its limit does not slow another.

use crate::support;

use eventline_testkit::{TestEnv, http};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_read_rate_is_told_to_wait_and_others_are_not() {
    let env = TestEnv::new().await;
    let mut config = support::query_config(&env);
    config.read_rate_limit_per_s = 0.5;
    config.read_rate_limit_burst = 3.0;
    let query = support::query_with(config).await;
    let user = query.url("/users/550e8400-e29b-41d4-a716-446655440000");

    // Three reads (answered, here 404) use the burst; the fourth is refused with a problem.
    for _ in 0..3 {
        let status = http().get(&user).send().await.unwrap().status();
        assert_ne!(status, 429);
    }
    let refused = http().get(&user).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "https://eventline.dev/problems/rate-limited", "{problem}");

    // Another client (another address) has a bucket of its own; operational routes are not limited.
    let other = reqwest::Client::builder().local_address("127.0.0.2".parse().ok()).build().unwrap();
    assert_ne!(other.get(&user).send().await.unwrap().status(), 429);
    assert_eq!(http().get(query.url("/healthz")).send().await.unwrap().status(), 200);
    query.stop().await.unwrap();
}

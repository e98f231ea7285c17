//! `make bench`: eventline's throughput and latency, each figure next to the ceiling or baseline
//! it is compared with, measured in the same run on the same machine. Writes
//! `target/bench/results.json` and `docs/benchmarks.md`.
//!
//! The services run as release processes on ports, a topic and a database of their own. Phases:
//! 1. the log: prefill the topic (raw producer: the broker ceiling), read it back without writing
//!    (the consume ceiling), project it into empty read models (the projector), rebuild it, and
//!    run a naive projector on a sample;
//! 2. queries on those read models, against raw primary-key SELECTs;
//! 3. commands: single and batched, then freshness (accepted → visible) at half the ingest rate.
#![allow(clippy::print_stdout)]

mod ceiling;
mod cpu;
mod data;
mod load;
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::load::{closed_loop, open_loop};
use crate::report::Results;
use eventline_tools::stack::{self, Setup, applied};

/// How much of everything.
struct Scale {
    log_events: u64,
    naive_sample: u64,
    run: Duration,
}

const PORTS: (u16, u16, u16) = (18081, 18082, 18083);

/// Rates (commands/s) between 100/s and half the maximum at which freshness is also measured, with
/// the keys of their p50 and p99 (and a label that keeps each run's emails apart).
const FRESHNESS_SWEEP: [(f64, &str, &str, &str); 3] = [
    (250.0, "at250", "freshness_p50_ms_at_250_per_s", "freshness_p99_ms_at_250_per_s"),
    (500.0, "at500", "freshness_p50_ms_at_500_per_s", "freshness_p99_ms_at_500_per_s"),
    (1000.0, "at1000", "freshness_p50_ms_at_1000_per_s", "freshness_p99_ms_at_1000_per_s"),
];

/// The benchmark (`make bench`): the services, the broker and the database measured against
/// ceilings taken in the same run; writes target/bench/results-<label>.json and docs/benchmarks.md.
#[derive(Debug, clap::Parser)]
#[command(name = "eventline-bench")]
struct Args {
    /// A smoke run of about three minutes (`make bench QUICK=1`).
    #[arg(long)]
    quick: bool,
    /// The log, the projector and the rebuilds only: nothing written to docs/, the topic and the
    /// database kept for profiling by hand.
    #[arg(long)]
    only_projection: bool,
    /// Names the run (`results-<label>.json`).
    #[arg(long, default_value = "default")]
    label: String,
    /// Not a benchmark: serve constant documents as the HTTP ceiling (the run starts this itself).
    #[arg(long, num_args = 3, value_names = ["PORT", "USER_FILE", "ORDER_FILE"])]
    serve_constant: Option<Vec<String>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    if let Some([port, user, order]) = args.serve_constant.as_deref() {
        return ceiling::serve(port.parse()?, user.as_ref(), order.as_ref()).await;
    }
    let quick = args.quick;
    let scale = if quick {
        Scale { log_events: 50_000, naive_sample: 2_000, run: Duration::from_secs(3) }
    } else {
        Scale { log_events: 1_000_000, naive_sample: 10_000, run: Duration::from_secs(15) }
    };
    let id = stack::run_id();
    let (repository, out_dir) = stack::output_dir("bench")?;
    let setup = Setup::from_environment(
        format!("eventline.bench.{id}"),
        format!("eventline_bench_{id}"),
        out_dir.clone(),
    )?;
    let started = Instant::now();
    let broker = std::env::var("EVENTLINE_BROKER").unwrap_or_else(|_| "unknown broker".to_owned());
    let label = args.label;
    let mut results = Results::new(quick, &broker, &label);
    let outcome = run(&setup, &scale, &mut results, args.only_projection).await;
    if args.only_projection {
        // Kept for profiling by hand: the log and the read models as the run left them.
        println!("\nKept topic {} and database {} (drop them when done)", setup.topic, setup.database);
        return outcome;
    }
    // Leave nothing behind, whatever happened.
    let _ = stack::drop_database(&setup.postgres, &setup.database).await;
    let _ = stack::drop_database(&setup.postgres, &format!("{}_naive", setup.database)).await;
    let _ = stack::drop_database(&setup.postgres, &format!("{}_noindex", setup.database)).await;
    if let Err(error) = stack::delete_topic(&setup.brokers, &setup.topic).await {
        println!("could not delete the bench topic: {error:#}");
    }
    outcome?;
    results.set_seconds(started.elapsed().as_secs_f64());
    let json_path = out_dir.join(format!("results-{label}.json"));
    results.write_json(&json_path)?;
    results.write_markdown(&repository.join("docs/benchmarks.md"))?;
    println!("\nWrote {} in {:.0} s", json_path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

async fn run(
    setup: &Setup,
    scale: &Scale,
    results: &mut Results,
    only_projection: bool,
) -> anyhow::Result<()> {
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(30)).build()?;
    setup.fresh_database().await?;
    results.machine(setup).await?;
    let pool = sqlx::PgPool::connect(&setup.database_url()).await?;

    // --- 1. The log
    println!("Prefilling {} events", scale.log_events);
    // The projector creates the topic with the services' settings before anything is produced.
    let projector = setup.start("eventline-projector", PORTS.2)?;
    projector.ready(&http).await?;
    projector.stop();
    let prefilled = data::prefill(&setup.brokers, &setup.topic, scale.log_events).await?;
    results.context("broker_produce_per_s", prefilled.per_s);
    println!("   raw produce: {:.0} events/s", prefilled.per_s);

    let consume = data::consume_ceiling(&setup.brokers, &setup.topic, scale.log_events).await?;
    results.context("consume_decode_per_s", consume);
    println!("   consume and decode: {consume:.0} events/s");

    // Start-up and the group join (Kafka delays a new group's first rebalance by
    // 3 s) are timed apart from the projection rate, which runs from the first applied batch.
    let started_at = Instant::now();
    let projector = setup.start("eventline-projector", PORTS.2)?;
    let (projector_per_s, startup) =
        projection_rate(&pool, &setup.topic, scale.log_events, started_at).await?;
    results.context("projector_start_s", startup);
    results.key("projector_events_per_s", projector_per_s);
    results.key("projector_vs_consume_ceiling", projector_per_s / consume);
    println!("   projector: {projector_per_s:.0} events/s after a start-up and group join of {startup:.1} s");
    let without = projector_without_index(setup, scale.log_events).await?;
    results.context("projector_events_per_s_without_index", without);
    results.key("event_index_projector_cost", 1.0 - projector_per_s / without);
    println!(
        "   projector without writing the event index: {without:.0} events/s ({:.0} % more)",
        (without / projector_per_s - 1.0) * 100.0
    );
    index_cost(&pool, results).await?;

    // Each projection rebuilt alone (its own read of the whole log), then the whole set at once
    // (one read of the log loads every projection): the set's time is the figure.
    for projection in eventline_read_models::Projection::ALL {
        let took = setup.projector_command(&["rebuild", "--projection", projection.name()])?;
        let per_million = took.as_secs_f64() * 1_000_000.0 / scale.log_events as f64;
        let key = match projection {
            eventline_read_models::Projection::Main => "rebuild_1m_s_main",
            eventline_read_models::Projection::OrdersByStatus => "rebuild_1m_s_orders_by_status",
        };
        results.context(key, per_million);
        println!("   rebuild of {projection}: {:.1} s ({per_million:.1} s per 1M)", took.as_secs_f64());
    }
    let rebuild = setup.projector_command(&["rebuild"])?;
    let per_million = rebuild.as_secs_f64() * 1_000_000.0 / scale.log_events as f64;
    results.key("rebuild_1m_s", per_million);
    let rebuild_per_s = scale.log_events as f64 / rebuild.as_secs_f64();
    results.context("rebuild_events_per_s", rebuild_per_s);
    results.key("rebuild_vs_consume_ceiling", rebuild_per_s / consume);
    println!(
        "   rebuild: {:.1} s for {} events ({per_million:.1} s per 1M, {:.2} of the consume ceiling)",
        rebuild.as_secs_f64(),
        scale.log_events,
        rebuild_per_s / consume
    );
    if only_projection {
        return Ok(());
    }

    let naive_db = Setup { database: format!("{}_naive", setup.database), ..setup.clone() };
    naive_db.fresh_database().await?;
    let naive = data::naive_projector(
        &setup.brokers,
        &setup.topic,
        &naive_db.database_url(),
        &setup.redis,
        scale.naive_sample,
    )
    .await?;
    results.context("naive_projector_per_s", naive);
    results.key("projector_vs_naive", projector_per_s / naive);
    println!("   naive projector: {naive:.0} events/s on {} events", scale.naive_sample);

    // --- 2. Queries
    projector.caught_up(&http).await?;
    let query = setup.start("eventline-query", PORTS.1)?;
    query.ready(&http).await?;
    let ids = Arc::new((prefilled.users, prefilled.orders));
    let raw = raw_select(&setup.database_url(), ids.clone(), scale.run).await?;
    results.context("raw_select_per_s", raw);
    println!("   raw primary-key SELECT: {raw:.0}/s");
    let get = |base: String| {
        let (http, ids) = (http.clone(), ids.clone());
        move |i: u64| {
            let request = http.get(read_url(&base, &ids, i));
            async move { expect_status(request.send().await?, 200).await }
        }
    };
    // The HTTP ceiling serves documents as large as the query service's first user and order.
    let sample = |i: u64| {
        let request = http.get(read_url(&query.base, &ids, i));
        async move { anyhow::Ok(request.send().await?.error_for_status()?.bytes().await?) }
    };
    let ceiling = ceiling::start(PORTS.2 + 1, &setup.log_dir, &sample(0).await?, &sample(1).await?)?;
    ceiling.ready(&http).await?;
    let http_ceiling = closed_loop(32, scale.run, get(ceiling.base.clone())).await;
    ceiling.stop();
    results.context("http_ceiling_per_s", http_ceiling.per_s);
    println!("   HTTP ceiling (constant documents): {:.0}/s", http_ceiling.per_s);
    let get = get(query.base.clone());
    let max = closed_loop(32, scale.run, get.clone()).await;
    results.key("query_max_rps", max.per_s);
    results.key("query_vs_ceiling", max.per_s / raw);
    results.key("query_vs_http_ceiling", max.per_s / http_ceiling.per_s);
    results.detail("query_max", &max);
    println!("   query max: {:.0}/s (p99 {:.2} ms, {} errors)", max.per_s, max.p99_ms, max.errors);
    let half = open_loop(max.per_s / 2.0, scale.run, get).await;
    results.key("query_p99_ms_at_half", half.p99_ms);
    results.detail("query_at_half", &half);
    println!("   query at half: p50 {:.2} ms, p99 {:.2} ms", half.p50_ms, half.p99_ms);

    // --- 3. Commands (the projector and the query service keep running: freshness needs them)
    let command = setup.start("eventline-command", PORTS.0)?;
    command.ready(&http).await?;
    projector.caught_up(&http).await?;
    // Each run creates users of its own: the rules refuse an email that is taken.
    let create_user = |run: &'static str| {
        let (http, url) = (http.clone(), command.url("/users"));
        move |i: u64| {
            let http = http.clone();
            let body = json!({"email": format!("{run}-{i}@example.com"), "firstName": "C", "lastName": "L"});
            let request = http.post(url.clone()).json(&body);
            async move { expect_status(request.send().await?, 202).await }
        }
    };
    let services: Vec<(&'static str, u32)> =
        [("command service", &command), ("projector", &projector), ("query service", &query)]
            .into_iter()
            .filter_map(|(role, service)| Some((role, service.pid()?)))
            .collect();
    let stack = cpu::Stack { services, database: sqlx::PgPool::connect(&setup.database_url()).await? };
    let (before, profile) =
        (stack.snapshot().await, Profile::group(&http, &command, "command_group_size_single").await?);
    let single = closed_loop(64, scale.run, create_user("single")).await;
    results.cpu("single", &stack.snapshot().await.since(&before), single.ok);
    profile.finish(&http, results, "single").await?;
    results.key("command_single_per_s", single.per_s);
    results.key("command_vs_broker_ceiling", single.per_s / prefilled.per_s);
    results.detail("command_single", &single);
    println!(
        "   single commands: {:.0}/s (p99 {:.2} ms, {} errors)",
        single.per_s, single.p99_ms, single.errors
    );
    projector.caught_up(&http).await?;
    let at_70 = open_loop(single.per_s * 0.7, scale.run, create_user("at70")).await;
    results.key("command_p99_ms_at_70", at_70.p99_ms);
    results.detail("command_at_70", &at_70);
    println!("   single commands at 70 %: p50 {:.2} ms, p99 {:.2} ms", at_70.p50_ms, at_70.p99_ms);

    projector.caught_up(&http).await?;
    let batch = {
        let (http, url) = (http.clone(), command.url("/commands/batch"));
        move |i: u64| {
            let http = http.clone();
            let commands: Vec<Value> = (0..1000)
                .map(|j| json!({"type": "CreateUser", "email": format!("b{i}-{j}@example.com"), "firstName": "B", "lastName": "L"}))
                .collect();
            let request = http.post(url.clone()).json(&json!({"commands": commands}));
            async move { expect_status(request.send().await?, 202).await }
        }
    };
    let before = stack.snapshot().await;
    let batches = closed_loop(4, scale.run, batch).await;
    results.cpu("batch", &stack.snapshot().await.since(&before), batches.ok * 1000);
    results.key("command_batch_events_per_s", batches.per_s * 1000.0);
    results.detail("command_batch_requests", &batches);
    println!("   batch: {:.0} events/s", batches.per_s * 1000.0);

    // Contended: 100 clients on 10 skus, each adding or removing one unit. Every command is decided
    // (202, or 409 when a remove finds no stock); the share refused is the conflict rate.
    projector.caught_up(&http).await?;
    let (before, profile) =
        (stack.snapshot().await, Profile::group(&http, &command, "command_group_size_contended").await?);
    let (contended, refused_share) = contended(&http, &command, scale.run).await?;
    results.cpu("contended", &stack.snapshot().await.since(&before), contended.ok);
    profile.finish(&http, results, "contended").await?;
    results.key("command_contended_per_s", contended.per_s);
    results.context("command_contended_refused_share", refused_share);
    results.detail("command_contended", &contended);
    println!(
        "   contended (100 clients, 10 skus): {:.0} decided/s, {:.1} % refused (p99 {:.2} ms, {} errors)",
        contended.per_s,
        refused_share * 100.0,
        contended.p99_ms,
        contended.errors
    );

    // Freshness: accepted → readable with its token, at a low rate (the floor) and at half of the
    // maximum single-command rate; each with where the time went, from the services' metrics.
    // Each rate run is noted with whether the freshness goal held there (p50 ≤ 50 ms, p99 ≤ 250 ms,
    // nothing dropped).
    let within = |p50: f64, p99: f64, errors: u64| p50 <= 50.0 && p99 <= 250.0 && errors == 0;
    let mut held: Vec<(f64, bool)> = Vec::new();
    projector.caught_up(&http).await?;
    let profile = Profile::freshness(&http, &projector, &query).await?;
    let (requests, p50, p99) = freshness(&http, &command, &query, 100.0, scale.run, "at100").await?;
    results.key("freshness_p50_ms_at_100_per_s", p50);
    results.key("freshness_p99_ms_at_100_per_s", p99);
    results.detail("freshness_requests_at_100_per_s", &requests);
    profile.finish(&http, results, "at_100_per_s").await?;
    held.push((100.0, within(p50, p99, requests.errors)));
    println!("   freshness at 100/s: p50 {p50:.2} ms, p99 {p99:.2} ms ({} errors)", requests.errors);
    projector.caught_up(&http).await?;
    let profile = Profile::freshness(&http, &projector, &query).await?;
    let (requests, p50, p99) =
        freshness(&http, &command, &query, single.per_s / 2.0, scale.run, "half").await?;
    results.key("freshness_p50_ms", p50);
    results.key("freshness_p99_ms", p99);
    results.key("freshness_dropped", requests.errors as f64);
    results.detail("freshness_requests", &requests);
    profile.finish(&http, results, "at_half").await?;
    held.push((single.per_s / 2.0, within(p50, p99, requests.errors)));
    println!("   freshness at half: p50 {p50:.2} ms, p99 {p99:.2} ms ({} errors)", requests.errors);

    // Where the goal stops holding: the same run at rates between the two above.
    for (rate, label, p50_key, p99_key) in FRESHNESS_SWEEP {
        if rate >= single.per_s / 2.0 {
            break;
        }
        projector.caught_up(&http).await?;
        let (requests, p50, p99) = freshness(&http, &command, &query, rate, scale.run, label).await?;
        results.context(p50_key, p50);
        results.context(p99_key, p99);
        println!("   freshness at {rate}/s: p50 {p50:.2} ms, p99 {p99:.2} ms ({} errors)", requests.errors);
        held.push((rate, within(p50, p99, requests.errors)));
    }
    let highest = held.iter().filter(|(_, holds)| *holds).map(|(rate, _)| *rate).fold(0.0, f64::max);
    results.context("freshness_highest_rate_within_goal", highest);

    for service in [command, query, projector] {
        service.stop();
    }

    // --- 4. What a single owner of the log would pay to append (the write path's next step):
    // transactions one after the other, at a single command run's group size and at ten times it.
    const TRANSACTIONAL: [(usize, &str, &str, &str); 2] = [
        (20, "transactional_events_per_s_20", "transactional_commit_p99_ms_20", "transactional_20"),
        (200, "transactional_events_per_s_200", "transactional_commit_p99_ms_200", "transactional_200"),
    ];
    for (per_transaction, rate_key, p99_key, detail_key) in TRANSACTIONAL {
        let run =
            data::transactional_produce(&setup.brokers, &setup.topic, per_transaction, scale.run).await?;
        let events_per_s = run.per_s * per_transaction as f64;
        results.context(rate_key, events_per_s);
        results.context(p99_key, run.p99_ms);
        results.detail(detail_key, &run);
        println!(
            "   transactional append, {per_transaction} events each: {events_per_s:.0} events/s, \
             commit p50 {:.2} ms, p99 {:.2} ms",
            run.p50_ms, run.p99_ms
        );
    }
    Ok(())
}

/// Where a run's milliseconds go, as mean times per stage over the run, from histograms the
/// services export (`<what>_<stage>_ms_<run>` in the results):
/// - freshness, from the projector and the query service: in the log (appended → read by the
///   projector), queued (read → its batch starts: the batch before it was committing), applying
///   (the batch's transaction), and the query's wait for the token once the GET arrived;
/// - a decided group of commands, from the command service: each stage of
///   `eventline_command_group_stage_seconds`.
struct Profile {
    what: &'static str,
    series: Vec<(&'static str, String)>,
    /// A (sum, count) series whose plain mean is recorded as a ceiling-and-baseline key (the mean
    /// group size: how many commands share one group's fixed costs).
    mean: Option<(&'static str, &'static str)>,
    urls: Vec<String>,
    before: BTreeMap<String, (f64, f64)>,
}

/// The (sum, count) series of freshness, named by the services' own metrics modules.
fn freshness_series() -> Vec<(&'static str, String)> {
    use eventline_projector::metrics::{BATCH_SECONDS, FRESHNESS_SECONDS};
    use eventline_query::metrics::CONSISTENCY_WAIT_SECONDS;
    vec![
        ("log", format!("{FRESHNESS_SECONDS}{{stage=\"log\"}}")),
        ("queued", format!("{FRESHNESS_SECONDS}{{stage=\"queued\"}}")),
        ("apply", BATCH_SECONDS.to_owned()),
        ("query_wait", format!("{CONSISTENCY_WAIT_SECONDS}{{outcome=\"reached\"}}")),
    ]
}

/// The stages of a decided group of commands.
fn group_series() -> Vec<(&'static str, String)> {
    use eventline_command::metrics::{GROUP_STAGE_SECONDS, GroupStage};
    GroupStage::ALL
        .into_iter()
        .map(|stage| (stage.name(), format!("{GROUP_STAGE_SECONDS}{{stage=\"{}\"}}", stage.name())))
        .collect()
}

impl Profile {
    async fn freshness(
        http: &reqwest::Client,
        projector: &stack::Service,
        query: &stack::Service,
    ) -> anyhow::Result<Profile> {
        Profile::start(http, "freshness", freshness_series(), &[projector, query]).await
    }

    /// Also records the run's mean group size as `size_key`.
    async fn group(
        http: &reqwest::Client,
        command: &stack::Service,
        size_key: &'static str,
    ) -> anyhow::Result<Profile> {
        let mut profile = Profile::start(http, "group", group_series(), &[command]).await?;
        profile.mean = Some((size_key, eventline_command::metrics::GROUP_SIZE));
        Ok(profile)
    }

    async fn start(
        http: &reqwest::Client,
        what: &'static str,
        series: Vec<(&'static str, String)>,
        services: &[&stack::Service],
    ) -> anyhow::Result<Profile> {
        let urls: Vec<String> = services.iter().map(|service| service.url("/metrics")).collect();
        let before = Profile::scrape(http, &urls).await?;
        Ok(Profile { what, series, mean: None, urls, before })
    }

    async fn scrape(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<BTreeMap<String, (f64, f64)>> {
        let mut series = BTreeMap::new();
        for url in urls {
            let text = http.get(url).send().await?.text().await?;
            for line in text.lines() {
                let Some((name, value)) = line.rsplit_once(' ') else { continue };
                let Ok(value) = value.parse::<f64>() else { continue };
                let (metric, labels) = name.split_once('{').map_or((name, ""), |(m, l)| (m, l));
                let labels = if labels.is_empty() { String::new() } else { format!("{{{labels}") };
                if let Some(base) = metric.strip_suffix("_sum") {
                    series.entry(format!("{base}{labels}")).or_insert((0.0, 0.0)).0 += value;
                } else if let Some(base) = metric.strip_suffix("_count") {
                    series.entry(format!("{base}{labels}")).or_insert((0.0, 0.0)).1 += value;
                }
            }
        }
        Ok(series)
    }

    /// Records `<what>_<stage>_ms_<run>`: each stage's mean over the run.
    async fn finish(self, http: &reqwest::Client, results: &mut Results, run: &str) -> anyhow::Result<()> {
        let after = Profile::scrape(http, &self.urls).await?;
        // The mean of what a series recorded between the two scrapes, if it recorded anything.
        let mean = |series: &str| {
            let (sum, count) = after.get(series).copied().unwrap_or_default();
            let (sum0, count0) = self.before.get(series).copied().unwrap_or_default();
            (count > count0).then(|| (sum - sum0) / (count - count0))
        };
        for (stage, series) in &self.series {
            if let Some(seconds) = mean(series) {
                results.profile(format!("{}_{stage}_ms_{run}", self.what), seconds * 1000.0);
            }
        }
        if let Some((key, series)) = self.mean
            && let Some(value) = mean(series)
        {
            results.context(key, value);
        }
        Ok(())
    }
}

/// Open-loop `POST /users` at `rate`, each followed by `GET /users/{id}` with its token; returns
/// the requests and the p50/p99 in ms of accepted (202 received) → read (200 received).
async fn freshness(
    http: &reqwest::Client,
    command: &stack::Service,
    query: &stack::Service,
    rate: f64,
    run: Duration,
    label: &'static str,
) -> anyhow::Result<(load::Measured, f64, f64)> {
    let (http, post_url, query_base) = (http.clone(), command.url("/users"), query.base.clone());
    let samples =
        Arc::new(std::sync::Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let recorded = samples.clone();
    let measured = open_loop(rate, run, move |i: u64| {
        let (http, post_url, query_base, samples) =
            (http.clone(), post_url.clone(), query_base.clone(), recorded.clone());
        async move {
            let body =
                json!({"email": format!("f{label}-{i}@example.com"), "firstName": "F", "lastName": "L"});
            let response = http.post(post_url).json(&body).send().await?;
            let accepted = Instant::now();
            let token = response.headers().get("consistency-token").cloned().context("no token")?;
            let user: Value = response.json().await?;
            let id = user["userId"].as_str().context("no userId")?.to_owned();
            let read = http
                .get(format!("{query_base}/users/{id}"))
                .header("consistency-token", token)
                .send()
                .await?;
            anyhow::ensure!(read.status() == 200, "GET answered {}", read.status());
            let micros = u64::try_from(accepted.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
            if let Ok(mut h) = samples.lock() {
                h.saturating_record(micros);
            }
            Ok(())
        }
    })
    .await;
    let h = samples.lock().map_err(|_| anyhow::anyhow!("a freshness sampler panicked"))?.clone();
    Ok((measured, h.value_at_quantile(0.5) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0))
}

/// Closed-loop adjustments by 100 clients on 10 skus (stock 1000 each at the start), alternately
/// removing and adding one unit: the decisions per second, and the share refused.
async fn contended(
    http: &reqwest::Client,
    command: &stack::Service,
    run: Duration,
) -> anyhow::Result<(load::Measured, f64)> {
    const SKUS: u64 = 10;
    let prefix = format!("CONTENDED-{}", std::process::id());
    for k in 0..SKUS {
        let body = json!({"adjustmentType": "set", "quantity": 1000, "reason": "bench"});
        let response = http
            .post(command.url(&format!("/inventory/{prefix}-{k}/adjustments")))
            .json(&body)
            .send()
            .await?;
        expect_status(response, 202).await?;
    }
    let refused = Arc::new(AtomicU64::new(0));
    let (http, base, counted) = (http.clone(), command.base.clone(), refused.clone());
    let measured = closed_loop(100, run, move |i: u64| {
        let (http, refused) = (http.clone(), counted.clone());
        let url = format!("{base}/inventory/{prefix}-{}/adjustments", (i * 7) % SKUS);
        let kind = if (i / SKUS).is_multiple_of(3) { "add" } else { "remove" };
        async move {
            let body = json!({"adjustmentType": kind, "quantity": 1, "reason": "bench"});
            let response = http.post(url).json(&body).send().await?;
            let status = response.status().as_u16();
            let _ = response.bytes().await?;
            match status {
                202 => Ok(()),
                409 => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                other => anyhow::bail!("answered {other}"),
            }
        }
    })
    .await;
    let decided = measured.ok.max(1) as f64;
    Ok((measured, refused.load(Ordering::Relaxed) as f64 / decided))
}

/// What the `i`-th read of a query run asks for: users and orders alternately, spread over the
/// prefilled ids.
enum Read {
    User(uuid::Uuid),
    Order(uuid::Uuid),
}

fn read(ids: &(Vec<uuid::Uuid>, Vec<uuid::Uuid>), i: u64) -> Read {
    let index = usize::try_from(i).unwrap_or(0).wrapping_mul(7919);
    if i.is_multiple_of(2) {
        Read::User(ids.0[index % ids.0.len().max(1)])
    } else {
        Read::Order(ids.1[index % ids.1.len().max(1)])
    }
}

/// The URL of the `i`-th read of a query run on the service at `base`.
fn read_url(base: &str, ids: &(Vec<uuid::Uuid>, Vec<uuid::Uuid>), i: u64) -> String {
    match read(ids, i) {
        Read::User(id) => format!("{base}/users/{id}"),
        Read::Order(id) => format!("{base}/orders/{id}"),
    }
}

/// Closed-loop primary-key SELECTs (users and orders, alternating) straight on the database,
/// through a pool as large as the query service's.
async fn raw_select(
    url: &str,
    ids: Arc<(Vec<uuid::Uuid>, Vec<uuid::Uuid>)>,
    run: Duration,
) -> anyhow::Result<f64> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(16).connect(url).await?;
    let live = eventline_read_models::live(&pool, eventline_read_models::Projection::Main).await?.schema();
    let (users, orders) = (
        format!("SELECT * FROM {live}.users WHERE user_id = $1"),
        format!("SELECT * FROM {live}.orders WHERE order_id = $1"),
    );
    let measured = closed_loop(32, run, move |i| {
        let pool = pool.clone();
        let (sql, id) = match read(&ids, i) {
            Read::User(id) => (users.clone(), id),
            Read::Order(id) => (orders.clone(), id),
        };
        async move {
            sqlx::query(&sql).bind(id).fetch_optional(&pool).await?.context("row missing")?;
            Ok(())
        }
    })
    .await;
    Ok(measured.per_s)
}

async fn expect_status(response: reqwest::Response, status: u16) -> anyhow::Result<()> {
    let got = response.status().as_u16();
    let _ = response.bytes().await?;
    anyhow::ensure!(got == status, "answered {got}, expected {status}");
    Ok(())
}

/// What the event index (histories, as-of reads, live streams) costs in storage: its bytes per
/// event, indexes and TOAST included, next to those of the other read models.
async fn index_cost(pool: &sqlx::PgPool, results: &mut Results) -> anyhow::Result<()> {
    let live = eventline_read_models::live(pool, eventline_read_models::Projection::Main).await?;
    let size = |table: &str| format!("pg_total_relation_size('{}.{table}')", live.schema());
    let others: Vec<String> = eventline_read_models::Projection::Main
        .read_models()
        .iter()
        .filter(|t| **t != "event_index")
        .map(|t| size(t))
        .collect();
    let (index_bytes, other_bytes, events): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT {}, {}, (SELECT count(*) FROM {}.event_index)",
        size("event_index"),
        others.join(" + "),
        live.schema()
    ))
    .fetch_one(pool)
    .await?;
    let per_event = |bytes: i64| bytes as f64 / events.max(1) as f64;
    results.key("event_index_bytes_per_event", per_event(index_bytes));
    results.context("other_read_models_bytes_per_event", per_event(other_bytes));
    println!(
        "   event index: {:.0} bytes per event (the other read models: {:.0})",
        per_event(index_bytes),
        per_event(other_bytes)
    );
    Ok(())
}

/// Waits until `events` are applied in `pool`'s read models, from a projector started at
/// `started_at`: the rate from its first applied batch, and how long that first batch took.
async fn projection_rate(
    pool: &sqlx::PgPool,
    topic: &str,
    events: u64,
    started_at: Instant,
) -> anyhow::Result<(f64, f64)> {
    let target = i64::try_from(events)?;
    let (first, projected_at) = loop {
        anyhow::ensure!(started_at.elapsed() < Duration::from_secs(120), "nothing projected in 120 s");
        let done = applied(pool, topic).await.unwrap_or(0);
        if done > 0 {
            break (done, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    while applied(pool, topic).await.unwrap_or(0) < target {
        anyhow::ensure!(
            projected_at.elapsed() < Duration::from_secs(600),
            "projection did not finish in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = (target - first) as f64 / projected_at.elapsed().as_secs_f64();
    Ok((rate, projected_at.duration_since(started_at).as_secs_f64()))
}

/// The same projection into a database of its own whose event index drops every insert (a
/// rule `DO INSTEAD NOTHING`): the same binary and work, but for writing the index. The
/// difference from the projector's own rate is what the index costs, measured on the same log,
/// minutes apart (back-to-back full runs differ by more than it on this machine).
async fn projector_without_index(setup: &Setup, events: u64) -> anyhow::Result<f64> {
    let bare = Setup { database: format!("{}_noindex", setup.database), ..setup.clone() };
    bare.fresh_database().await?;
    let pool = sqlx::PgPool::connect(&bare.database_url()).await?;
    let live = eventline_read_models::live(&pool, eventline_read_models::Projection::Main).await?;
    sqlx::query(&format!(
        "CREATE RULE bench_skip_event_index AS ON INSERT TO {}.event_index DO INSTEAD NOTHING",
        live.schema()
    ))
    .execute(&pool)
    .await?;
    let started_at = Instant::now();
    let group = ("EVENTLINE_PROJECTOR_GROUP", format!("{}.projector-without-index", setup.topic));
    let projector = bare.start_with("eventline-projector", PORTS.2 + 10, &[group])?;
    let (rate, _) = projection_rate(&pool, &setup.topic, events, started_at).await?;
    projector.stop();
    pool.close().await;
    stack::drop_database(&setup.postgres, &bare.database).await?;
    Ok(rate)
}

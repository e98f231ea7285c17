//! Rebuild, rollback and verify started from the console: the same functions the CLI runs
//! (`operations::{rebuild, verify}`, so the same rules: one at a time across every process, by
//! the advisory lock; a rebuild resumes an interrupted one), run here as a job of this process.
//!
//! While a job runs, a watcher samples the version it fills twice a second: per partition how
//! far it is against its goal (the log's end, and never behind the live version), the phase
//! (replaying, then catching up, then switched), events per second over the last samples and an
//! ETA. Errors met while watching, and the job's own, are kept with the job and shown as they
//! happen. The job and its outcome are audited.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use eventline_read_models::{self as read_models, Projection};
use eventline_runtime::problem::{Problem, ProblemType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ConsoleState;
use super::access::Caller;
use super::audit;
use crate::Config;
use crate::live::reported::Reported;
use crate::operations::progress::Progress;
use crate::operations::{rebuild, verify};
use crate::project::checkpoint::load_version;

pub const JOB_RUNNING: ProblemType =
    ProblemType::new(StatusCode::CONFLICT, "console-job-running", "An operation is running");

/// Events per transaction while replaying (the CLI's default).
const BATCH_SIZE: usize = 5000;
/// Differing rows shown per table and side by a verify.
const SAMPLE: usize = 5;
/// How often a running job's version is sampled (three small queries).
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// What the console can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Rebuild,
    Rollback,
    Verify,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rebuild => "rebuild",
            Kind::Rollback => "rollback",
            Kind::Verify => "verify",
        }
    }

    /// The state of the version the job fills.
    fn filling(self) -> read_models::State {
        match self {
            Kind::Rebuild => read_models::State::Building,
            Kind::Rollback => read_models::State::Previous,
            Kind::Verify => read_models::State::Verifying,
        }
    }
}

/// A job as the console shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub kind: Kind,
    /// The projection being worked now (one after the other when the job is for all of them).
    pub projection: Projection,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub state: JobState,
    /// `replaying` (behind the live version), `catching up` (following the log's end to switch),
    /// `switched`; for a verify `folding`, then `compared`.
    pub phase: String,
    /// The version being filled.
    pub version: Option<i32>,
    pub partitions: Vec<PartitionProgress>,
    pub done: i64,
    pub goal: i64,
    pub events_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    /// Errors met so far, oldest first.
    pub errors: Vec<JobError>,
    /// The outcome: the switch (rebuild, rollback) or the report (verify).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionProgress {
    pub partition: i32,
    pub done: i64,
    pub goal: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// The console's job, if it started one.
#[derive(Default)]
pub struct Jobs {
    current: Mutex<Option<Job>>,
}

/// Versions and what runs on them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Versions {
    #[schema(value_type = Vec<Object>)]
    pub versions: Vec<rebuild::VersionStatus>,
    /// The job this console started last (running or finished).
    pub job: Option<Job>,
    /// A version left `building` or `verifying` with no job of this console running: an
    /// interrupted rebuild or verify (by a restart), which the next one resumes.
    pub interrupted: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Start {
    /// `rebuild` or `rollback`, typed: both switch what the query service serves.
    pub confirm: Option<String>,
    /// The projection to work on; all of them (one after the other) when absent.
    pub projection: Option<Projection>,
}

impl Jobs {
    fn snapshot(&self) -> Option<Job> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    fn update(&self, change: impl FnOnce(&mut Job)) {
        if let Ok(mut current) = self.current.lock()
            && let Some(job) = current.as_mut()
        {
            change(job);
        }
    }
}

/// The read-model versions, and the job
#[utoipa::path(get, path = "/console/api/versions", tag = "versions",
    responses((status = 200, body = Versions)))]
pub async fn versions(_caller: Caller, State(state): State<ConsoleState>) -> Result<Json<Versions>, Problem> {
    let versions = rebuild::versions(&state.public, &state.kafka.topic)
        .await
        .map_err(|e| super::cannot_read("The read-model versions", format!("{e:#}")))?;
    let job = state.jobs.snapshot();
    let running = job.as_ref().is_some_and(|j| j.state == JobState::Running);
    let interrupted =
        versions.iter().find(|v| v.state == "building" || v.state == "verifying").filter(|_| !running).map(
            |v| {
                format!(
                    "{} is `{}` with no operation running here: starting a {} resumes it",
                    v.version.schema(),
                    v.state,
                    if v.state == "building" { "rebuild" } else { "verify" }
                )
            },
        );
    Ok(Json(Versions { versions, job, interrupted }))
}

/// Start a rebuild (confirm: "rebuild")
#[utoipa::path(post, path = "/console/api/rebuild", tag = "versions", request_body = Start,
    responses((status = 202, body = Job), (status = 403, description = "Not an operator, or read-only"),
              (status = 409, description = "Not confirmed, or an operation is running")))]
pub async fn start_rebuild(
    caller: Caller,
    state: State<ConsoleState>,
    headers: HeaderMap,
    Json(start): Json<Start>,
) -> Result<(StatusCode, Json<Job>), Problem> {
    begin(caller, state, headers, start, Kind::Rebuild).await
}

/// Roll back to the previous version (confirm: "rollback")
#[utoipa::path(post, path = "/console/api/rollback", tag = "versions", request_body = Start,
    responses((status = 202, body = Job), (status = 403, description = "Not an operator, or read-only"),
              (status = 409, description = "Not confirmed, or an operation is running")))]
pub async fn start_rollback(
    caller: Caller,
    state: State<ConsoleState>,
    headers: HeaderMap,
    Json(start): Json<Start>,
) -> Result<(StatusCode, Json<Job>), Problem> {
    begin(caller, state, headers, start, Kind::Rollback).await
}

/// Verify the live read models against the log
#[utoipa::path(post, path = "/console/api/verify", tag = "versions", request_body = Start,
    responses((status = 202, body = Job), (status = 403, description = "Not an operator, or read-only"),
              (status = 409, description = "An operation is running")))]
pub async fn start_verify(
    caller: Caller,
    state: State<ConsoleState>,
    headers: HeaderMap,
    Json(start): Json<Start>,
) -> Result<(StatusCode, Json<Job>), Problem> {
    begin(caller, state, headers, start, Kind::Verify).await
}

async fn begin(
    caller: Caller,
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    start: Start,
    kind: Kind,
) -> Result<(StatusCode, Json<Job>), Problem> {
    state.access.may_act(&caller, &headers, kind.name())?;
    // Verify changes nothing served; a rebuild and a rollback switch what readers see.
    if kind != Kind::Verify && start.confirm.as_deref().map(str::trim) != Some(kind.name()) {
        return Err(Problem::new(
            super::dead_letters::CONFIRMATION_REQUIRED,
            format!("A {0} switches what the query service serves: send `confirm: \"{0}\"`.", kind.name()),
        ));
    }
    let job = {
        let mut current = state.jobs.current.lock().map_err(|_| Problem::internal())?;
        if current.as_ref().is_some_and(|j| j.state == JobState::Running) {
            return Err(Problem::new(
                JOB_RUNNING,
                "An operation started here is still running; wait for it to end.",
            ));
        }
        let job = Job {
            kind,
            projection: start.projection.unwrap_or(Projection::Main),
            started_by: caller.principal.name.clone(),
            started_at: Utc::now(),
            finished_at: None,
            state: JobState::Running,
            phase: "starting".into(),
            version: None,
            partitions: Vec::new(),
            done: 0,
            goal: 0,
            events_per_second: None,
            eta_seconds: None,
            errors: Vec::new(),
            result: None,
        };
        *current = Some(job.clone());
        job
    };
    let action = format!("versions.{}", kind.name());
    let parameters = serde_json::json!({ "confirm": start.confirm, "projection": start.projection });
    audit::record(
        &state.public,
        &caller,
        &action,
        &parameters,
        true,
        &serde_json::json!({ "started": true }),
    )
    .await;
    tokio::spawn(run(state, caller, kind, start.projection));
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Runs the job, watching it meanwhile, and records how it ended.
async fn run(state: ConsoleState, caller: Caller, kind: Kind, projection: Option<Projection>) {
    let config: Arc<Config> = state.config.clone();
    // The errors the operation meets and retries, shown with the job as they happen.
    let problems = Arc::new(Reported::default());
    let progress = Progress::Watched(problems.clone());
    let (jobs, public) = (state.jobs.clone(), state.public.clone());
    let work = async move {
        let chosen = match (kind, projection) {
            (_, Some(projection)) => vec![projection],
            // All of them: every projection that has a previous version, for a rollback.
            (Kind::Rollback, None) => rebuild::with_previous(&public).await?,
            (_, None) => Projection::ALL.to_vec(),
        };
        let mut results = Vec::new();
        for projection in chosen {
            jobs.update(|job| job.projection = projection);
            let progress = progress.clone();
            let result = match kind {
                Kind::Rebuild => {
                    rebuild::rebuild(&config, projection, progress, BATCH_SIZE).await.and_then(to_value)
                }
                Kind::Rollback => {
                    rebuild::rollback(&config, projection, progress, BATCH_SIZE).await.and_then(to_value)
                }
                Kind::Verify => {
                    verify::verify(&config, projection, progress, BATCH_SIZE, SAMPLE).await.and_then(to_value)
                }
            }?;
            results.push(result);
        }
        // One projection's outcome as it is; several as a list, the last one's fields on top.
        match results.len() {
            1 => Ok::<_, anyhow::Error>(results.remove(0)),
            _ => {
                let mut last = results.last().cloned().unwrap_or_default();
                last["projections"] = serde_json::Value::Array(results);
                Ok(last)
            }
        }
    };
    tokio::pin!(work);
    let mut rates = VecDeque::new();
    // The first look comes soon, so that even a short job shows its version.
    let mut next_look = Duration::from_millis(250);
    let report_problems = || {
        let met = problems.take();
        state
            .jobs
            .update(|job| job.errors.extend(met.into_iter().map(|(at, message)| JobError { at, message })));
    };
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = tokio::time::sleep(next_look) => watch(&state, kind, &problems, &mut rates).await,
        }
        report_problems();
        next_look = SAMPLE_EVERY;
    };
    report_problems();
    if let Ok(result) = &outcome {
        finished_progress(&state, kind, result).await;
    }
    let (succeeded, result) = match outcome {
        Ok(result) => (true, result),
        Err(error) => (false, serde_json::json!({ "error": format!("{error:#}") })),
    };
    // Audited before the job shows as ended, so whoever sees it ended finds it in the audit.
    let action = format!("versions.{}", kind.name());
    let finished = serde_json::json!({ "finished": true });
    audit::record(&state.public, &caller, &action, &finished, succeeded, &result).await;
    state.jobs.update(|job| {
        job.finished_at = Some(Utc::now());
        job.state = if succeeded { JobState::Succeeded } else { JobState::Failed };
        if succeeded {
            job.phase = if kind == Kind::Verify { "compared" } else { "switched" }.into();
            job.eta_seconds = Some(0.0);
        } else if let Some(error) = result["error"].as_str() {
            job.errors.push(JobError { at: Utc::now(), message: error.to_owned() });
        }
        job.result = Some(result);
    });
}

/// The progress of a job that succeeded: the version it filled, complete at the positions it
/// reached (the switched version's checkpoints, or the ones a verify compared at).
async fn finished_progress(state: &ConsoleState, kind: Kind, result: &serde_json::Value) {
    // Both outcomes name the version: the one switched to, or the one compared.
    let Some(version) = result["live"].as_i64().and_then(|v| i32::try_from(v).ok()) else { return };
    let Ok(projection) = serde_json::from_value::<Projection>(result["projection"].clone()) else { return };
    let positions: BTreeMap<i32, i64> = if kind == Kind::Verify {
        serde_json::from_value(result["positions"].clone()).unwrap_or_default()
    } else {
        load_version(&state.public, projection.version(version), &state.kafka.topic).await.unwrap_or_default()
    };
    state.jobs.update(|job| {
        job.version = Some(version);
        job.partitions = positions
            .iter()
            .map(|(&partition, &at)| PartitionProgress { partition, done: at, goal: at })
            .collect();
        job.done = positions.values().sum();
        job.goal = job.done;
    });
}

fn to_value<T: Serialize>(outcome: T) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(outcome)?)
}

/// One sample of the version the job fills: progress per partition, phase, rate and ETA.
async fn watch(state: &ConsoleState, kind: Kind, problems: &Reported, rates: &mut VecDeque<(Instant, i64)>) {
    let topic = &state.kafka.topic;
    let Some(projection) = state.jobs.snapshot().map(|job| job.projection) else { return };
    let sampled: sqlx::Result<_> = async {
        let filling = read_models::in_state(&state.public, projection, kind.filling()).await?;
        let theirs = match read_models::in_state(&state.public, projection, read_models::State::Live).await? {
            Some(live) => load_version(&state.public, live, topic).await?,
            None => BTreeMap::new(),
        };
        let ours = match filling {
            Some(version) => load_version(&state.public, version, topic).await?,
            None => BTreeMap::new(),
        };
        Ok((filling, theirs, ours))
    }
    .await;
    let (filling, theirs, mut ours) = match sampled {
        Ok(sample) => sample,
        Err(error) => {
            state.jobs.update(|job| {
                job.errors.push(JobError { at: Utc::now(), message: format!("watching the job: {error}") })
            });
            return;
        }
    };
    // A bulk load commits its rows at its end: until then, where it has read to.
    let loading = problems.loading();
    let in_bulk = ours.is_empty() && !loading.is_empty();
    if in_bulk {
        ours = loading;
    }
    // The goal per partition: the log's end as last observed, never behind the live version.
    let mut goal: BTreeMap<i32, i64> = state
        .projection
        .latest()
        .map(|o| o.partitions.iter().filter_map(|p| Some((p.partition, p.end?))).collect())
        .unwrap_or_default();
    for (&partition, &offset) in &theirs {
        let at = goal.entry(partition).or_insert(0);
        *at = (*at).max(offset);
    }
    let partitions: Vec<PartitionProgress> = goal
        .iter()
        .map(|(&partition, &goal)| PartitionProgress {
            partition,
            done: ours.get(&partition).copied().unwrap_or(0),
            goal,
        })
        .collect();
    let done: i64 = partitions.iter().map(|p| p.done).sum();
    let total: i64 = partitions.iter().map(|p| p.goal.max(p.done)).sum();
    let behind_live = theirs.iter().any(|(p, offset)| ours.get(p).copied().unwrap_or(0) < *offset);
    let now = Instant::now();
    rates.push_back((now, done));
    while rates.len() > 6 {
        rates.pop_front();
    }
    let rate = rates.front().and_then(|(at, first)| {
        let seconds = now.duration_since(*at).as_secs_f64();
        (seconds > 0.0).then(|| (done - first).max(0) as f64 / seconds)
    });
    state.jobs.update(|job| {
        job.version = filling.map(|v| v.number);
        job.phase = match kind {
            Kind::Verify => "folding",
            _ if in_bulk => "loading in bulk",
            _ if behind_live => "replaying",
            _ => "catching up",
        }
        .into();
        job.partitions = partitions;
        job.done = done;
        job.goal = total;
        job.events_per_second = rate;
        job.eta_seconds = rate.filter(|r| *r > 0.0).map(|r| (total - done).max(0) as f64 / r);
    });
}

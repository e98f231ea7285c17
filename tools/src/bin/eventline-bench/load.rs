//! Load generation: closed-loop (N workers back to back, for the maximum rate) and open-loop
//! (requests started on a fixed schedule whatever happens to earlier ones, latency measured from
//! the *scheduled* start, so a stall is charged to every request it delayed: no coordinated
//! omission). Latencies go to an HdrHistogram in microseconds.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

struct Recorder {
    histogram: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        // 1 µs to 60 s at 3 significant digits: constant, valid bounds.
        let histogram = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Arc::new(Recorder {
            histogram: Mutex::new(histogram),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    fn record(&self, outcome: anyhow::Result<()>, latency: Duration) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
                if let Ok(mut histogram) = self.histogram.lock() {
                    histogram.saturating_record(micros);
                }
            }
            Err(error) => {
                if self.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("   request failed: {error:#}");
                }
            }
        }
    }

    fn measured(&self, seconds: f64) -> Measured {
        let ok = self.ok.load(Ordering::Relaxed);
        let (p50, p99, max) = match self.histogram.lock() {
            Ok(h) if !h.is_empty() => (
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0,
            ),
            _ => (f64::NAN, f64::NAN, f64::NAN),
        };
        Measured {
            ok,
            errors: self.errors.load(Ordering::Relaxed),
            seconds,
            per_s: ok as f64 / seconds.max(1e-9),
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
        }
    }
}

/// `workers` tasks each run `request(i)` back to back for `duration`.
pub async fn closed_loop<F, Fut>(workers: usize, duration: Duration, request: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let recorder = Recorder::new();
    let request = Arc::new(request);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (recorder, request, counter) = (recorder.clone(), request.clone(), counter.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let outcome = request(i).await;
                    recorder.record(outcome, sent.elapsed());
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    recorder.measured(started.elapsed().as_secs_f64())
}

/// Most requests an open loop keeps in flight.
const MAX_IN_FLIGHT: u64 = 2_000;

/// Starts `request(i)` at `rate` per second for `duration`, each on its own task; latency runs
/// from when the request was due.
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, request: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let recorder = Recorder::new();
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate.max(1.0)) as u64;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    for i in 0..total {
        let due = started + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let recorder = recorder.clone();
        // A system that cannot keep up would otherwise pile up requests (and sockets) without
        // bound; past the cap a due request counts as failed rather than being sent.
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            recorder
                .record(Err(anyhow::anyhow!("{MAX_IN_FLIGHT} requests already in flight")), Duration::ZERO);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = in_flight.clone();
        let fut = request(i);
        tasks.push(tokio::spawn(async move {
            let outcome = fut.await;
            recorder.record(outcome, due.elapsed());
            in_flight.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    recorder.measured(started.elapsed().as_secs_f64())
}

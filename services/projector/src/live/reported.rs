//! What a running catch-up or operation reports to whoever watches it (the console, a rebuild's
//! progress): the errors it met and retried, and where a bulk load has read to. The live runner
//! writes it; the operations and the console read it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// What a running operation tells whoever watches it: the errors it met, newest last (at most
/// [`Reported::KEPT`]), and where a bulk load has read to.
#[derive(Debug, Default)]
pub struct Reported {
    errors: Mutex<Vec<(DateTime<Utc>, String)>>,
    loading: Mutex<BTreeMap<i32, i64>>,
}

impl Reported {
    pub(crate) const KEPT: usize = 50;

    pub fn push(&self, message: String) {
        if let Ok(mut problems) = self.errors.lock() {
            if problems.len() >= Self::KEPT {
                problems.remove(0);
            }
            problems.push((Utc::now(), message));
        }
    }

    /// The errors met since the last call.
    pub fn take(&self) -> Vec<(DateTime<Utc>, String)> {
        self.errors.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    /// Where a bulk load under way has read to, per partition (next offset); empty when none is.
    /// Its rows are not committed yet, so the version's checkpoints do not show it.
    pub fn loading(&self) -> BTreeMap<i32, i64> {
        self.loading.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub(crate) fn set_loading(&self, positions: &BTreeMap<i32, i64>) {
        if let Ok(mut loading) = self.loading.lock() {
            loading.clone_from(positions);
        }
    }
}

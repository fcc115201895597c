//! Resident set size of this process, sampled over time next to a progress counter: what
//! "memory stays flat under a backlog" is judged by.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The resident set size now, in bytes (`/proc/self/statm`: pages resident × page size).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// One sample: seconds since the start, resident bytes, messages done so far.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub secs: f64,
    pub rss: u64,
    pub done: u64,
}

/// Samples RSS on a thread of its own (so a busy runtime never delays a sample).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Start sampling every `every`, reading progress from `done`.
    pub fn start(every: Duration, done: Arc<AtomicU64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            let sample = |samples: &mut Vec<Sample>| {
                samples.push(Sample {
                    secs: start.elapsed().as_secs_f64(),
                    rss: rss_bytes(),
                    done: done.load(Ordering::Relaxed),
                })
            };
            while !flag.load(Ordering::Relaxed) {
                sample(&mut samples);
                std::thread::sleep(every);
            }
            sample(&mut samples);
            samples
        });
        Sampler { stop, thread }
    }

    /// Stop and return the samples.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Mebibytes, for printing.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

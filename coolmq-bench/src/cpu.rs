//! Client CPU time per side, printed next to the ratios: on a machine the broker keeps busy,
//! every microsecond the client spends per message is taken from the broker.

use std::fmt;
use std::time::Duration;

/// CPU time used: by the whole process, and by the calling thread (the benchmark's own
/// `block_on` thread, which runs both sides' sending code) split into user and kernel.
#[derive(Clone, Copy, Default)]
pub struct CpuUse {
    process: Duration,
    thread_user: Duration,
    thread_kernel: Duration,
}

impl CpuUse {
    /// The counters now.
    pub fn now() -> Self {
        let (pu, pk) = usage(libc::RUSAGE_SELF);
        let (tu, tk) = usage(libc::RUSAGE_THREAD);
        CpuUse {
            process: pu + pk,
            thread_user: tu,
            thread_kernel: tk,
        }
    }

    /// Add what was used since `before`.
    pub fn add_since(&mut self, before: &CpuUse) {
        let now = CpuUse::now();
        self.process += now.process.saturating_sub(before.process);
        self.thread_user += now.thread_user.saturating_sub(before.thread_user);
        self.thread_kernel += now.thread_kernel.saturating_sub(before.thread_kernel);
    }

    /// Process CPU microseconds per message over `n` messages.
    pub fn process_us_per_message(&self, n: usize) -> f64 {
        self.process.as_secs_f64() * 1e6 / n.max(1) as f64
    }

    /// Microseconds per message over `n` messages.
    pub fn per_message(&self, n: usize) -> PerMessage {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        PerMessage {
            process: us(self.process),
            user: us(self.thread_user),
            kernel: us(self.thread_kernel),
        }
    }
}

/// CPU microseconds per message.
pub struct PerMessage {
    process: f64,
    user: f64,
    kernel: f64,
}

impl fmt::Display for PerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1} (sending thread {:.1} user + {:.1} kernel)",
            self.process, self.user, self.kernel
        )
    }
}

/// (user, system) CPU time of `who`.
fn usage(who: libc::c_int) -> (Duration, Duration) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1_000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

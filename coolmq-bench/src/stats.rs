//! Medians and the report line.

use std::time::Duration;

/// Messages per second of `n` messages in `elapsed`.
pub fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// The median of the samples.
pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Print one scenario's line: medians, spread and the ratio.
pub fn report(backend: &str, scenario: &str, n: usize, raw: &[f64], coolmq: &[f64]) -> f64 {
    let (r, c) = (median(raw), median(coolmq));
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        format!("{lo:.0}..{hi:.0}")
    };
    let ratio = c / r;
    println!(
        "{backend} {scenario:<18} n={n:<6} reps={} raw={r:>9.0} msg/s [{}] coolmq={c:>9.0} msg/s [{}] ratio={ratio:.3}",
        raw.len(),
        spread(raw),
        spread(coolmq)
    );
    ratio
}

/// One line for a scenario run in blocks that alternate raw and coolmq: `ratio=` is the
/// median over the block pairs of coolmq/raw throughput (blocks run back to back), with the
/// pairs' quartiles; the repetitions' median throughputs and their ratio (`of-medians=`) are
/// printed too.
///
/// Why the pairs' median: on a broker that syncs its journal, one block of messages can take
/// several times the usual time, independently from block to block. A repetition's total is
/// dominated by its few slowest blocks, so a ratio of totals moves a lot between runs of the
/// same build; the median of the pairs cancels the broker's drift (both blocks of a pair see
/// it) and ignores its stalls (docs/BENCHMARKS.md, how to read the numbers).
pub fn report_paired(
    backend: &str,
    scenario: &str,
    n: usize,
    raw: &[f64],
    coolmq: &[f64],
    pairs: &[f64],
) -> f64 {
    let (r, c) = (median(raw), median(coolmq));
    let (lo, hi) = quartiles(pairs);
    let ratio = median(pairs);
    println!(
        "{backend} {scenario:<18} n={n:<6} reps={} raw={r:>9.0} msg/s coolmq={c:>9.0} msg/s of-medians={:.3} block-pairs={} quartiles {lo:.3}..{hi:.3} ratio={ratio:.3}",
        raw.len(),
        c / r,
        pairs.len(),
    );
    ratio
}

/// The first and third quartiles.
fn quartiles(samples: &[f64]) -> (f64, f64) {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.75))
}

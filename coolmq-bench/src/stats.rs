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

/// [`report`] plus the median and quartiles of `pairs`: coolmq/raw throughput of blocks run
/// back to back. The broker's own speed drifts between blocks (its journal's disk syncs); the
/// spread of the pairs shows how much of a ratio is that noise.
pub fn report_paired(
    backend: &str,
    scenario: &str,
    n: usize,
    raw: &[f64],
    coolmq: &[f64],
    pairs: &[f64],
) -> f64 {
    let ratio = report(backend, scenario, n, raw, coolmq);
    let (lo, hi) = quartiles(pairs);
    println!(
        "{backend} {scenario:<18} block pairs: {} median={:.3} quartiles {lo:.3}..{hi:.3}",
        pairs.len(),
        median(pairs)
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

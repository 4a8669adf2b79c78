//! Latency summaries: nearest-rank percentiles over recorded per-request latencies.

/// p50/p90/p99/max of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: usize,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// The nearest-rank `pct` percentile (0 < pct <= 100) of sorted, non-empty `sorted`.
fn percentile(sorted: &[u64], pct: u64) -> u64 {
    let n = sorted.len() as u64;
    // Smallest rank r (1-based) with r >= pct/100 * n.
    let rank = (pct * n).div_ceil(100).max(1);
    sorted[(rank - 1) as usize]
}

/// Summarises `latencies_us` (sorted in place); `None` if there are none.
pub fn summarize(latencies_us: &mut [u64]) -> Option<LatencySummary> {
    if latencies_us.is_empty() {
        return None;
    }
    latencies_us.sort_unstable();
    Some(LatencySummary {
        count: latencies_us.len(),
        p50_us: percentile(latencies_us, 50),
        p90_us: percentile(latencies_us, 90),
        p99_us: percentile(latencies_us, 99),
        max_us: *latencies_us.last().unwrap_or(&0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;

    #[test]
    fn percentiles_of_one_to_hundred() {
        let mut v: Vec<u64> = (1..=100).collect();
        v.shuffle(&mut rand::thread_rng());
        let s = summarize(&mut v).unwrap();
        assert_eq!((s.p50_us, s.p90_us, s.p99_us, s.max_us), (50, 90, 99, 100));
        assert_eq!(s.count, 100);
    }

    #[test]
    fn single_and_empty() {
        assert_eq!(summarize(&mut []), None);
        let s = summarize(&mut [7]).unwrap();
        assert_eq!((s.p50_us, s.p99_us, s.max_us), (7, 7, 7));
    }

    #[test]
    fn matches_a_naive_model() {
        let mut rng = rand::thread_rng();
        for n in 1..200usize {
            let mut v: Vec<u64> = (0..n)
                .map(|_| rand::Rng::gen_range(&mut rng, 0..1000))
                .collect();
            let s = summarize(&mut v).unwrap();
            for (pct, got) in [(50, s.p50_us), (90, s.p90_us), (99, s.p99_us)] {
                // At least pct% of the values are <= got, and fewer are < got.
                let le = v.iter().filter(|x| **x <= got).count();
                let lt = v.iter().filter(|x| **x < got).count();
                assert!(le * 100 >= pct * n, "n={n} pct={pct}");
                assert!(lt * 100 < pct * n, "n={n} pct={pct}");
            }
        }
    }
}

//! Host groups: the hosts of a profile that share agent label, logical cores
//! and worker threads, their whole-run histograms merged, their spread and
//! their outliers (docs/reports.md, Host groups).

use cwbench::histogram::{Hist, Summary, new_hist};

use crate::result::{
    Accounting, GroupPoint, GroupResult, HostResult, Outlier, Spread, ThroughputBasis,
};

/// A host is an outlier when its modified z-score 0.6745·|x − median| / MAD
/// exceeds this (Iglewicz and Hoaglin's cut-off)…
pub const OUTLIER_Z: f64 = 3.5;
/// …and it is at least this far from the median, relative to it, so that a
/// tight group does not flag noise of a few percent.
pub const OUTLIER_MIN_RELATIVE: f64 = 0.10;
/// Fewer hosts than this have no median to stand out from.
pub const OUTLIER_MIN_HOSTS: usize = 3;

/// The name a group goes by in reports and in `compare`: `4c/4t`, or
/// `LABEL 4c/4t`.
pub fn group_name(label: &str, cores: u32, threads: u32) -> String {
    if label.is_empty() {
        format!("{cores}c/{threads}t")
    } else {
        format!("{label} {cores}c/{threads}t")
    }
}

struct Acc {
    label: String,
    cores: u32,
    threads: u32,
    hosts: Vec<usize>,
    /// The sum of the ok hosts' whole-run completion histograms.
    completion: Hist,
}

/// Builds one profile's groups as its hosts finish: each host's histogram is
/// merged at once, so at most one histogram per group is held.
pub struct Grouper {
    basis: ThroughputBasis,
    groups: Vec<Acc>,
}

impl std::fmt::Debug for Grouper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouper")
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl Grouper {
    pub fn new(basis: ThroughputBasis) -> Self {
        Self {
            basis,
            groups: Vec::new(),
        }
    }

    /// Adds host number `index` of the profile, with its whole-run
    /// completion histogram.
    pub fn add(&mut self, index: usize, h: &HostResult, completion: &Hist) {
        let (label, cores, threads) = (&h.info.label, h.info.logical_cores, h.threads);
        let pos = self
            .groups
            .iter()
            .position(|g| g.label == *label && g.cores == cores && g.threads == threads);
        let g = match pos {
            Some(p) => &mut self.groups[p],
            None => {
                self.groups.push(Acc {
                    label: label.clone(),
                    cores,
                    threads,
                    hosts: Vec::new(),
                    completion: new_hist(),
                });
                self.groups.last_mut().expect("just pushed")
            }
        };
        g.hosts.push(index);
        if h.status.checked() {
            // Both histograms auto-resize, so the sum is lossless.
            let _ = g.completion.add(completion);
        }
    }

    /// The groups, in order of their first host; `hosts` is the profile's
    /// hosts, indexed as given to `add`.
    pub fn finish(self, hosts: &[HostResult]) -> Vec<GroupResult> {
        let basis = self.basis;
        self.groups
            .into_iter()
            .map(|g| group(g, hosts, basis))
            .collect()
    }
}

fn group(g: Acc, all: &[HostResult], basis: ThroughputBasis) -> GroupResult {
    let members: Vec<&HostResult> = g.hosts.iter().filter_map(|&i| all.get(i)).collect();
    let ok: Vec<&HostResult> = members
        .iter()
        .copied()
        .filter(|h| h.status.checked())
        .collect();
    let tput: Vec<(String, f64)> = ok.iter().map(|h| (h.label.clone(), h.throughput)).collect();
    let p99: Vec<(String, f64)> = ok
        .iter()
        .map(|h| (h.label.clone(), h.latency.completion.p99 as f64))
        .collect();
    let sum: f64 = tput.iter().map(|(_, t)| t).sum();
    let throughput = match basis {
        ThroughputBasis::Sum => sum,
        ThroughputBasis::PerHostMean if ok.is_empty() => 0.0,
        ThroughputBasis::PerHostMean => sum / ok.len() as f64,
    };
    let mut outliers = outliers_of("throughput", &tput);
    outliers.extend(outliers_of("p99", &p99));
    GroupResult {
        name: group_name(&g.label, g.cores, g.threads),
        label: g.label,
        cores: g.cores,
        threads: g.threads,
        hosts: members.iter().map(|h| h.label.clone()).collect(),
        hosts_ok: ok.len() as u32,
        throughput,
        throughput_basis: basis,
        accounting: ok
            .iter()
            .fold(Accounting::default(), |a, h| add(a, &h.accounting)),
        completion: Summary::of(&g.completion),
        spectrum: crate::result::spectrum(&g.completion),
        throughput_spread: spread(&tput),
        p99_spread: spread(&p99),
        outliers,
        intervals: intervals(&ok, basis),
    }
}

fn add(a: Accounting, b: &Accounting) -> Accounting {
    Accounting {
        sent: a.sent + b.sent,
        received: a.received + b.received,
        completed: a.completed + b.completed,
        crashed: a.crashed + b.crashed,
        timed_out: a.timed_out + b.timed_out,
        shed: a.shed + b.shed,
        cancelled: a.cancelled + b.cancelled,
        unreleased: a.unreleased + b.unreleased,
        measured_completed: a.measured_completed + b.measured_completed,
        restarts: a.restarts + b.restarts,
        refused: a.refused + b.refused,
        connection_lost: a.connection_lost + b.connection_lost,
    }
}

/// The median of values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(values: &[(String, f64)]) -> Spread {
    let v: Vec<f64> = values.iter().map(|(_, x)| *x).collect();
    if v.is_empty() {
        return Spread::default();
    }
    Spread {
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        median: median(&v),
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// The hosts whose figure is an outlier of the group: modified z-score over
/// `OUTLIER_Z` and at least `OUTLIER_MIN_RELATIVE` from the median.
pub fn outliers_of(metric: &str, values: &[(String, f64)]) -> Vec<Outlier> {
    if values.len() < OUTLIER_MIN_HOSTS {
        return Vec::new();
    }
    let v: Vec<f64> = values.iter().map(|(_, x)| *x).collect();
    let med = median(&v);
    let mad = median(&v.iter().map(|x| (x - med).abs()).collect::<Vec<_>>());
    values
        .iter()
        .filter_map(|(host, x)| {
            let dev = (x - med).abs();
            let score = (mad > 0.0).then(|| 0.6745 * (x - med) / mad);
            let far = score.map_or(dev > 0.0, |z| z.abs() > OUTLIER_Z);
            (far && dev >= OUTLIER_MIN_RELATIVE * med.abs()).then(|| Outlier {
                host: host.clone(),
                metric: metric.to_string(),
                value: *x,
                median: med,
                score,
            })
        })
        .collect()
}

/// The group's throughput over time: interval k of every host combined
/// (agents start their runs together, each interval on its own clock).
fn intervals(ok: &[&HostResult], basis: ThroughputBasis) -> Vec<GroupPoint> {
    let n = ok.iter().map(|h| h.intervals.len()).max().unwrap_or(0);
    (0..n)
        .map(|k| {
            let at: Vec<_> = ok.iter().filter_map(|h| h.intervals.get(k)).collect();
            let sum: f64 = at.iter().map(|i| i.jobs_per_s).sum();
            GroupPoint {
                t_s: at.iter().map(|i| i.t_s).sum::<f64>() / at.len() as f64,
                jobs_per_s: match basis {
                    ThroughputBasis::Sum => sum,
                    ThroughputBasis::PerHostMean => sum / at.len() as f64,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &[f64]) -> Vec<(String, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, x)| (format!("h{i}"), *x))
            .collect()
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn the_host_far_from_the_rest_is_flagged() {
        let o = outliers_of("p99", &vals(&[3000.0, 3100.0, 2950.0, 3050.0, 30_000.0]));
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].host.as_str(), o[0].median), ("h4", 3050.0));
        assert!(o[0].score.unwrap() > OUTLIER_Z);
        // Slow in throughput: flagged with a negative score.
        let o = outliers_of("throughput", &vals(&[1000.0, 1010.0, 990.0, 400.0]));
        assert_eq!(o.len(), 1);
        assert!(o[0].score.unwrap() < -OUTLIER_Z);
    }

    #[test]
    fn noise_and_small_groups_are_not_outliers() {
        // Scores are large (tight group) but the deviation is under 10%.
        assert!(outliers_of("p99", &vals(&[1000.0, 1001.0, 1000.0, 1002.0, 1060.0])).is_empty());
        // Two hosts: no median to stand out from.
        assert!(outliers_of("p99", &vals(&[1.0, 100.0])).is_empty());
        // MAD 0 (most hosts equal): any host 10% off stands out.
        let o = outliers_of("p99", &vals(&[500.0, 500.0, 500.0, 800.0]));
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].score, None);
        assert!(outliers_of("p99", &vals(&[500.0, 500.0, 500.0, 520.0])).is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(group_name("", 4, 2), "4c/2t");
        assert_eq!(group_name("c6i.xlarge", 4, 4), "c6i.xlarge 4c/4t");
    }
}

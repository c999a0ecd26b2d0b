//! Scaling: throughput and p99 against every dimension that varies across a
//! run's groups and profiles, speedup and efficiency from the smallest
//! point, and the Universal Scalability Law fitted where the dimension is
//! cores or threads (docs/reports.md, Scaling).

use cwbench::scenario::enum_name;

use crate::result::usl_shape;
pub use crate::result::{
    Dimension, ScalingPoint, ScalingSeries, USL_MIN_POINTS, USL_POOR_R2, UslFit,
};
use crate::result::{GroupResult, ProfileResult};

/// Fits the USL to (N, X) points by least squares on X: λ in closed form for
/// each (σ, κ), which are found by a grid search refined with Nelder–Mead
/// inside σ ∈ [0, 1], κ ≥ 0. None with fewer than `USL_MIN_POINTS` distinct
/// N, or any N or X not positive.
pub fn fit_usl(points: &[(f64, f64)]) -> Option<UslFit> {
    let mut ns: Vec<f64> = points.iter().map(|p| p.0).collect();
    ns.sort_by(f64::total_cmp);
    ns.dedup();
    if ns.len() < USL_MIN_POINTS || points.iter().any(|&(n, x)| !(n > 0.0 && x > 0.0)) {
        return None;
    }
    let sse = |s: f64, k: f64| -> f64 {
        if !(0.0..=1.0).contains(&s) || k < 0.0 {
            return f64::INFINITY;
        }
        let l = best_lambda(points, s, k);
        points
            .iter()
            .map(|&(n, x)| (x - l * usl_shape(n, s, k)).powi(2))
            .sum()
    };
    let start = grid_search(&sse);
    let (sigma, kappa) = nelder_mead(&sse, start);
    let lambda = best_lambda(points, sigma, kappa);
    let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
    let sst: f64 = points.iter().map(|p| (p.1 - mean).powi(2)).sum();
    let err = sse(sigma, kappa);
    let r2 = if sst > 0.0 {
        1.0 - err / sst
    } else if err <= f64::EPSILON {
        1.0
    } else {
        0.0
    };
    let peak_n = (kappa > 0.0 && sigma < 1.0).then(|| ((1.0 - sigma) / kappa).sqrt());
    let fit = UslFit {
        lambda,
        sigma,
        kappa,
        r2,
        points: points.len(),
        peak_n,
        peak_throughput: None,
    };
    Some(UslFit {
        peak_throughput: peak_n.map(|n| fit.at(n)),
        ..fit
    })
}

/// λ minimising Σ (X − λ·f(N))² for fixed σ, κ.
fn best_lambda(points: &[(f64, f64)], s: f64, k: f64) -> f64 {
    let (mut xf, mut ff) = (0.0, 0.0);
    for &(n, x) in points {
        let f = usl_shape(n, s, k);
        xf += x * f;
        ff += f * f;
    }
    if ff > 0.0 { xf / ff } else { 0.0 }
}

/// The best (σ, κ) on a grid: σ in steps of 0.01, κ = 0 or log-spaced over
/// 1e-7..1 (the coefficients seen in practice are 1e-5..1e-1).
fn grid_search(sse: &impl Fn(f64, f64) -> f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, 0.0, 0.0);
    for i in 0..=100 {
        let s = f64::from(i) / 100.0;
        for j in 0..=70 {
            let k = if j == 0 {
                0.0
            } else {
                10f64.powf(-7.0 + f64::from(j - 1) / 10.0)
            };
            let e = sse(s, k);
            if e < best.0 {
                best = (e, s, k);
            }
        }
    }
    (best.1, best.2)
}

/// Nelder–Mead on two parameters from `start`; the objective is infinite
/// outside the bounds, which keeps the simplex inside them.
fn nelder_mead(f: &impl Fn(f64, f64) -> f64, start: (f64, f64)) -> (f64, f64) {
    let step = (0.02, (start.1 * 0.5).max(1e-6));
    let mut s = [
        start,
        ((start.0 + step.0).min(1.0), start.1),
        (start.0, start.1 + step.1),
    ];
    let val = |p: (f64, f64)| f(p.0, p.1);
    for _ in 0..2000 {
        s.sort_by(|a, b| val(*a).total_cmp(&val(*b)));
        let (best, worst) = (val(s[0]), val(s[2]));
        if worst - best <= 1e-15 * best.abs().max(1e-300) {
            break;
        }
        let c = ((s[0].0 + s[1].0) / 2.0, (s[0].1 + s[1].1) / 2.0);
        let at = |t: f64| (c.0 + t * (s[2].0 - c.0), c.1 + t * (s[2].1 - c.1));
        let r = at(-1.0);
        if val(r) < best {
            let e = at(-2.0);
            s[2] = if val(e) < val(r) { e } else { r };
        } else if val(r) < val(s[1]) {
            s[2] = r;
        } else {
            let k = at(0.5);
            if val(k) < worst {
                s[2] = k;
            } else {
                for i in 1..3 {
                    s[i] = ((s[0].0 + s[i].0) / 2.0, (s[0].1 + s[i].1) / 2.0);
                }
            }
        }
    }
    s.sort_by(|a, b| val(*a).total_cmp(&val(*b)));
    s[0]
}

/// One group of one profile with everything that places it.
struct Point<'a> {
    profile: &'a ProfileResult,
    group: &'a GroupResult,
    attrs: Vec<String>,
}

/// The dimensions, in report order: (name, numeric).
const DIMS: [(&str, bool); 14] = [
    ("cores", true),
    ("threads", true),
    ("workers", true),
    ("queue_bound", true),
    ("producers", true),
    ("compute_threads", true),
    ("yield_every", true),
    ("connections", true),
    ("dispatch", false),
    ("compute", false),
    ("backpressure", false),
    ("runtime", false),
    ("schedulers", false),
    ("label", false),
];

fn attrs(p: &ProfileResult, g: &GroupResult) -> Vec<String> {
    let f = &p.profile;
    vec![
        g.cores.to_string(),
        g.threads.to_string(),
        f.workers.to_string(),
        f.queue_bound.to_string(),
        f.producers.to_string(),
        f.compute_threads.to_string(),
        f.yield_every.to_string(),
        f.connections.map_or_else(|| "—".into(), |c| c.to_string()),
        enum_name(&f.dispatch),
        enum_name(&f.compute),
        enum_name(&f.backpressure),
        enum_name(&f.runtime),
        f.schedulers
            .map_or_else(|| "agent".into(), |s| s.to_string()),
        if g.label.is_empty() {
            "—".into()
        } else {
            g.label.clone()
        },
    ]
}

/// Every dimension that varies across the run's groups (with a merged host)
/// and profiles. A dimension that another determines and that determines it
/// back (threads that follow cores one to one) is listed with that one
/// rather than on its own.
pub fn dimensions(profiles: &[ProfileResult]) -> Vec<Dimension> {
    let points: Vec<Point> = profiles
        .iter()
        .flat_map(|p| {
            p.groups
                .iter()
                .filter(|g| g.hosts_ok > 0)
                .map(move |g| Point {
                    profile: p,
                    group: g,
                    attrs: attrs(p, g),
                })
        })
        .collect();
    let varies: Vec<bool> = (0..DIMS.len())
        .map(|d| points.iter().any(|p| p.attrs[d] != points[0].attrs[d]))
        .collect();
    let follows: Vec<Vec<usize>> = (0..DIMS.len())
        .map(|d| {
            (0..DIMS.len())
                .filter(|&a| a != d && varies[a] && determines(&points, d, a))
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for d in (0..DIMS.len()).filter(|&d| varies[d]) {
        let listed =
            (0..d).any(|e| varies[e] && follows[e].contains(&d) && follows[d].contains(&e));
        if listed {
            continue;
        }
        let series = series_along(&points, d, &follows[d], &varies);
        if !series.is_empty() {
            out.push(Dimension {
                name: DIMS[d].0.into(),
                numeric: DIMS[d].1,
                with: follows[d].iter().map(|&a| DIMS[a].0.to_string()).collect(),
                series,
            });
        }
    }
    out
}

/// Whether attribute `d` determines attribute `a` across the points: equal
/// `d` always comes with equal `a`.
fn determines(points: &[Point], d: usize, a: usize) -> bool {
    points.iter().all(|p| {
        points
            .iter()
            .all(|q| p.attrs[d] != q.attrs[d] || p.attrs[a] == q.attrs[a])
    })
}

/// The series along dimension `d`: points partitioned by every other
/// attribute but those `d` determines; those with at least two values of `d`.
fn series_along(
    points: &[Point],
    d: usize,
    follows: &[usize],
    varies: &[bool],
) -> Vec<ScalingSeries> {
    let mut parts: Vec<(Vec<&str>, Vec<&Point>)> = Vec::new();
    for p in points {
        let key: Vec<&str> = (0..DIMS.len())
            .filter(|&i| i != d && !follows.contains(&i))
            .map(|i| p.attrs[i].as_str())
            .collect();
        match parts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(p),
            None => parts.push((key, vec![p])),
        }
    }
    let (name, numeric) = DIMS[d];
    parts
        .into_iter()
        .filter_map(|(_, mut pts)| {
            if numeric {
                pts.sort_by(|a, b| num(&a.attrs[d]).total_cmp(&num(&b.attrs[d])));
            }
            pts.dedup_by(|a, b| a.attrs[d] == b.attrs[d]);
            (pts.len() >= 2).then(|| series(&pts, d, name, numeric, follows, varies))
        })
        .collect()
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

fn series(
    pts: &[&Point],
    d: usize,
    name: &str,
    numeric: bool,
    follows: &[usize],
    varies: &[bool],
) -> ScalingSeries {
    let fixed = (0..DIMS.len())
        .filter(|&i| i != d && varies[i] && !follows.contains(&i))
        .map(|i| format!("{}={}", DIMS[i].0, pts[0].attrs[i]))
        .collect::<Vec<_>>()
        .join(", ");
    let parallel = matches!(name, "cores" | "threads");
    let (x0, n0) = (pts[0].group.throughput, num(&pts[0].attrs[d]));
    let points: Vec<ScalingPoint> = pts
        .iter()
        .map(|p| {
            let speedup = if x0 > 0.0 {
                p.group.throughput / x0
            } else {
                0.0
            };
            ScalingPoint {
                value: p.attrs[d].clone(),
                profile: p.profile.label.clone(),
                group: p.group.name.clone(),
                throughput: p.group.throughput,
                throughput_basis: p.group.throughput_basis,
                p99_us: p.group.completion.p99,
                speedup,
                efficiency: (parallel && n0 > 0.0).then(|| speedup / (num(&p.attrs[d]) / n0)),
            }
        })
        .collect();
    let usl = if parallel && numeric {
        let xy: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| (num(&p.attrs[d]), p.group.throughput))
            .collect();
        fit_usl(&xy)
    } else {
        None
    };
    ScalingSeries { fixed, points, usl }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(lambda: f64, sigma: f64, kappa: f64, ns: &[f64]) -> Vec<(f64, f64)> {
        ns.iter()
            .map(|&n| (n, lambda * usl_shape(n, sigma, kappa)))
            .collect()
    }

    #[test]
    fn usl_recovers_known_coefficients() {
        for (l, s, k) in [
            (1000.0, 0.05, 0.002),
            (25_000.0, 0.3, 0.0),
            (480.0, 0.0, 0.01),
            (90.0, 0.12, 0.0005),
        ] {
            let pts = synthetic(l, s, k, &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]);
            let f = fit_usl(&pts).unwrap();
            assert!((f.lambda - l).abs() / l < 1e-4, "λ {} vs {l}", f.lambda);
            assert!((f.sigma - s).abs() < 1e-4, "σ {} vs {s}", f.sigma);
            assert!((f.kappa - k).abs() < 1e-5, "κ {} vs {k}", f.kappa);
            assert!(f.r2 > 0.999_999, "R² {}", f.r2);
            if k > 0.0 {
                let peak = ((1.0 - s) / k).sqrt();
                assert!((f.peak_n.unwrap() - peak).abs() / peak < 1e-2);
            }
        }
    }

    #[test]
    fn usl_on_noisy_points_and_its_caveats() {
        // ±3% noise around λ 1000, σ 0.1, κ 0.001 on 1..16 cores.
        let noise = [1.02, 0.97, 1.01, 0.99, 1.03, 0.98];
        let pts: Vec<(f64, f64)> = synthetic(1000.0, 0.1, 0.001, &[1.0, 2.0, 4.0, 6.0, 8.0, 16.0])
            .into_iter()
            .zip(noise)
            .map(|((n, x), e)| (n, x * e))
            .collect();
        let f = fit_usl(&pts).unwrap();
        assert!(f.r2 > 0.95 && !f.poor(), "{f:?}");
        assert!((f.sigma - 0.1).abs() < 0.05, "{f:?}");
        // A zig-zag does not follow the law.
        let f = fit_usl(&[(1.0, 100.0), (2.0, 400.0), (3.0, 90.0), (4.0, 380.0)]).unwrap();
        assert!(f.poor(), "{f:?}");
        assert!(f.caveats(4.0).iter().any(|c| c.contains("poor fit")));
        // Three points: exact, and said to be.
        let f = fit_usl(&synthetic(100.0, 0.2, 0.01, &[1.0, 2.0, 4.0])).unwrap();
        assert!(f.caveats(4.0).iter().any(|c| c.contains("3 points")));
        assert!(fit_usl(&[(1.0, 1.0), (2.0, 2.0)]).is_none());
        assert!(fit_usl(&[(1.0, 1.0), (2.0, 0.0), (3.0, 2.0)]).is_none());
    }
}

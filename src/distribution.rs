//! Value distributions for work units and sleeps. Every sample consumes exactly
//! two 64-bit random words, whatever the distribution, so a job's values never
//! depend on how many draws another field took (docs/workload.md, "Sampling").

use serde::{Deserialize, Serialize};

/// A distribution of non-negative integers (work units, or a duration in the
/// unit its key names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Dist {
    /// Always `value`.
    Constant { value: u64 },
    /// Integers in `min..=max`, each equally likely.
    Uniform { min: u64, max: u64 },
    /// Exponential with the given mean, rounded, capped at `max`.
    Exponential { mean: f64, max: u64 },
    /// Log-normal: `median * exp(sigma * Z)`, Z standard normal, rounded,
    /// capped at `max`.
    LogNormal { median: f64, sigma: f64, max: u64 },
    /// Bounded Pareto on `[min, max]` with shape `alpha`, rounded.
    Pareto { min: f64, max: f64, alpha: f64 },
    /// One of `values`, with probability proportional to `weights`.
    Discrete { values: Vec<u64>, weights: Vec<u64> },
}

/// A problem with a distribution's parameters: (parameter, its value, what
/// it must be).
pub type ParamError = (&'static str, String, String);

/// 53 random bits as a float in [0, 1).
#[inline]
pub fn unit_f64(w: u64) -> f64 {
    (w >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// An integer in `0..n`, exactly uniform up to 2^-64 bias, no floats.
#[inline]
pub fn below(w: u64, n: u64) -> u64 {
    ((u128::from(w) * u128::from(n)) >> 64) as u64
}

fn round_cap(x: f64, cap: u64) -> u64 {
    // `as` saturates for out-of-range floats; NaN cannot occur with validated
    // parameters but maps to 0 anyway.
    let v = x.round();
    if v <= 0.0 {
        0
    } else if v >= cap as f64 {
        cap
    } else {
        v as u64
    }
}

impl Dist {
    /// Checks the parameters; `limit` is the largest value a sample may take.
    pub fn validate(&self, limit: u64) -> Result<(), ParamError> {
        let finite_pos = |name: &'static str, x: f64| -> Result<(), ParamError> {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err((name, x.to_string(), "must be a finite number > 0".into()))
            }
        };
        let within = |name: &'static str, x: u64| -> Result<(), ParamError> {
            if x <= limit {
                Ok(())
            } else {
                Err((name, x.to_string(), format!("must be in 0..={limit}")))
            }
        };
        match self {
            Dist::Constant { value } => within("value", *value),
            Dist::Uniform { min, max } => {
                within("min", *min)?;
                within("max", *max)?;
                if min > max {
                    return Err(("max", max.to_string(), format!("must be >= min ({min})")));
                }
                Ok(())
            }
            Dist::Exponential { mean, max } => {
                finite_pos("mean", *mean)?;
                within("max", *max)
            }
            Dist::LogNormal { median, sigma, max } => {
                finite_pos("median", *median)?;
                if !(sigma.is_finite() && *sigma >= 0.0 && *sigma <= 10.0) {
                    return Err(("sigma", sigma.to_string(), "must be in 0..=10".into()));
                }
                within("max", *max)
            }
            Dist::Pareto { min, max, alpha } => {
                finite_pos("min", *min)?;
                finite_pos("alpha", *alpha)?;
                if !(max.is_finite() && *max >= *min && *max <= limit as f64) {
                    return Err((
                        "max",
                        max.to_string(),
                        format!("must be in min ({min})..={limit}"),
                    ));
                }
                if *alpha > 100.0 {
                    return Err(("alpha", alpha.to_string(), "must be in (0, 100]".into()));
                }
                Ok(())
            }
            Dist::Discrete { values, weights } => {
                if values.is_empty() || values.len() > 1024 {
                    return Err((
                        "values",
                        format!("{} values", values.len()),
                        "must hold 1..=1024 values".into(),
                    ));
                }
                if weights.len() != values.len() {
                    return Err((
                        "weights",
                        format!("{} entries", weights.len()),
                        format!("must have one per value ({})", values.len()),
                    ));
                }
                for v in values {
                    within("values", *v)?;
                }
                let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
                if total == 0 || total > u128::from(u32::MAX) {
                    return Err((
                        "weights",
                        format!("sum {total}"),
                        "must sum to 1..=4294967295".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Draws one value from two random words. Deterministic for given words.
    #[inline]
    pub fn sample(&self, w1: u64, w2: u64) -> u64 {
        // The constant case inline, the rest out of line: a constant class
        // (zero-work runs) then costs a compare, not a call.
        match self {
            Dist::Constant { value } => *value,
            other => other.draw(w1, w2),
        }
    }

    #[inline(never)]
    fn draw(&self, w1: u64, w2: u64) -> u64 {
        match self {
            Dist::Constant { value } => *value,
            Dist::Uniform { min, max } => min + below(w1, max - min + 1),
            Dist::Exponential { mean, max } => round_cap(-mean * (1.0 - unit_f64(w1)).ln(), *max),
            Dist::LogNormal { median, sigma, max } => {
                // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
                let r = (-2.0 * (1.0 - unit_f64(w1)).ln()).sqrt();
                let z = r * (std::f64::consts::TAU * unit_f64(w2)).cos();
                round_cap(median * (sigma * z).exp(), *max)
            }
            Dist::Pareto { min, max, alpha } => {
                let u = unit_f64(w1);
                let x = min / (1.0 - u * (1.0 - (min / max).powf(*alpha))).powf(1.0 / alpha);
                round_cap(x.min(*max), *max as u64)
            }
            Dist::Discrete { values, weights } => {
                let total: u64 = weights.iter().sum();
                let mut r = below(w1, total);
                for (v, w) in values.iter().zip(weights) {
                    if r < *w {
                        return *v;
                    }
                    r -= w;
                }
                // Unreachable: r < total = sum of weights.
                values[values.len() - 1]
            }
        }
    }

    /// The distribution's mean, for estimates of run length.
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Constant { value } => *value as f64,
            Dist::Uniform { min, max } => (*min as f64 + *max as f64) / 2.0,
            Dist::Exponential { mean, max } => mean.min(*max as f64),
            Dist::LogNormal { median, sigma, max } => {
                (median * (sigma * sigma / 2.0).exp()).min(*max as f64)
            }
            Dist::Pareto { min, max, alpha } => {
                let (l, h, a) = (*min, *max, *alpha);
                if (a - 1.0).abs() < 1e-9 {
                    (h * l / (h - l).max(f64::MIN_POSITIVE)) * (h / l).ln()
                } else {
                    let la = l.powf(a);
                    la / (1.0 - (l / h).powf(a)) * a / (a - 1.0)
                        * (1.0 / l.powf(a - 1.0) - 1.0 / h.powf(a - 1.0))
                }
            }
            Dist::Discrete { values, weights } => {
                let total: u64 = weights.iter().sum();
                values
                    .iter()
                    .zip(weights)
                    .map(|(v, w)| *v as f64 * *w as f64)
                    .sum::<f64>()
                    / total as f64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    fn first(d: &Dist, n: usize) -> Vec<u64> {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        (0..n)
            .map(|_| d.sample(rng.next_u64(), rng.next_u64()))
            .collect()
    }

    fn all() -> Vec<(&'static str, Dist)> {
        vec![
            ("constant", Dist::Constant { value: 9 }),
            ("uniform", Dist::Uniform { min: 10, max: 20 }),
            (
                "exponential",
                Dist::Exponential {
                    mean: 100.0,
                    max: 10_000,
                },
            ),
            (
                "log-normal",
                Dist::LogNormal {
                    median: 100.0,
                    sigma: 1.0,
                    max: 100_000,
                },
            ),
            (
                "pareto",
                Dist::Pareto {
                    min: 10.0,
                    max: 10_000.0,
                    alpha: 1.2,
                },
            ),
            (
                "discrete",
                Dist::Discrete {
                    values: vec![0, 1, 5],
                    weights: vec![1, 2, 1],
                },
            ),
        ]
    }

    /// Golden first values: any change to sampling breaks parity with traces
    /// and other runtimes, so it must be deliberate.
    #[test]
    fn golden_first_values() {
        let got: Vec<String> = all()
            .iter()
            .map(|(n, d)| format!("{n}: {:?}", first(d, 6)))
            .collect();
        let want = GOLDEN;
        assert_eq!(got.join("\n"), want.trim());
    }

    const GOLDEN: &str = "
constant: [9, 9, 9, 9, 9, 9]
uniform: [12, 13, 11, 17, 20, 12]
exponential: [30, 42, 15, 111, 445, 28]
log-normal: [49, 208, 59, 27, 9, 207]
pareto: [13, 14, 11, 25, 402, 13]
discrete: [1, 1, 0, 1, 5, 0]
";

    #[test]
    fn means_are_close_to_sample_means() {
        for (name, d) in all() {
            let v = first(&d, 200_000);
            let m = v.iter().sum::<u64>() as f64 / v.len() as f64;
            let want = d.mean();
            assert!(
                (m - want).abs() <= want * 0.05 + 0.5,
                "{name}: sample mean {m}, formula {want}"
            );
        }
    }

    #[test]
    fn samples_respect_bounds() {
        for (name, d) in all() {
            for v in first(&d, 50_000) {
                match &d {
                    Dist::Uniform { min, max } => assert!((*min..=*max).contains(&v), "{name}"),
                    Dist::Exponential { max, .. } | Dist::LogNormal { max, .. } => {
                        assert!(v <= *max, "{name}")
                    }
                    Dist::Pareto { min, max, .. } => {
                        assert!(v as f64 >= min.floor() && v as f64 <= max.ceil(), "{name}")
                    }
                    Dist::Discrete { values, .. } => assert!(values.contains(&v), "{name}"),
                    Dist::Constant { value } => assert_eq!(v, *value),
                }
            }
        }
    }

    #[test]
    fn validation_names_the_parameter() {
        let bad = [
            (Dist::Uniform { min: 5, max: 4 }, "max"),
            (
                Dist::Exponential {
                    mean: f64::NAN,
                    max: 5,
                },
                "mean",
            ),
            (
                Dist::LogNormal {
                    median: 1.0,
                    sigma: -1.0,
                    max: 5,
                },
                "sigma",
            ),
            (
                Dist::Pareto {
                    min: 10.0,
                    max: 5.0,
                    alpha: 1.0,
                },
                "max",
            ),
            (
                Dist::Discrete {
                    values: vec![1, 2],
                    weights: vec![1],
                },
                "weights",
            ),
            (Dist::Constant { value: 1001 }, "value"),
        ];
        for (d, field) in bad {
            let e = d.validate(1000).unwrap_err();
            assert_eq!(e.0, field, "{d:?}: {}", e.1);
        }
    }
}

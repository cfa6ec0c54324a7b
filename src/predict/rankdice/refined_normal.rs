//! The refined normal approximation of a Poisson-binomial law (Volkova 1996), as rankseg
//! 0.0.8 uses it: CDF G(x) = Phi(x) + skew (1 - x^2) phi(x) / 6 at x = (k + 0.5 - loc) / sd,
//! clipped to [0, 1], and its central `1 - eps` interval from SciPy's quantiles.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// SciPy's `norm.cdf` (`ndtr`): erf near zero, erfc in the tails.
fn normal_cdf(x: f64) -> f64 {
    let z = x * FRAC_1_SQRT_2;
    if z.abs() < FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(z)
    } else {
        let tail = 0.5 * libm::erfc(z.abs());
        if z > 0.0 {
            1.0 - tail
        } else {
            tail
        }
    }
}

fn normal_pdf(x: f64) -> f64 {
    (-x * x / 2.0).exp() / (2.0 * PI).sqrt()
}

/// The standardised refined-normal CDF with skewness `skew`.
pub fn standard_cdf(x: f64, skew: f64) -> f64 {
    (normal_cdf(x) + skew * (1.0 - x * x) * normal_pdf(x) / 6.0).clamp(0.0, 1.0)
}

/// The law of a label volume: location, scale and skewness of the refined normal.
#[derive(Clone, Copy, Debug)]
pub struct RefinedNormal {
    pub loc: f64,
    pub scale: f64,
    pub skew: f64,
}

/// Phi and the skew term's shape (1 - x^2) phi on a grid, for cubic Hermite interpolation:
/// the PMFs of TRNA take hundreds of millions of CDF evaluations on real maps. Error below
/// 1e-13, far under the float32 arithmetic rankseg itself does them in.
struct CdfTable {
    phi: Vec<f64>,
    density: Vec<f64>,
    shape: Vec<f64>,
    shape_slope: Vec<f64>,
}

const TABLE_LIMIT: f64 = 10.0;
const TABLE_STEPS_PER_UNIT: f64 = 1024.0;

fn cdf_table() -> &'static CdfTable {
    static TABLE: std::sync::OnceLock<CdfTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let n = (2.0 * TABLE_LIMIT * TABLE_STEPS_PER_UNIT) as usize;
        let xs: Vec<f64> = (0..=n)
            .map(|i| -TABLE_LIMIT + i as f64 / TABLE_STEPS_PER_UNIT)
            .collect();
        CdfTable {
            phi: xs.iter().map(|&x| normal_cdf(x)).collect(),
            density: xs.iter().map(|&x| normal_pdf(x)).collect(),
            shape: xs.iter().map(|&x| (1.0 - x * x) * normal_pdf(x)).collect(),
            shape_slope: xs
                .iter()
                .map(|&x| (x * x * x - 3.0 * x) * normal_pdf(x))
                .collect(),
        }
    })
}

/// `standard_cdf` by interpolation in the table (exact values beyond +-10 are 0 or 1).
fn standard_cdf_fast(x: f64, skew: f64) -> f64 {
    if x <= -TABLE_LIMIT {
        return 0.0;
    }
    if x >= TABLE_LIMIT {
        return 1.0;
    }
    let table = cdf_table();
    let u = (x + TABLE_LIMIT) * TABLE_STEPS_PER_UNIT;
    let i = (u as usize).min(table.phi.len() - 2);
    let t = u - i as f64;
    let h = 1.0 / TABLE_STEPS_PER_UNIT;
    let (t2, t3) = (t * t, t * t * t);
    let (h00, h10, h01, h11) = (
        2.0 * t3 - 3.0 * t2 + 1.0,
        t3 - 2.0 * t2 + t,
        3.0 * t2 - 2.0 * t3,
        t3 - t2,
    );
    let hermite = |f: &[f64], d: &[f64]| h00 * f[i] + h10 * h * d[i] + h01 * f[i + 1] + h11 * h * d[i + 1];
    let phi = hermite(&table.phi, &table.density);
    let shape = hermite(&table.shape, &table.shape_slope);
    (phi + skew * shape / 6.0).clamp(0.0, 1.0)
}

impl RefinedNormal {
    pub fn cdf(&self, k: f64) -> f64 {
        standard_cdf_fast((k + 0.5 - self.loc) / self.scale, self.skew)
    }

    /// P(X = k) = F(k) - F(k - 1), clipped at 0, for k = lo..=hi, normalised to sum 1 (as
    /// rankseg normalises the truncated law).
    pub fn truncated_pmf(&self, lo: usize, hi: usize) -> Vec<f64> {
        let mut previous = self.cdf(lo as f64 - 1.0);
        let mut pmf: Vec<f64> = (lo..=hi)
            .map(|k| {
                let current = self.cdf(k as f64);
                let p = (current - previous).clamp(0.0, 1.0);
                previous = current;
                p
            })
            .collect();
        let total: f64 = pmf.iter().sum();
        pmf.iter_mut().for_each(|p| *p /= total);
        pmf
    }

    /// rankseg's integer interval holding `1 - eps` of the mass, clipped to `[0, dim]`:
    /// `[floor(sd * q_lo + loc) - 1, ceil(sd * q_hi + loc)]` with SciPy's quantiles of the
    /// standardised law.
    pub fn interval(&self, eps: f64, dim: usize) -> (usize, usize) {
        // SciPy's rv_continuous.interval(confidence = 1 - eps), literally.
        let confidence = 1.0 - eps;
        let q_lo = quantile((1.0 - confidence) / 2.0, self.skew);
        let q_hi = quantile((1.0 + confidence) / 2.0, self.skew);
        let lo = ((self.scale * q_lo + self.loc).floor() - 1.0).max(0.0);
        let hi = (self.scale * q_hi + self.loc).ceil().max(0.0);
        (lo.min(dim as f64) as usize, hi.min(dim as f64) as usize)
    }
}

/// SciPy's generic `rv_continuous.ppf`: widen a bracket from [-10, 10] by factors of 10,
/// then Brent's method with its default tolerances.
pub fn quantile(q: f64, skew: f64) -> f64 {
    let f = |x: f64| standard_cdf(x, skew) - q;
    let (mut left, mut right) = (-10.0f64, 10.0f64);
    while f(left) > 0.0 {
        (left, right) = (left * 10.0, left);
    }
    while f(right) < 0.0 {
        (left, right) = (right, right * 10.0);
    }
    brentq(f, left, right, 1e-14, 4.0 * f64::EPSILON, 100)
}

/// SciPy's `brentq` (its C implementation, step for step).
fn brentq(f: impl Fn(f64) -> f64, xa: f64, xb: f64, xtol: f64, rtol: f64, iterations: usize) -> f64 {
    let (mut xpre, mut xcur) = (xa, xb);
    let (mut fpre, mut fcur) = (f(xpre), f(xcur));
    let (mut xblk, mut fblk, mut spre, mut scur) = (0.0, 0.0, 0.0, 0.0);
    if fpre == 0.0 {
        return xpre;
    }
    if fcur == 0.0 {
        return xcur;
    }
    for _ in 0..iterations {
        if fpre != 0.0 && fcur != 0.0 && fpre.is_sign_negative() != fcur.is_sign_negative() {
            xblk = xpre;
            fblk = fpre;
            spre = xcur - xpre;
            scur = spre;
        }
        if fblk.abs() < fcur.abs() {
            xpre = xcur;
            xcur = xblk;
            xblk = xpre;
            fpre = fcur;
            fcur = fblk;
            fblk = fpre;
        }
        let delta = (xtol + rtol * xcur.abs()) / 2.0;
        let sbis = (xblk - xcur) / 2.0;
        if fcur == 0.0 || sbis.abs() < delta {
            return xcur;
        }
        if spre.abs() > delta && fcur.abs() < fpre.abs() {
            let stry = if xpre == xblk {
                -fcur * (xcur - xpre) / (fcur - fpre)
            } else {
                let dpre = (fpre - fcur) / (xpre - xcur);
                let dblk = (fblk - fcur) / (xblk - xcur);
                -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            };
            if 2.0 * stry.abs() < spre.abs().min(3.0 * sbis.abs() - delta) {
                spre = scur;
                scur = stry;
            } else {
                spre = sbis;
                scur = sbis;
            }
        } else {
            spre = sbis;
            scur = sbis;
        }
        xpre = xcur;
        fpre = fcur;
        xcur += if scur.abs() > delta {
            scur
        } else if sbis > 0.0 {
            delta
        } else {
            -delta
        };
        fcur = f(xcur);
    }
    xcur
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rankseg.distribution.RefinedNormal().interval(1 - eps, skew=skew)` from SciPy.
    const SCIPY: [(f64, f64, f64, f64); 10] = [
        (0.0, 0.0001, -3.89059188641312, 3.890591886413078),
        (0.0, 0.01, -2.5758293035489004, 2.575829303548902),
        (0.3, 0.0001, -2.7346900159056347, 4.257066740982973),
        (0.3, 0.01, -2.283563616108429, 2.820187212673306),
        (-0.5, 0.0001, -4.365509018098026, 2.337257310412203),
        (-0.5, 0.01, -2.9411628001421133, 2.11124221779516),
        (1.2, 0.0001, -1.8071632721911057, 4.563714198427148),
        (1.2, 0.01, -1.743775411727098, 3.2069729530713635),
        (2.5, 0.0001, -1.4963380614146913, 4.731695508858628),
        (2.5, 0.01, -1.4713583882974341, 3.4497838260745515),
    ];

    #[test]
    fn quantiles_match_scipy() {
        for (skew, eps, lo, hi) in SCIPY {
            let confidence = 1.0 - eps;
            let ours = (
                quantile((1.0 - confidence) / 2.0, skew),
                quantile((1.0 + confidence) / 2.0, skew),
            );
            assert!(
                (ours.0 - lo).abs() < 1e-12 && (ours.1 - hi).abs() < 1e-12,
                "skew {skew} eps {eps}: {ours:?}"
            );
        }
    }

    #[test]
    fn interpolated_cdf_is_close_to_the_exact_one() {
        for skew in [-1.0, 0.0, 0.4, 2.0] {
            for i in 0..20_000 {
                let x = -11.0 + i as f64 * 0.0011;
                assert!(
                    (standard_cdf_fast(x, skew) - standard_cdf(x, skew)).abs() < 1e-13,
                    "x {x} skew {skew}"
                );
            }
        }
    }
}

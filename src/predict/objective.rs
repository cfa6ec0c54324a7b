//! The RMA objective: the reciprocal-moment approximation of the expected Dice or IoU of
//! the mask made of the `t` largest probabilities of a row, as a function of the volume
//! `t`, the prefix mass `s = p_(1) + ... + p_(t)` and the row mass `mu`.

use super::float::Prob;
use super::Metric;

/// Above this smoothing rankseg 0.0.8 switches to `smooth * (score - 1)`-style scores so
/// that differences survive when the smoothing dominates every denominator.
const SCALED_SCORE_SMOOTH: f64 = 1e6;

#[derive(Clone, Copy, Debug)]
pub struct RmaObjective {
    pub metric: Metric,
    pub smooth: f64,
}

impl RmaObjective {
    fn scaled(&self) -> bool {
        self.smooth > SCALED_SCORE_SMOOTH
    }

    /// The score in exact (f64) arithmetic; used to screen volumes, never to decide
    /// between two close ones.
    pub fn exact(&self, t: f64, s: f64, mu: f64) -> f64 {
        let sm = self.smooth;
        if t == 0.0 {
            return if sm > 0.0 { sm / (mu + sm) } else { 0.0 };
        }
        match self.metric {
            Metric::Dice => 2.0 * s / (mu + t + 1.0 + sm) + sm / (mu + t + sm),
            Metric::Iou => (s + sm) / (mu - s + t + sm),
        }
    }

    /// How much the part of `exact` that depends on `t` alone can fall between volumes
    /// `t_lo` and `t_hi`: zero except for smoothed Dice, whose `s / (mu + t + smooth)` term
    /// is not a ratio of two linear functions of the volume.
    pub fn volume_slack(&self, t_lo: f64, t_hi: f64, mu: f64) -> f64 {
        let sm = self.smooth;
        match self.metric {
            Metric::Dice if sm > 0.0 => sm / (mu + t_lo + sm) - sm / (mu + t_hi + sm),
            _ => 0.0,
        }
    }

    /// A probability at or below which no pixel belongs to an optimal mask, given that
    /// volume `t` of mass `s` scores `exact(t, s, mu)`: the optimum is a threshold set
    /// `{p > lambda}` with lambda rising with the best score (Dinkelbach). Zero where the
    /// objective is not one ratio (smoothed Dice). Only a hint: the search still bounds the
    /// pixels below it before leaving them out.
    pub fn unselectable_below(&self, t: f64, s: f64, mu: f64) -> f64 {
        let score = self.exact(t, s, mu);
        match self.metric {
            Metric::Dice if self.smooth == 0.0 => score / 2.0,
            Metric::Iou => score / (1.0 + score),
            Metric::Dice => 0.0,
        }
    }

    /// A probability above which pixels are probably in the optimal mask: the threshold
    /// `unselectable_below` gives for the largest score either metric can reach (1).
    /// Only a hint for where the search bins finely; `None` where that threshold says
    /// nothing (smoothed Dice).
    pub fn likely_selected_above(&self) -> Option<f64> {
        // Dice: score / 2; IoU: score / (1 + score); both 1/2 at score 1.
        match self.metric {
            Metric::Dice if self.smooth != 0.0 => None,
            Metric::Dice | Metric::Iou => Some(0.5),
        }
    }

    /// How far apart two scores may be and still be reordered by rounding in `T`.
    pub fn margin<T: Prob>(&self, best: f64) -> f64 {
        if self.scaled() {
            T::SCORE_TOLERANCE
        } else {
            T::SCORE_TOLERANCE * best.abs().max(f64::MIN_POSITIVE)
        }
    }

    /// The score exactly as rankseg 0.0.8 computes it in the input's precision (same
    /// operations, same order), so that the first argmax over volumes agrees with it.
    /// `s` is the prefix mass accumulated in f64 and rounded, as torch's cumsum does.
    pub fn in_precision<T: Prob>(&self, t: usize, s: T, mu: T) -> T {
        let sm = T::from_f64(self.smooth);
        let two = T::from_f64(2.0);
        if t == 0 {
            return if self.smooth > 0.0 {
                if self.scaled() {
                    -mu / (T::ONE + mu / sm)
                } else {
                    (mu + sm).rdiv(sm)
                }
            } else {
                T::ZERO
            };
        }
        let tau = T::from_count(t);
        match self.metric {
            Metric::Dice => {
                let offset = mu + tau;
                if self.scaled() {
                    two * s / (T::ONE + (offset + T::ONE) / sm) - offset / (T::ONE + offset / sm)
                } else {
                    let discount = offset + T::ONE + sm;
                    two * s / discount + (discount - T::ONE).rdiv(sm)
                }
            }
            Metric::Iou => {
                let offset = mu - s + tau;
                if self.scaled() {
                    (two * s - mu - tau) / (T::ONE + offset / sm)
                } else {
                    (s + sm) / (offset + sm)
                }
            }
        }
    }

    /// The change in a class's score from giving it a pixel, when it already owns `count`
    /// pixels of mass `mass` and its row mass is `mu` (rankseg 0.0.8's rearranged forms,
    /// which avoid subtracting two nearly equal scores): the parts that do not depend on
    /// the pixel, computed once per class.
    pub fn increment<T: Prob>(&self, count: T, mass: T, mu: T) -> Increment<T> {
        let sm = T::from_f64(self.smooth);
        let two = T::from_f64(2.0);
        match self.metric {
            Metric::Dice => {
                let offset = count + mu + T::ONE;
                if self.smooth == 0.0 {
                    Increment::Dice {
                        centre: mass / offset,
                        scale: (offset + T::ONE).rdiv(two),
                    }
                } else if self.scaled() {
                    let base = T::ONE + (offset - T::ONE) / sm;
                    let denom = T::ONE + offset / sm;
                    let next = T::ONE + (offset + T::ONE) / sm;
                    Increment::DiceSmoothed {
                        denom,
                        mass: mass / sm,
                        product: denom * next,
                        base: (base * denom).rdiv(T::ONE),
                    }
                } else {
                    let denom = offset + sm;
                    let base = denom - T::ONE;
                    if base == T::ZERO {
                        // An empty class that is certainly empty: a pixel takes its Dice
                        // from 1 to about 0.
                        return Increment::Constant(-T::ONE);
                    }
                    Increment::DiceSmoothed {
                        denom,
                        mass,
                        product: denom * (denom + T::ONE),
                        base: (base * denom).rdiv(sm),
                    }
                }
            }
            Metric::Iou => {
                let offset = count + mu - mass;
                if self.scaled() {
                    Increment::IouScaled {
                        denom: T::ONE + offset / sm,
                        kept: T::ONE + mass / sm,
                        offset,
                        smooth: sm,
                    }
                } else {
                    let denom = offset + sm;
                    // 0/0 := 0 for an empty, identically zero class.
                    let safe = if denom == T::ZERO { T::ONE } else { denom };
                    Increment::Iou {
                        base: (mass + sm) / safe,
                        denom,
                    }
                }
            }
        }
    }
}

/// One class's score increment as a function of the pixel's probability (see
/// `RmaObjective::increment`); `at` finishes rankseg's expression in its order.
#[derive(Clone, Copy, Debug)]
pub enum Increment<T> {
    /// Dice without smoothing: `(p - centre) * scale`.
    Dice {
        centre: T,
        scale: T,
    },
    /// Smoothed Dice (both forms): `2 (p denom - mass) / product - base`.
    DiceSmoothed {
        denom: T,
        mass: T,
        product: T,
        base: T,
    },
    Constant(T),
    /// IoU: `(p - base (1 - p)) / (denom + 1 - p)`.
    Iou {
        base: T,
        denom: T,
    },
    /// IoU above the scaling smoothness.
    IouScaled {
        denom: T,
        kept: T,
        offset: T,
        smooth: T,
    },
}

impl<T: Prob> Increment<T> {
    #[inline(always)]
    pub fn at(&self, p: T) -> T {
        match *self {
            Increment::Dice { centre, scale } => (p - centre) * scale,
            Increment::DiceSmoothed {
                denom,
                mass,
                product,
                base,
            } => T::from_f64(2.0) * (p * denom - mass) / product - base,
            Increment::Constant(value) => value,
            Increment::Iou { base, denom } => {
                let rest = T::ONE - p;
                (p - base * rest) / (denom + rest)
            }
            Increment::IouScaled {
                denom,
                kept,
                offset,
                smooth,
            } => {
                let next = T::ONE + (offset - p + T::ONE) / smooth;
                (p * denom - kept * (T::ONE - p)) / (denom * next)
            }
        }
    }
}

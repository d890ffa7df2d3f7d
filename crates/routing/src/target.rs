//! Quality targets over the traffic (the strategies' promise): `quality_target` t keeps at
//! least t of the best single model's measured quality over the traffic at the least expected
//! cost. Each prompt goes to the candidate maximising `q̂ − λ·ĉ/scale` (expected quality minus
//! λ times expected cost in units of `scale` USD); λ is set at each retrain, per strategy, from
//! an off-policy estimate on the logged rated traffic (see the application's
//! `learning::target`), and is absent — the engine keeps its per-prompt share rule — where the
//! evidence cannot support the promise.

use serde::{Deserialize, Serialize};

use optimizer_types::Strategy;

/// One strategy's calibrated knob and the promise behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Knob {
    /// The promised share of the best single model's quality.
    pub target: f64,
    /// The price of quality: λ in `q − λ·cost/scale`.
    pub lambda: f64,
    /// Off-policy estimate (SNIPS) of the knob's mean quality on the logged traffic.
    pub estimate: f64,
    /// Its lower confidence bound, the side the promise is checked on.
    pub lower: f64,
    /// The best single model's estimated mean quality on the same traffic.
    pub best: f64,
    /// Estimated mean cost per request at this knob, USD.
    pub cost_usd: f64,
    /// Effective sample size of the logged decisions the knob's estimate rests on.
    pub effective_samples: f64,
}

/// The knobs of one routing-policy version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The cost unit λ is stated in, USD (the mean cost of the most expensive candidate on the
    /// logged traffic), so λ reads as "quality points per premium request".
    pub cost_scale: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Knob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced: Option<Knob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Knob>,
}

impl Calibration {
    /// The knob `strategy` routes with (None: not supported by the evidence).
    pub fn knob(&self, strategy: Strategy) -> Option<&Knob> {
        match strategy {
            Strategy::Cost => self.cost.as_ref(),
            Strategy::Balanced => self.balanced.as_ref(),
            Strategy::Quality => self.quality.as_ref(),
        }
        .filter(|_| self.cost_scale > 0.0)
    }

    pub fn set(&mut self, strategy: Strategy, knob: Option<Knob>) {
        match strategy {
            Strategy::Cost => self.cost = knob,
            Strategy::Balanced => self.balanced = knob,
            Strategy::Quality => self.quality = knob,
        }
    }
}

/// Before per-prompt estimates are learned: the expected quality a strategy's choice must reach
/// at complexity `c` (None: take the best).
pub fn prior_target(strategy: Strategy, c: f64) -> Option<f64> {
    match strategy {
        Strategy::Cost => Some(0.60 + 0.25 * c),
        Strategy::Balanced => Some(0.70 + 0.22 * c),
        Strategy::Quality => None,
    }
}

/// Where per-prompt estimates are learned but no knob is calibrated: the share of the best
/// candidate's expected quality for this prompt that the choice must keep — `cost` 0.90,
/// `balanced` 0.97, `quality` 1 — the cheapest candidate reaching it is taken. A request may
/// set its own share.
pub fn share(strategy: Strategy) -> f64 {
    match strategy {
        Strategy::Cost => 0.90,
        Strategy::Balanced => 0.97,
        Strategy::Quality => 1.0,
    }
}

/// The promise each strategy makes: the share of the best single model's quality it keeps.
pub fn quality_target(strategy: Strategy) -> f64 {
    match strategy {
        Strategy::Cost => 0.90,
        Strategy::Balanced => 0.95,
        Strategy::Quality => 0.99,
    }
}

/// The index of the (quality, cost) pair maximising `q − λ·c/scale` (ties: the cheaper, then
/// the first). None for no pairs.
pub fn choose(
    pairs: impl IntoIterator<Item = (f64, f64)>,
    lambda: f64,
    scale: f64,
) -> Option<usize> {
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let mut best: Option<(usize, f64, f64)> = None;
    for (i, (q, c)) in pairs.into_iter().enumerate() {
        let score = q - lambda * c / scale;
        let better = match best {
            None => true,
            Some((_, s, bc)) => score > s + 1e-12 || ((score - s).abs() <= 1e-12 && c < bc),
        };
        if better {
            best = Some((i, score, c));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knob_trades_quality_for_cost() {
        let pairs = [(0.9, 10.0), (0.8, 1.0), (0.5, 0.1)];
        assert_eq!(choose(pairs, 0.0, 10.0), Some(0), "λ = 0: the best");
        assert_eq!(choose(pairs, 0.2, 10.0), Some(1));
        assert_eq!(
            choose(pairs, 100.0, 10.0),
            Some(2),
            "a large λ: the cheapest"
        );
        assert_eq!(
            choose([(0.7, 2.0), (0.7, 1.0)], 0.0, 1.0),
            Some(1),
            "ties: cheaper"
        );
        assert_eq!(choose([], 1.0, 1.0), None);
    }

    #[test]
    fn presets_promise_shares_of_the_best_model() {
        assert_eq!(quality_target(Strategy::Cost), 0.90);
        assert_eq!(quality_target(Strategy::Balanced), 0.95);
        assert_eq!(quality_target(Strategy::Quality), 0.99);
        let mut c = Calibration {
            cost_scale: 1.0,
            ..Default::default()
        };
        assert!(c.knob(Strategy::Balanced).is_none());
        let knob = Knob {
            target: 0.95,
            lambda: 0.1,
            estimate: 0.8,
            lower: 0.78,
            best: 0.82,
            cost_usd: 0.01,
            effective_samples: 100.0,
        };
        c.set(Strategy::Balanced, Some(knob));
        assert_eq!(c.knob(Strategy::Balanced), Some(&knob));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::from_value::<Calibration>(json).unwrap(), c);
    }
}

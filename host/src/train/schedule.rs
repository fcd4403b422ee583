//! Learning-rate schedules: linear warmup, then cosine, linear or constant,
//! with the formulas of transformers' `get_cosine_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup` and `get_constant_schedule_with_warmup`,
//! so a config ported from HF Trainer or ms-swift trains with the same rates.
//!
//! `step` counts optimiser steps already taken, as HF's `LambdaLR` does: the
//! first update uses `lr_at(0, ..)`, which is 0 when there is warmup.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The shape of the rate after warmup (`lr_scheduler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Half a cosine from the base rate down to 0 at the last step.
    Cosine,
    /// A straight line from the base rate down to 0 at the last step.
    Linear,
    /// The base rate throughout (HF's `constant_with_warmup`; with no warmup
    /// steps, HF's `constant`).
    Constant,
}

/// The names `lr_scheduler_type` accepts.
pub const SCHEDULE_NAMES: [&str; 4] = ["cosine", "linear", "constant", "constant_with_warmup"];

impl FromStr for Schedule {
    type Err = String;

    /// HF's names; `constant_with_warmup` is [`Schedule::Constant`] (warmup is
    /// set separately either way).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "cosine" => Ok(Schedule::Cosine),
            "linear" => Ok(Schedule::Linear),
            "constant" | "constant_with_warmup" => Ok(Schedule::Constant),
            other => Err(format!(
                "unknown lr_scheduler_type `{other}`; expected one of {}",
                SCHEDULE_NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schedule::Cosine => "cosine",
            Schedule::Linear => "linear",
            Schedule::Constant => "constant",
        })
    }
}

/// Warmup steps from `warmup_ratio`, rounded up like HF's
/// `TrainingArguments.get_warmup_steps`.
pub fn warmup_steps(total_steps: usize, warmup_ratio: f64) -> usize {
    (total_steps as f64 * warmup_ratio.max(0.0)).ceil() as usize
}

/// The learning rate for the update after `step` optimiser steps.
pub fn lr_at(
    step: usize,
    total_steps: usize,
    warmup_steps: usize,
    base_lr: f64,
    schedule: Schedule,
) -> f64 {
    base_lr * multiplier(step, total_steps, warmup_steps, schedule)
}

/// The factor on the base rate: HF's `lr_lambda`, term by term.
fn multiplier(step: usize, total: usize, warmup: usize, schedule: Schedule) -> f64 {
    let (step, total, warmup) = (step as f64, total as f64, warmup as f64);
    if step < warmup {
        return step / warmup.max(1.0);
    }
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
        Schedule::Cosine => {
            // num_cycles = 0.5: half a period over the post-warmup steps.
            let progress = (step - warmup) / (total - warmup).max(1.0);
            (0.5 * (1.0 + (PI * 0.5 * 2.0 * progress).cos())).max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rates from transformers 5.23's schedulers (LambdaLR on a one-parameter
    /// AdamW, lr 1e-3, 10 steps, 3 warmup), printed by
    /// tests/fixtures/optim/make_expected.py (expected.txt).
    const HF_COSINE: [f64; 12] = [
        0.0,
        0.0003333333333333333,
        0.0006666666666666666,
        0.001,
        0.0009504844339512095,
        0.0008117449009293668,
        0.0006112604669781572,
        0.00038873953302184284,
        0.00018825509907063325,
        4.9515566048790485e-05,
        0.0,
        4.951556604879043e-05,
    ];
    const HF_LINEAR: [f64; 12] = [
        0.0,
        0.0003333333333333333,
        0.0006666666666666666,
        0.001,
        0.0008571428571428571,
        0.0007142857142857143,
        0.0005714285714285714,
        0.00042857142857142855,
        0.0002857142857142857,
        0.00014285714285714284,
        0.0,
        0.0,
    ];
    const HF_CONSTANT: [f64; 12] = [
        0.0,
        0.0003333333333333333,
        0.0006666666666666666,
        0.001,
        0.001,
        0.001,
        0.001,
        0.001,
        0.001,
        0.001,
        0.001,
        0.001,
    ];

    #[test]
    fn rates_match_transformers_schedulers() {
        for (schedule, expected) in [
            (Schedule::Cosine, HF_COSINE),
            (Schedule::Linear, HF_LINEAR),
            (Schedule::Constant, HF_CONSTANT),
        ] {
            for (step, want) in expected.iter().enumerate() {
                let got = lr_at(step, 10, 3, 1e-3, schedule);
                assert!(
                    (got - want).abs() < 1e-12,
                    "{schedule} step {step}: {got} vs HF {want}"
                );
            }
        }
    }

    #[test]
    fn warmup_ratio_rounds_up_like_hf() {
        assert_eq!(warmup_steps(10, 0.25), 3);
        assert_eq!(warmup_steps(100, 0.03), 3);
        assert_eq!(warmup_steps(7, 0.1), 1);
        assert_eq!(warmup_steps(10, 0.0), 0);
        // No warmup: full rate from the first step.
        assert_eq!(lr_at(0, 10, 0, 2e-4, Schedule::Cosine), 2e-4);
        assert_eq!(lr_at(0, 10, 0, 2e-4, Schedule::Constant), 2e-4);
    }

    #[test]
    fn names_parse_like_hf() {
        assert_eq!("cosine".parse::<Schedule>().unwrap(), Schedule::Cosine);
        assert_eq!(
            "constant_with_warmup".parse::<Schedule>().unwrap(),
            Schedule::Constant
        );
        let err = "cosin".parse::<Schedule>().unwrap_err();
        assert!(err.contains("cosin") && err.contains("cosine"), "{err}");
    }
}

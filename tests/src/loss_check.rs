//! What the loss-formula suites (`preference`, `kto`, `grpo`) share: fixed
//! log-probabilities from a fixture written by a Python script, read as the
//! plugin's f32 tensors hold them, and the three checks each loss gets —
//! the value and metrics against the fixture's (TRL's formulas), and the
//! gradient against central differences of an f64 reference.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use serde_json::Value;

use crate::repo_root;

/// The JSON fixture at `path` (relative to the repository root).
pub fn read_fixture(path: impl AsRef<Path>) -> Value {
    let path = repo_root().join(path);
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The matrix `json[key]`, each value rounded to f32 first: the fixture's
/// expectations were computed on exactly those values.
pub fn f32_matrix(json: &Value, key: &str) -> Vec<Vec<f64>> {
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has no matrix `{key}`"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32 as f64)
                .collect()
        })
        .collect()
}

/// A `[rows, cols]` f32 tensor on the CPU.
pub fn tensor_of(m: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f32> = m.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_vec(flat, (m.len(), m[0].len()), &Device::Cpu).unwrap()
}

/// `got` within `rel` of `want` (absolute below 1).
pub fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1.0)
}

/// The loss and the reported metrics equal the fixture case's `loss` and
/// `metrics` (the same metric names, each within 1e-5). Returns the
/// metrics by name for further checks.
pub fn assert_matches_case(
    name: &str,
    loss: f64,
    metrics: &[(String, f64)],
    case: &Value,
) -> BTreeMap<String, f64> {
    let want = case["loss"].as_f64().unwrap();
    assert!(close(loss, want, 1e-5), "{name}: loss {loss}, TRL {want}");
    let got: BTreeMap<String, f64> = metrics.iter().cloned().collect();
    let want_metrics = case["metrics"].as_object().unwrap();
    let mut want_names: Vec<&str> = want_metrics.keys().map(String::as_str).collect();
    want_names.sort();
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(names, want_names, "{name}: metric names");
    for (metric, want) in want_metrics {
        let (g, w) = (got[metric], want.as_f64().unwrap());
        assert!(close(g, w, 1e-5), "{name}: {metric} {g}, TRL {w}");
    }
    got
}

/// The gradient of `loss` with respect to `policy` agrees (1e-4) with
/// central differences of `reference` around `at` in every entry of
/// `rows`, and is exactly 0 wherever `mask` is 0. Entries outside `rows`
/// are returned for the caller to check.
pub fn assert_gradient_matches(
    name: &str,
    loss: &Tensor,
    policy: &Var,
    at: &[Vec<f64>],
    rows: std::ops::Range<usize>,
    mask: &[Vec<f64>],
    reference: impl Fn(&[Vec<f64>]) -> f64,
) -> Vec<Vec<f32>> {
    let grads = loss.backward().unwrap();
    let grad = grads
        .get(policy.as_tensor())
        .expect("the loss reaches the policy")
        .to_vec2::<f32>()
        .unwrap();
    let h = 1e-5;
    for i in rows {
        for j in 0..at[i].len() {
            let mut up = at.to_vec();
            up[i][j] += h;
            let mut down = at.to_vec();
            down[i][j] -= h;
            let numeric = (reference(&up) - reference(&down)) / (2.0 * h);
            let g = grad[i][j] as f64;
            assert!(
                (g - numeric).abs() <= 1e-4 * numeric.abs().max(1.0),
                "{name}: d loss / d lp[{i}][{j}] is {g}, finite differences {numeric}"
            );
            if mask[i][j] == 0.0 {
                assert_eq!(g, 0.0, "{name}: a masked position has gradient");
            }
        }
    }
    grad
}

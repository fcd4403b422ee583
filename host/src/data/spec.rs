//! Dataset specs (`PATH_OR_NAME#N`), mixing and train/validation split.
//!
//! Sampling is seeded and reproducible: the same data, spec and seed give
//! the same samples in the same order (with this build of tuner: the
//! generator is rand's `StdRng`). Asking for more samples than a set holds
//! repeats the whole set as often as it fits and draws the rest at random,
//! as ms-swift does.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// A dataset and how many samples to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// A file path or a stored dataset name.
    pub source: String,
    /// `None`: every sample, in file order.
    pub count: Option<usize>,
}

/// A spec that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid dataset spec `{spec}`: {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl std::str::FromStr for Spec {
    type Err = SpecError;

    /// `data.jsonl`, `alpaca_zh#500`.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let err = |reason: &str| SpecError {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let (source, count) = match s.rsplit_once('#') {
            None => (s, None),
            Some((source, n)) => {
                let n: usize = n
                    .trim()
                    .parse()
                    .map_err(|_| err("the part after `#` must be a whole number of samples"))?;
                if n == 0 {
                    return Err(err("the sample count must be at least 1"));
                }
                (source, Some(n))
            }
        };
        if source.trim().is_empty() {
            return Err(err("no dataset before `#`"));
        }
        Ok(Spec {
            source: source.to_string(),
            count,
        })
    }
}

/// `count` samples of `items` (all of them, in order, for `None`).
pub fn take<T: Clone>(items: &[T], count: Option<usize>, seed: u64) -> Vec<T> {
    let Some(n) = count else {
        return items.to_vec();
    };
    if items.is_empty() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n / items.len() {
        out.extend_from_slice(items);
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(&mut rng);
    out.extend(order[..n % items.len()].iter().map(|&i| items[i].clone()));
    out
}

/// Mixes several sampled sets into one, shuffled.
pub fn mix<T>(parts: Vec<Vec<T>>, seed: u64) -> Vec<T> {
    let mut all: Vec<T> = parts.into_iter().flatten().collect();
    all.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_add(1)));
    all
}

/// Splits off a validation set of `ratio` of the samples (at least one
/// when the ratio is positive and there are two or more samples).
pub fn split<T>(mut items: Vec<T>, ratio: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let ratio = ratio.clamp(0.0, 1.0);
    if ratio == 0.0 || items.len() < 2 {
        return (items, Vec::new());
    }
    items.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_add(2)));
    let val = ((items.len() as f64 * ratio).round() as usize).clamp(1, items.len() - 1);
    let validation = items.split_off(items.len() - val);
    (items, validation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_and_without_a_count() {
        assert_eq!(
            "a.jsonl#3".parse::<Spec>().unwrap(),
            Spec {
                source: "a.jsonl".into(),
                count: Some(3)
            }
        );
        assert_eq!("name".parse::<Spec>().unwrap().count, None);
        assert!("a#0".parse::<Spec>().is_err());
        assert!("a#x".parse::<Spec>().is_err());
        assert!("#3".parse::<Spec>().is_err());
    }

    #[test]
    fn sampling_is_seeded_and_repeats_when_asked_for_more() {
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(take(&items, Some(4), 7), take(&items, Some(4), 7));
        assert_ne!(take(&items, Some(5), 1), take(&items, Some(5), 2));
        let big = take(&items, Some(25), 3);
        assert_eq!(big.len(), 25);
        for i in 0..10 {
            let n = big.iter().filter(|x| **x == i).count();
            assert!((2..=3).contains(&n), "{i} appears {n} times");
        }
        assert_eq!(take(&items, None, 0), items);
    }

    #[test]
    fn mixing_and_splitting_keep_every_sample_once() {
        let mixed = mix(vec![vec![1, 2, 3], vec![10, 20]], 5);
        let mut sorted = mixed.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3, 10, 20]);
        let (train, val) = split((0..100).collect::<Vec<u32>>(), 0.1, 9);
        assert_eq!((train.len(), val.len()), (90, 10));
        let (train, val) = split(vec![1, 2, 3], 0.01, 9);
        assert_eq!((train.len(), val.len()), (2, 1));
    }
}

//! Seeded randomness for training whose whole state is two integers, so a
//! checkpoint can store it and a resumed run draws exactly what the
//! uninterrupted run would have drawn.
//!
//! [`TrainRng`] is counter based: draw `n` of seed `s` is a fixed function of
//! `(s, n)` (SplitMix64 of both), so the state is `(seed, draws)` and needs
//! no serialised generator internals. Each draw either is a `u64` or seeds a
//! fresh [`StdRng`] for bulk work (a dropout mask, a shuffle), which keeps the
//! state small however many numbers one use consumes.

use candle_core::{DType, Device, Result, Shape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What a checkpoint stores of a [`TrainRng`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The run's seed.
    pub seed: u64,
    /// How many draws were made so far.
    pub draws: u64,
}

/// A seeded, resumable source of randomness (dropout masks, anything else
/// drawn during training).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainRng {
    state: RngState,
}

/// SplitMix64's finaliser: a bijective mix, so distinct inputs never collide.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator for one purpose derived from a seed and a stream number
/// (epoch, layer, ...), independent of every other stream.
pub fn stream_rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(stream_seed(seed, stream))
}

/// The seed of stream `stream` of `seed`: a mix of both, so nearby seeds
/// and streams give unrelated values.
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    mix(mix(seed) ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl TrainRng {
    /// A generator that has drawn nothing yet.
    pub fn new(seed: u64) -> Self {
        TrainRng {
            state: RngState { seed, draws: 0 },
        }
    }

    /// Continues from a checkpointed state.
    pub fn from_state(state: RngState) -> Self {
        TrainRng { state }
    }

    /// The state to checkpoint.
    pub fn state(&self) -> RngState {
        self.state
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let value = mix(mix(self.state.seed).wrapping_add(
            self.state
                .draws
                .wrapping_add(1)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
        self.state.draws += 1;
        value
    }

    /// A fresh generator for one bulk use, counting as one draw.
    pub fn fork(&mut self) -> StdRng {
        StdRng::seed_from_u64(self.next_u64())
    }

    /// An inverted-dropout mask of `shape` in `dtype`: each element is 0
    /// with probability `p`, else `1 / (1 - p)`, so `x * mask` keeps the
    /// expected value (as `torch.nn.functional.dropout` does). Drawn on the
    /// CPU from one fork and moved to `device`, so CPU and GPU runs with the
    /// same seed drop the same elements.
    pub fn dropout_mask(
        &mut self,
        shape: impl Into<Shape>,
        p: f32,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability {p} is not in [0, 1)");
        }
        let keep = 1.0 / (1.0 - p);
        let mut rng = self.fork();
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws_and_resume_continues_the_sequence() {
        let mut a = TrainRng::new(42);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let mut b = TrainRng::new(42);
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());

        // A checkpoint after 3 draws resumes with draws 4 and 5.
        let mut c = TrainRng::new(42);
        c.next_u64();
        c.next_u64();
        c.next_u64();
        let saved = serde_json::to_string(&c.state()).unwrap();
        let mut resumed = TrainRng::from_state(serde_json::from_str(&saved).unwrap());
        assert_eq!(resumed.next_u64(), first[3]);
        assert_eq!(resumed.next_u64(), first[4]);

        let mut other = TrainRng::new(43);
        assert_ne!(other.next_u64(), first[0]);
    }

    #[test]
    fn dropout_mask_drops_about_p_and_rescales() {
        let mut rng = TrainRng::new(7);
        let mask = rng
            .dropout_mask((64, 64), 0.25, DType::F32, &Device::Cpu)
            .unwrap();
        let values = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dropped = values.iter().filter(|v| **v == 0.0).count() as f64 / values.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "dropped {dropped}");
        assert!(
            values
                .iter()
                .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6)
        );
        // Deterministic for a seed, different on the next draw.
        let again = TrainRng::new(7)
            .dropout_mask((64, 64), 0.25, DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(
            values,
            again.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let next = rng
            .dropout_mask((64, 64), 0.25, DType::F32, &Device::Cpu)
            .unwrap();
        assert_ne!(
            values,
            next.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn streams_are_independent_and_reproducible() {
        let a: u64 = stream_rng(1, 0).random();
        let b: u64 = stream_rng(1, 1).random();
        let c: u64 = stream_rng(2, 0).random();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, stream_rng(1, 0).random::<u64>());
    }
}

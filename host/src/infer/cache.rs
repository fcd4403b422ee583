//! The key/value cache of one sequence: per layer, the rotated keys and the
//! values of every token seen so far, so each new token costs one row of
//! work instead of a pass over the whole prefix.
//!
//! Storage grows by doubling and is written in place (`slice_set`); a fork
//! (the `n` choices of one prompt) deep-copies it, since in-place writes to
//! shared storage would leak one choice's tokens into another.

use candle_core::{Result, Tensor};

/// Keys and values of one layer: `[kv_heads, capacity, head_dim]` each, the
/// first `len` positions filled.
#[derive(Debug)]
struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// The cache of one sequence across all layers.
#[derive(Debug, Default)]
pub struct SeqCache {
    layers: Vec<Option<LayerCache>>,
    /// Positions filled (the same in every layer once a step completes).
    len: usize,
    /// Positions allocated.
    capacity: usize,
}

/// Smallest allocation, in positions.
const MIN_CAPACITY: usize = 64;

impl SeqCache {
    /// An empty cache for a model of `layers` layers.
    pub fn new(layers: usize) -> Self {
        SeqCache {
            layers: (0..layers).map(|_| None).collect(),
            len: 0,
            capacity: 0,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k`, `v` (`[kv_heads, t, head_dim]`, contiguous) to `layer`
    /// and returns the whole cached keys and values `[kv_heads, len + t,
    /// head_dim]`. The length advances when the last layer is written.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(1)?;
        let needed = self.len + t;
        if needed > self.capacity {
            let capacity = needed.next_power_of_two().max(MIN_CAPACITY);
            for slot in self.layers.iter_mut().flatten() {
                *slot = grow(slot, capacity, self.len)?;
            }
            self.capacity = capacity;
        }
        let slot = match &mut self.layers[layer] {
            Some(slot) => slot,
            empty => {
                let (kvh, _, d) = k.dims3()?;
                let zeros = || Tensor::zeros((kvh, self.capacity, d), k.dtype(), k.device());
                empty.insert(LayerCache {
                    k: zeros()?,
                    v: zeros()?,
                })
            }
        };
        slot.k.slice_set(k, 1, self.len)?;
        slot.v.slice_set(v, 1, self.len)?;
        let out = (slot.k.narrow(1, 0, needed)?, slot.v.narrow(1, 0, needed)?);
        if layer + 1 == self.layers.len() {
            self.len = needed;
        }
        Ok(out)
    }

    /// An independent copy (for another choice of the same prompt).
    pub fn fork(&self) -> Result<SeqCache> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for slot in &self.layers {
            layers.push(match slot {
                Some(c) => Some(LayerCache {
                    k: c.k.copy()?,
                    v: c.v.copy()?,
                }),
                None => None,
            });
        }
        Ok(SeqCache {
            layers,
            len: self.len,
            capacity: self.capacity,
        })
    }

    /// Bytes held by the cache's tensors.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|c| 2 * c.k.elem_count() * c.k.dtype().size_in_bytes())
            .sum()
    }
}

/// A larger buffer holding the first `len` positions of `old`.
fn grow(old: &LayerCache, capacity: usize, len: usize) -> Result<LayerCache> {
    let resize = |t: &Tensor| -> Result<Tensor> {
        let (kvh, _, d) = t.dims3()?;
        let new = Tensor::zeros((kvh, capacity, d), t.dtype(), t.device())?;
        if len > 0 {
            new.slice_set(&t.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
        }
        Ok(new)
    };
    Ok(LayerCache {
        k: resize(&old.k)?,
        v: resize(&old.v)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn rows(start: f32, t: usize) -> Tensor {
        let data: Vec<f32> = (0..2 * t * 3).map(|i| start + i as f32).collect();
        Tensor::from_vec(data, (2, t, 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn appends_grow_and_keep_earlier_positions() {
        let mut cache = SeqCache::new(2);
        let a = rows(0.0, 40);
        let b = rows(1000.0, 50); // crosses the first capacity (64)
        for layer in 0..2 {
            cache.append(layer, &a, &a).unwrap();
        }
        assert_eq!(cache.len(), 40);
        let mut last = None;
        for layer in 0..2 {
            last = Some(cache.append(layer, &b, &b).unwrap());
        }
        let (k, _) = last.unwrap();
        assert_eq!(cache.len(), 90);
        assert_eq!(k.dims(), &[2, 90, 3]);
        let expect = Tensor::cat(&[&a, &b], 1).unwrap();
        let diff = (k - expect).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(
            diff.to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn a_fork_does_not_see_the_other_branch() {
        let mut cache = SeqCache::new(1);
        cache.append(0, &rows(0.0, 2), &rows(0.0, 2)).unwrap();
        let mut fork = cache.fork().unwrap();
        let (k1, _) = cache.append(0, &rows(10.0, 1), &rows(10.0, 1)).unwrap();
        let (k2, _) = fork.append(0, &rows(20.0, 1), &rows(20.0, 1)).unwrap();
        let last = |k: &Tensor| -> f32 {
            k.narrow(1, 2, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0]
        };
        assert_eq!(last(&k1), 10.0);
        assert_eq!(last(&k2), 20.0);
    }
}

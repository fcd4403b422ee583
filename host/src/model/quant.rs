//! Quantised frozen base weights for QLoRA, stored the way bitsandbytes
//! stores them so memory really shrinks: NF4 (4 bits, two codes per byte)
//! with double-quantised block scales, and a blockwise int8 option.
//!
//! * **NF4** (QLoRA paper, `bitsandbytes.functional.quantize_4bit`): the
//!   weight is flattened and cut into blocks of [`NF4_BLOCK`] values; each
//!   block is divided by its absolute maximum and every value becomes the
//!   index of the nearest of the 16 NormalFloat levels ([`NF4_LEVELS`]). The
//!   first value of a pair goes in the high nibble, as in bitsandbytes.
//! * **Double quantisation** (`compress_statistics=True`): the fp32 block
//!   absmaxes are centred on their mean, then quantised in blocks of
//!   [`DQ_BLOCK`] to 8 bits with bitsandbytes' signed dynamic map
//!   ([`dynamic_map`]) and one fp32 scale per block. That brings the scale
//!   overhead from 32/64 to about 8.1/64 bits per weight (≈4.13 bits/weight).
//! * **Int8**: blocks of [`INT8_BLOCK`], symmetric absmax, codes in -127..=127
//!   (stored biased by 128 in a `u8`) with an fp32 scale per block.
//!
//! The forward pass is `x @ dequant(W)^T`, computed by
//! [`frozen_matmul`]: the weight is dequantised on the fly in the forward
//! pass and again in the backward pass (never kept), and the backward pass
//! returns only the input gradient — no weight-sized gradient is allocated.
//! Dequantisation is written with tensor ops, so it runs on whatever device
//! the packed codes live on.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, MetalStorage, Result, Shape,
    Storage, Tensor,
};

/// Values per NF4 block (bitsandbytes' QLoRA default).
pub const NF4_BLOCK: usize = 64;
/// Block absmaxes per second-level block in double quantisation.
pub const DQ_BLOCK: usize = 256;
/// Values per int8 block.
pub const INT8_BLOCK: usize = 64;

/// The 16 NormalFloat levels, exactly as in bitsandbytes (`get_4bit_type("nf4")`).
// The digits are bitsandbytes' own, kept verbatim so they can be compared.
#[allow(clippy::excessive_precision)]
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// A frozen weight `[out, in]` stored in 4 or 8 bits and dequantised on the fly.
#[derive(Clone)]
pub enum QuantizedWeight {
    /// NF4 codes with double-quantised block scales.
    Nf4(Arc<Nf4Weight>),
    /// Blockwise symmetric int8.
    Int8(Arc<Int8Weight>),
}

/// Packed NF4 data; all tensors live on the weight's device.
pub struct Nf4Weight {
    /// `[out, in]` of the original weight.
    pub shape: (usize, usize),
    /// Original dtype; [`QuantizedWeight::dequantize`] returns it.
    pub dtype: DType,
    /// `u8 [n_blocks * 32]`: two 4-bit codes per byte, first in the high nibble.
    pub packed: Tensor,
    /// `u8 [n_dq_blocks * 256]`: each block's absmax as an index into [`dynamic_map`].
    pub absmax_codes: Tensor,
    /// `f32 [n_dq_blocks]`: scale of each group of 256 centred absmaxes.
    pub absmax_scales: Tensor,
    /// Mean of the block absmaxes, subtracted before their quantisation.
    pub absmax_offset: f32,
    levels: Tensor,
    dyn_map: Tensor,
}

/// Packed int8 data; all tensors live on the weight's device.
pub struct Int8Weight {
    /// `[out, in]` of the original weight.
    pub shape: (usize, usize),
    /// Original dtype; [`QuantizedWeight::dequantize`] returns it.
    pub dtype: DType,
    /// `u8 [n_blocks * 64]`: code + 128.
    pub codes: Tensor,
    /// `f32 [n_blocks]`: absmax / 127 of each block.
    pub scales: Tensor,
}

impl QuantizedWeight {
    /// NF4 with double-quantised scales, from a dense `[out, in]` weight.
    pub fn nf4(w: &Tensor) -> Result<Self> {
        let (out_f, in_f) = w.dims2()?;
        let device = w.device();
        let values = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (codes, absmax) = quantize_nf4(&values);
        let dq = double_quantize(&absmax);
        let n_bytes = codes.len();
        let n_abs = dq.codes.len();
        let n_dq = dq.scales.len();
        Ok(QuantizedWeight::Nf4(Arc::new(Nf4Weight {
            shape: (out_f, in_f),
            dtype: w.dtype(),
            packed: Tensor::from_vec(codes, n_bytes, device)?,
            absmax_codes: Tensor::from_vec(dq.codes, n_abs, device)?,
            absmax_scales: Tensor::from_vec(dq.scales, n_dq, device)?,
            absmax_offset: dq.offset,
            levels: Tensor::from_slice(&NF4_LEVELS, 16, device)?,
            dyn_map: Tensor::from_vec(dynamic_map().to_vec(), 256, device)?,
        })))
    }

    /// Blockwise int8 from a dense `[out, in]` weight.
    pub fn int8(w: &Tensor) -> Result<Self> {
        let (out_f, in_f) = w.dims2()?;
        let device = w.device();
        let values = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (codes, scales) = quantize_int8(&values);
        let (n_codes, n_scales) = (codes.len(), scales.len());
        Ok(QuantizedWeight::Int8(Arc::new(Int8Weight {
            shape: (out_f, in_f),
            dtype: w.dtype(),
            codes: Tensor::from_vec(codes, n_codes, device)?,
            scales: Tensor::from_vec(scales, n_scales, device)?,
        })))
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            QuantizedWeight::Nf4(q) => q.shape,
            QuantizedWeight::Int8(q) => q.shape,
        }
    }

    /// Dtype of the original weight.
    pub fn dtype(&self) -> DType {
        match self {
            QuantizedWeight::Nf4(q) => q.dtype,
            QuantizedWeight::Int8(q) => q.dtype,
        }
    }

    /// Device holding the packed codes.
    pub fn device(&self) -> &Device {
        match self {
            QuantizedWeight::Nf4(q) => q.packed.device(),
            QuantizedWeight::Int8(q) => q.codes.device(),
        }
    }

    /// The dense `[out, in]` weight in its original dtype (for merges and export).
    pub fn dequantize(&self) -> Result<Tensor> {
        self.dequantize_f32()?.to_dtype(self.dtype())
    }

    /// The dense `[out, in]` weight in f32.
    pub fn dequantize_f32(&self) -> Result<Tensor> {
        match self {
            QuantizedWeight::Nf4(q) => q.dequantize_f32(),
            QuantizedWeight::Int8(q) => q.dequantize_f32(),
        }
    }

    /// `x @ W^T` for `x` `[.., in]`; only `x` gets a gradient.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        frozen_matmul(x, Arc::new(self.clone()))
    }

    /// Bytes held by the quantised representation (codes, scales, offsets;
    /// not the two shared lookup tables).
    pub fn storage_bytes(&self) -> usize {
        match self {
            QuantizedWeight::Nf4(q) => {
                q.packed.elem_count()
                    + q.absmax_codes.elem_count()
                    + 4 * q.absmax_scales.elem_count()
                    + 4
            }
            QuantizedWeight::Int8(q) => q.codes.elem_count() + 4 * q.scales.elem_count(),
        }
    }
}

impl Nf4Weight {
    fn dequantize_f32(&self) -> Result<Tensor> {
        if self.packed.device().is_cpu() {
            self.dequantize_cpu()
        } else {
            self.dequantize_tensor_ops()
        }
    }

    /// CPU: one pass over the packed bytes, so the only transient is the
    /// f32 weight itself (the tensor-op path makes several weight-sized
    /// temporaries).
    fn dequantize_cpu(&self) -> Result<Tensor> {
        let (out_f, in_f) = self.shape;
        let n = out_f * in_f;
        let map = dynamic_map();
        let absmax: Vec<f32> = with_cpu_slice(&self.absmax_codes, |codes: &[u8]| {
            with_cpu_slice(&self.absmax_scales, |scales: &[f32]| {
                codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| map[c as usize] * scales[i / DQ_BLOCK] + self.absmax_offset)
                    .collect()
            })
        })??;
        let values = with_cpu_slice(&self.packed, |packed: &[u8]| {
            let mut out = Vec::with_capacity(packed.len() * 2);
            for (block, bytes) in packed.chunks(NF4_BLOCK / 2).enumerate() {
                let m = absmax[block];
                for &b in bytes {
                    out.push(NF4_LEVELS[(b >> 4) as usize] * m);
                    out.push(NF4_LEVELS[(b & 15) as usize] * m);
                }
            }
            out.truncate(n);
            out
        })?;
        Tensor::from_vec(values, (out_f, in_f), self.packed.device())
    }

    /// Any device: the same decoding written with tensor ops.
    fn dequantize_tensor_ops(&self) -> Result<Tensor> {
        let (out_f, in_f) = self.shape;
        let n = out_f * in_f;
        // Block absmax = dyn_map[code] * scale of its group of 256 + mean.
        let n_dq = self.absmax_scales.elem_count();
        let absmax = self
            .dyn_map
            .index_select(&self.absmax_codes.to_dtype(DType::U32)?, 0)?
            .reshape((n_dq, DQ_BLOCK))?
            .broadcast_mul(&self.absmax_scales.reshape((n_dq, 1))?)?
            .flatten_all()?
            + self.absmax_offset as f64;
        let absmax = absmax?;
        // Unpack nibbles with float arithmetic (candle has no bit ops):
        // hi = floor(b / 16), lo = b - 16 hi.
        let bytes = self.packed.to_dtype(DType::F32)?;
        let hi = (&bytes / 16.0)?.floor()?;
        let lo = (&bytes - (&hi * 16.0)?)?;
        let idx = Tensor::stack(&[hi, lo], 1)?
            .flatten_all()?
            .to_dtype(DType::U32)?;
        let n_blocks = idx.elem_count() / NF4_BLOCK;
        let absmax = absmax.narrow(0, 0, n_blocks)?.reshape((n_blocks, 1))?;
        self.levels
            .index_select(&idx, 0)?
            .reshape((n_blocks, NF4_BLOCK))?
            .broadcast_mul(&absmax)?
            .flatten_all()?
            .narrow(0, 0, n)?
            .reshape((out_f, in_f))
    }
}

impl Int8Weight {
    fn dequantize_f32(&self) -> Result<Tensor> {
        if self.codes.device().is_cpu() {
            self.dequantize_cpu()
        } else {
            self.dequantize_tensor_ops()
        }
    }

    /// CPU: one pass over the codes (see [`Nf4Weight::dequantize_cpu`]).
    fn dequantize_cpu(&self) -> Result<Tensor> {
        let (out_f, in_f) = self.shape;
        let values = with_cpu_slice(&self.codes, |codes: &[u8]| {
            with_cpu_slice(&self.scales, |scales: &[f32]| {
                codes
                    .iter()
                    .take(out_f * in_f)
                    .enumerate()
                    .map(|(i, &c)| (c as f32 - 128.0) * scales[i / INT8_BLOCK])
                    .collect::<Vec<f32>>()
            })
        })??;
        Tensor::from_vec(values, (out_f, in_f), self.codes.device())
    }

    /// Any device: the same decoding written with tensor ops.
    fn dequantize_tensor_ops(&self) -> Result<Tensor> {
        let (out_f, in_f) = self.shape;
        let n_blocks = self.scales.elem_count();
        (self.codes.to_dtype(DType::F32)? - 128.0)?
            .reshape((n_blocks, INT8_BLOCK))?
            .broadcast_mul(&self.scales.reshape((n_blocks, 1))?)?
            .flatten_all()?
            .narrow(0, 0, out_f * in_f)?
            .reshape((out_f, in_f))
    }
}

/// Runs `f` on the contiguous data of a CPU tensor, without copying.
fn with_cpu_slice<T: candle_core::WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("quantized weight: expected a cpu tensor")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("quantized weight: codes are not contiguous")
    };
    Ok(f(&cpu.as_slice::<T>()?[start..end]))
}

/// Index of the NF4 level nearest to `x` (already divided by the block
/// absmax), decided like bitsandbytes' `dQuantizeNF4`: a value exactly on a
/// midpoint goes to the lower level.
pub fn nf4_code(x: f32) -> u8 {
    let mut code = 0u8;
    for i in 0..15 {
        let mid = (NF4_LEVELS[i] + NF4_LEVELS[i + 1]) / 2.0;
        if x > mid {
            code = i as u8 + 1;
        }
    }
    code
}

/// NF4 codes (packed, padded to whole blocks) and the fp32 absmax per block.
fn quantize_nf4(values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let n_blocks = values.len().div_ceil(NF4_BLOCK);
    let mut packed = vec![0u8; n_blocks * NF4_BLOCK / 2];
    let mut absmax = vec![0f32; n_blocks];
    for b in 0..n_blocks {
        let block = &values[b * NF4_BLOCK..((b + 1) * NF4_BLOCK).min(values.len())];
        let m = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        absmax[b] = m;
        // An all-zero block (or padding) maps to the 0.0 level, code 7.
        let inv = if m > 0.0 { 1.0 / m } else { 0.0 };
        for j in 0..NF4_BLOCK {
            let code = block.get(j).map_or(7, |v| nf4_code(v * inv));
            let byte = &mut packed[(b * NF4_BLOCK + j) / 2];
            if j % 2 == 0 {
                *byte |= code << 4;
            } else {
                *byte |= code;
            }
        }
    }
    (packed, absmax)
}

/// Block absmaxes quantised to 8 bits.
struct DoubleQuant {
    /// One code per absmax, padded to whole groups of [`DQ_BLOCK`].
    codes: Vec<u8>,
    /// One fp32 scale per group.
    scales: Vec<f32>,
    /// Mean of the absmaxes.
    offset: f32,
}

/// bitsandbytes' nested quantisation of the absmaxes: subtract the mean,
/// then blockwise 8-bit with the dynamic map.
fn double_quantize(absmax: &[f32]) -> DoubleQuant {
    let offset =
        (absmax.iter().map(|&v| v as f64).sum::<f64>() / absmax.len().max(1) as f64) as f32;
    let map = dynamic_map();
    let n_groups = absmax.len().div_ceil(DQ_BLOCK);
    let zero = nearest_code(map, 0.0);
    let mut codes = vec![zero; n_groups * DQ_BLOCK];
    let mut scales = vec![0f32; n_groups];
    for g in 0..n_groups {
        let group = &absmax[g * DQ_BLOCK..((g + 1) * DQ_BLOCK).min(absmax.len())];
        let s = group.iter().fold(0f32, |m, v| m.max((v - offset).abs()));
        scales[g] = s;
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        for (j, v) in group.iter().enumerate() {
            codes[g * DQ_BLOCK + j] = nearest_code(map, (v - offset) * inv);
        }
    }
    DoubleQuant {
        codes,
        scales,
        offset,
    }
}

/// Index of the entry of the sorted `map` nearest to `x` (lower one on a tie).
fn nearest_code(map: &[f32; 256], x: f32) -> u8 {
    let upper = map.partition_point(|&m| m < x);
    if upper == 0 {
        return 0;
    }
    if upper == 256 {
        return 255;
    }
    let (lo, hi) = (map[upper - 1], map[upper]);
    if x - lo <= hi - x {
        (upper - 1) as u8
    } else {
        upper as u8
    }
}

/// bitsandbytes' signed 8-bit dynamic (tree) quantisation map,
/// `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`:
/// for each decade `10^(i-6)`, `2^i` fraction levels (means of a linspace
/// over 0.1..1) with both signs, plus 0 and 1, sorted.
pub fn dynamic_map() -> &'static [f32; 256] {
    static MAP: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    MAP.get_or_init(|| {
        let mut data: Vec<f32> = Vec::with_capacity(256);
        for i in 0..7i32 {
            let items = (1usize << i) + 1;
            // torch.linspace(0.1, 1, items) in f32, then pairwise means.
            let bounds: Vec<f32> = (0..items)
                .map(|k| linspace_f32(0.1, 1.0, items, k))
                .collect();
            let decade = 10f64.powi(i - 6);
            for k in 0..items - 1 {
                let mean = (bounds[k] + bounds[k + 1]) / 2.0;
                let v = (decade * mean as f64) as f32;
                data.push(v);
                data.push(-v);
            }
        }
        data.push(0.0);
        data.push(1.0);
        data.sort_by(f32::total_cmp);
        data.try_into().expect("the dynamic map has 256 entries")
    })
}

/// Element `k` of `torch.linspace(start, end, steps)` in f32 (torch computes
/// the first half from the start and the second half from the end).
fn linspace_f32(start: f32, end: f32, steps: usize, k: usize) -> f32 {
    let step = (end - start) / (steps - 1) as f32;
    if k < steps / 2 {
        start + step * k as f32
    } else {
        end - step * (steps - 1 - k) as f32
    }
}

/// Int8 codes (biased by 128, padded to whole blocks) and per-block scales.
fn quantize_int8(values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let n_blocks = values.len().div_ceil(INT8_BLOCK);
    let mut codes = vec![128u8; n_blocks * INT8_BLOCK];
    let mut scales = vec![0f32; n_blocks];
    for b in 0..n_blocks {
        let block = &values[b * INT8_BLOCK..((b + 1) * INT8_BLOCK).min(values.len())];
        let m = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = m / 127.0;
        scales[b] = scale;
        let inv = if m > 0.0 { 127.0 / m } else { 0.0 };
        for (j, v) in block.iter().enumerate() {
            let q = (v * inv).round().clamp(-127.0, 127.0) as i32;
            codes[b * INT8_BLOCK + j] = (q + 128) as u8;
        }
    }
    (codes, scales)
}

/// Something that can produce a frozen dense `[out, in]` weight on demand.
pub trait FrozenWeight: Send + Sync {
    /// The weight in `dtype`, on the device of the stored data.
    fn weight(&self, dtype: DType) -> Result<Tensor>;
}

impl FrozenWeight for QuantizedWeight {
    fn weight(&self, dtype: DType) -> Result<Tensor> {
        self.dequantize_f32()?.to_dtype(dtype)
    }
}

impl FrozenWeight for Tensor {
    fn weight(&self, dtype: DType) -> Result<Tensor> {
        self.detach().to_dtype(dtype)
    }
}

/// `x @ W^T` for `x` `[.., in]` and a frozen `W` `[out, in]` produced on
/// demand, where the backward pass returns only the input gradient `grad @ W`.
///
/// candle's matmul backward always computes both operand gradients, which
/// for a frozen base would allocate a weight-sized buffer per layer per step.
/// This is a custom op on `x` alone (same scheme as
/// [`crate::model::linear::frozen_matmul`] for dense weights): `W` is
/// materialised (for a quantised weight: dequantised) in the forward pass
/// and again in the backward pass, and dropped each time, so the graph keeps
/// only the packed codes.
pub fn frozen_matmul(x: &Tensor, weight: Arc<dyn FrozenWeight>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some((&in_f, lead)) = dims.split_last() else {
        candle_core::bail!("quantized linear: input is a scalar")
    };
    let rows: usize = lead.iter().product();
    let x2 = x.reshape((rows, in_f))?.contiguous()?;
    let y = x2.apply_op1(FrozenMatmul { weight })?;
    let mut out = dims;
    *out.last_mut().expect("checked above") = y.dim(1)?;
    y.reshape(out)
}

/// The custom op of [`frozen_matmul`]: `x [n, in] -> x W^T [n, out]`.
struct FrozenMatmul {
    weight: Arc<dyn FrozenWeight>,
}

impl FrozenMatmul {
    fn fwd<S: BackendStorage>(&self, x: &S, xl: &Layout, w: &S, wl: &Layout) -> Result<(S, Shape)> {
        let (n, in_f) = xl.shape().dims2()?;
        let (out_f, w_in) = wl.shape().dims2()?;
        if w_in != in_f {
            candle_core::bail!(
                "quantized linear: input has {in_f} features, weight [{out_f}, {w_in}]"
            )
        }
        // W^T is the weight seen through a transposed layout: no copy.
        let y = x.matmul(w, (1, n, out_f, in_f), xl, &wl.transpose(0, 1)?)?;
        Ok((y, Shape::from((n, out_f))))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "quantized-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = self.weight.weight(s.dtype())?.contiguous()?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cpu(ws) => self.fwd(s, l, ws, wl),
            _ => candle_core::bail!("quantized linear: weight and input on different devices"),
        }
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let w = self.weight.weight(s.dtype())?.contiguous()?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Cuda(ws) => self.fwd(s, l, ws, wl),
            _ => candle_core::bail!("quantized linear: weight and input on different devices"),
        }
    }

    fn metal_fwd(&self, s: &MetalStorage, l: &Layout) -> Result<(MetalStorage, Shape)> {
        let w = self.weight.weight(s.dtype())?.contiguous()?;
        let (ws, wl) = w.storage_and_layout();
        match &*ws {
            Storage::Metal(ws) => self.fwd(s, l, ws, wl),
            _ => candle_core::bail!("quantized linear: weight and input on different devices"),
        }
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d(x W^T)/dx = grad @ W; W is a constant, so no weight gradient.
        let w = self.weight.weight(grad.dtype())?;
        Ok(Some(grad.matmul(&w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Standard normal values from a seeded rng (Box-Muller).
    fn normal(n: usize, std: f32, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let u1: f32 = rng.random_range(1e-7..1.0);
                let u2: f32 = rng.random();
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect()
    }

    fn weight(out_f: usize, in_f: usize, std: f32, seed: u64) -> Tensor {
        Tensor::from_vec(normal(out_f * in_f, std, seed), (out_f, in_f), &Device::Cpu).unwrap()
    }

    fn mean_abs_err(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn nf4_codes_follow_bitsandbytes_thresholds() {
        assert_eq!(nf4_code(-1.0), 0);
        assert_eq!(nf4_code(-0.7), 1);
        assert_eq!(nf4_code(0.0), 7);
        assert_eq!(nf4_code(0.08), 8);
        assert_eq!(nf4_code(1.0), 15);
        assert_eq!(nf4_code(0.9), 15);
        // bitsandbytes' first threshold above zero is 0.03979014977812767;
        // a value on it goes down.
        assert_eq!(nf4_code(0.039_790_15), 7);
        assert_eq!(nf4_code(0.0398), 8);
        // Strictly increasing levels, symmetric ends.
        assert!(NF4_LEVELS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nf4_packs_two_codes_per_byte_high_nibble_first() {
        // One block: absmax 2, so the values normalise to -1, 0, 0.5, 1.
        let mut v = vec![0f32; 64];
        v[..4].copy_from_slice(&[-2.0, 0.0, 1.0, 2.0]);
        let (packed, absmax) = quantize_nf4(&v);
        assert_eq!(absmax, vec![2.0]);
        assert_eq!(packed.len(), 32);
        // (0, 7) and (12, 15): 0.5 is nearer 0.4407 than 0.5626.
        assert_eq!(packed[0], 0x07);
        assert_eq!(packed[1], 0xCF);
        assert!(packed[2..].iter().all(|&b| b == 0x77));
    }

    #[test]
    fn dynamic_map_matches_bitsandbytes() {
        let m = dynamic_map();
        assert!(m.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(m[255], 1.0);
        assert!(m.contains(&0.0));
        // Largest fraction of the top decade: mean of the last two of
        // linspace(0.1, 1, 65) = 0.99296875; smallest magnitude 0.55e-6.
        assert!((m[254] - 0.992_968_75).abs() < 1e-6, "{}", m[254]);
        assert!((m[0] + 0.992_968_75).abs() < 1e-6, "{}", m[0]);
        let smallest = m.iter().filter(|v| **v > 0.0).fold(1f32, |a, &b| a.min(b));
        assert!((smallest - 5.5e-7).abs() < 1e-12, "{smallest}");
    }

    #[test]
    fn double_quantised_scales_are_close() {
        // 40 groups of 64 weights -> 40 absmaxes in one dq block, plus a
        // second run with more than one dq block.
        for n in [64 * 40, 64 * 700] {
            let v = normal(n, 0.02, 3);
            let (_, absmax) = quantize_nf4(&v);
            let dq = double_quantize(&absmax);
            assert_eq!(dq.scales.len(), absmax.len().div_ceil(DQ_BLOCK));
            let map = dynamic_map();
            let mut worst = 0f32;
            for (i, a) in absmax.iter().enumerate() {
                let back = map[dq.codes[i] as usize] * dq.scales[i / DQ_BLOCK] + dq.offset;
                worst = worst.max((back - a).abs() / a);
            }
            // The map's top decade has steps of 0.014, so <1% of the spread.
            assert!(worst < 0.01, "worst relative absmax error {worst}");
        }
    }

    #[test]
    fn nf4_round_trip_error_is_small_relative_to_std() {
        // 70 inputs: the last block is partial, exercising padding.
        let w = weight(96, 70, 0.02, 1);
        let q = QuantizedWeight::nf4(&w).unwrap();
        let back = q.dequantize().unwrap();
        assert_eq!(back.dims(), &[96, 70]);
        let rel = mean_abs_err(&w, &back) / 0.02;
        // NF4 on normal data: about 0.07-0.08 of the std.
        assert!(rel < 0.1, "relative mean abs error {rel}");
        assert!(rel > 0.01, "suspiciously exact: {rel}");
    }

    #[test]
    fn int8_round_trip_error_is_small() {
        let w = weight(96, 70, 0.02, 2);
        let q = QuantizedWeight::int8(&w).unwrap();
        let back = q.dequantize().unwrap();
        let rel = mean_abs_err(&w, &back) / 0.02;
        assert!(rel < 0.01, "relative mean abs error {rel}");
        // Values that are exact multiples of the block scale survive exactly.
        let exact = Tensor::from_vec(
            (0..64)
                .map(|i| (i as f32 - 32.0) / 32.0 * 2.0)
                .collect::<Vec<_>>(),
            (1, 64),
            &Device::Cpu,
        )
        .unwrap();
        let back = QuantizedWeight::int8(&exact).unwrap().dequantize().unwrap();
        assert!(mean_abs_err(&exact, &back) < 0.01);
    }

    #[test]
    fn cpu_and_tensor_op_dequantisation_agree() {
        // 700 blocks of 64 (> 256: two double-quant groups) plus a partial one.
        let w = weight(401, 112, 0.02, 10);
        let QuantizedWeight::Nf4(q) = QuantizedWeight::nf4(&w).unwrap() else {
            unreachable!()
        };
        let a = q.dequantize_cpu().unwrap().to_vec2::<f32>().unwrap();
        let b = q.dequantize_tensor_ops().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
        let QuantizedWeight::Int8(q) = QuantizedWeight::int8(&w).unwrap() else {
            unreachable!()
        };
        let a = q.dequantize_cpu().unwrap().to_vec2::<f32>().unwrap();
        let b = q.dequantize_tensor_ops().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn storage_is_about_four_bits_per_weight() {
        let w = weight(256, 512, 0.02, 4);
        let n = (256 * 512) as f64;
        let nf4 = QuantizedWeight::nf4(&w).unwrap();
        let bits = nf4.storage_bytes() as f64 * 8.0 / n;
        assert!((4.1..4.2).contains(&bits), "nf4 bits per weight {bits}");
        let int8 = QuantizedWeight::int8(&w).unwrap();
        let bits = int8.storage_bytes() as f64 * 8.0 / n;
        assert!((8.4..8.6).contains(&bits), "int8 bits per weight {bits}");
    }

    #[test]
    fn forward_equals_matmul_with_dequantised_weight() {
        let w = weight(12, 70, 0.5, 5);
        let x = Tensor::from_vec(normal(2 * 3 * 70, 1.0, 6), (2, 3, 70), &Device::Cpu).unwrap();
        for q in [
            QuantizedWeight::nf4(&w).unwrap(),
            QuantizedWeight::int8(&w).unwrap(),
        ] {
            let y = q.forward(&x).unwrap();
            assert_eq!(y.dims(), &[2, 3, 12]);
            let want = x
                .broadcast_matmul(&q.dequantize().unwrap().t().unwrap())
                .unwrap();
            assert!(mean_abs_err(&y, &want) < 1e-5);
        }
    }

    #[test]
    fn backward_gives_input_gradient_only_matching_finite_differences() {
        let w = weight(12, 70, 0.5, 7).to_dtype(DType::F64).unwrap();
        let q = QuantizedWeight::nf4(&w).unwrap();
        let x0: Vec<f64> = normal(2 * 3 * 70, 1.0, 8)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let r = Tensor::from_vec(
            normal(2 * 3 * 12, 1.0, 9)
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>(),
            (2, 3, 12),
            &Device::Cpu,
        )
        .unwrap();
        let loss_at = |xs: &[f64]| -> f64 {
            let x = Tensor::from_slice(xs, (2, 3, 70), &Device::Cpu).unwrap();
            (q.forward(&x).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let x =
            Var::from_tensor(&Tensor::from_slice(&x0, (2, 3, 70), &Device::Cpu).unwrap()).unwrap();
        let loss = (q.forward(x.as_tensor()).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let gx = grads.get(x.as_tensor()).expect("x has a gradient");
        let gx = gx.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let eps = 1e-4;
        for i in [0, 1, 69, 70, 200, 419] {
            let (mut plus, mut minus) = (x0.clone(), x0.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let fd = (loss_at(&plus) - loss_at(&minus)) / (2.0 * eps);
            assert!((fd - gx[i]).abs() < 1e-6, "x[{i}]: fd {fd} vs {}", gx[i]);
        }
        // Nothing weight-shaped was produced by the backward pass.
        for id in grads.get_ids() {
            let g = grads.get_id(*id).unwrap();
            assert_ne!(g.dims(), &[12, 70], "a weight-sized gradient exists");
            assert_ne!(g.dims(), &[70, 12], "a weight-sized gradient exists");
        }
    }
}

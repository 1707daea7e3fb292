//! `separable` in a `#![no_std]` crate with no heap, as firmware for a microcontroller would use
//! it: the weights and the input image are `static` arrays in the program's read-only data, the
//! layers are built from them by `from_pytorch` (their arrays inline, no allocator involved),
//! and `forward_slices` writes into a buffer of the caller's.
//!
//! Two layers cover both code layouts the macro emits: [`Tiny`] (9 output positions, every
//! window unrolled) and [`Strips`] (16 x 16 x 32 -> 64, strips of rows through the row and
//! matrix microkernels). Both have biases on both stages and ReLU6 after each.
//!
//! The crate depends on `separable` without default features; `.ci/run` builds it on its own,
//! checks that `separable-runtime` was built without `alloc`, and runs its tests
//! (`tests/layers.rs`), which compare the results with a plain implementation of their own.
#![no_std]
#![forbid(unsafe_code)]

use separable::{Error, Tensor, separable_conv};

separable_conv! {
    /// Tiny, in channel planes: 3 x 3 output positions, a depth multiplier, stride 2 with SAME
    /// padding.
    pub struct Tiny {
        input: 5 x 5 x 3, output: 4, kernel: 3, stride: 2, padding: same, multiplier: 2,
        bias: both, activation: relu6,
    }
}

separable_conv! {
    /// Strips: 256 output positions, interior runs and border loops, a 64-output pointwise stage.
    pub struct Strips {
        input: 16 x 16 x 32, output: 64, kernel: 3, padding: same, bias: both, activation: relu6,
    }
}

/// `N` values uniform in `[-scale, scale)` from a linear congruential generator seeded with
/// `seed`: deterministic test data, computed at compile time into the statics below.
#[must_use]
pub const fn values<const N: usize>(seed: u32, scale: f32) -> [f32; N] {
    let mut out = [0.0; N];
    let mut state = seed;
    let mut i = 0;
    while i < N {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        // The top 24 bits, exact in `f32`, scaled to [-1, 1).
        out[i] = ((state >> 8) as f32 / 8_388_608.0 - 1.0) * scale;
        i += 1;
    }
    out
}

/// [`Tiny`]'s depthwise weight, PyTorch layout `[6, 1, 3, 3]`.
pub static TINY_DW_WEIGHT: [f32; 54] = values(1, 1.0);
/// [`Tiny`]'s depthwise bias, `[6]`.
pub static TINY_DW_BIAS: [f32; 6] = values(2, 1.0);
/// [`Tiny`]'s pointwise weight, PyTorch layout `[4, 6, 1, 1]`.
pub static TINY_PW_WEIGHT: [f32; 24] = values(3, 2.0);
/// [`Tiny`]'s pointwise bias, `[4]`.
pub static TINY_PW_BIAS: [f32; 4] = values(4, 1.0);
/// [`Tiny`]'s input image, HWC `5 x 5 x 3`.
pub static TINY_INPUT: [f32; 75] = values(5, 4.0);

/// [`Strips`]'s depthwise weight, PyTorch layout `[32, 1, 3, 3]`.
pub static STRIPS_DW_WEIGHT: [f32; 288] = values(11, 1.0);
/// [`Strips`]'s depthwise bias, `[32]`.
pub static STRIPS_DW_BIAS: [f32; 32] = values(12, 1.0);
/// [`Strips`]'s pointwise weight, PyTorch layout `[64, 32, 1, 1]`.
pub static STRIPS_PW_WEIGHT: [f32; 2048] = values(13, 0.5);
/// [`Strips`]'s pointwise bias, `[64]`.
pub static STRIPS_PW_BIAS: [f32; 64] = values(14, 1.0);
/// [`Strips`]'s input image, HWC `16 x 16 x 32`.
pub static STRIPS_INPUT: [f32; 8192] = values(15, 4.0);

/// [`Tiny`] with the static weights.
///
/// # Errors
/// None with these statics; `from_pytorch` checks their lengths.
pub fn tiny() -> Result<Tiny, Error> {
    Tiny::from_pytorch(
        &TINY_DW_WEIGHT,
        Some(&TINY_DW_BIAS),
        &TINY_PW_WEIGHT,
        Some(&TINY_PW_BIAS),
    )
}

/// [`Strips`] with the static weights.
///
/// # Errors
/// None with these statics; `from_pytorch` checks their lengths.
pub fn strips() -> Result<Strips, Error> {
    Strips::from_pytorch(
        &STRIPS_DW_WEIGHT,
        Some(&STRIPS_DW_BIAS),
        &STRIPS_PW_WEIGHT,
        Some(&STRIPS_PW_BIAS),
    )
}

/// Runs [`Tiny`] on [`TINY_INPUT`] into `output` (HWC `3 x 3 x 4`, 36 elements).
///
/// # Errors
/// [`Error::Length`] naming `output` if it does not have 36 elements.
pub fn run_tiny(output: &mut [f32]) -> Result<(), Error> {
    tiny()?.forward_slices(&TINY_INPUT, output)
}

/// Runs [`Strips`] on [`STRIPS_INPUT`] into `output` (HWC `16 x 16 x 64`, 16384 elements).
///
/// # Errors
/// [`Error::Length`] naming `output` if it does not have 16384 elements.
pub fn run_strips(output: &mut [f32]) -> Result<(), Error> {
    strips()?.forward_slices(&STRIPS_INPUT, output)
}

/// Runs [`Tiny`] on [`TINY_INPUT`] through tensors, which without `alloc` hold their elements
/// inline: the input is copied into one on the stack and the output returned by value.
///
/// # Errors
/// None with these statics.
pub fn tiny_tensor() -> Result<Tensor<3, 3, 4>, Error> {
    let input = Tensor::<5, 5, 3>::from_hwc(&TINY_INPUT)?;
    Ok(tiny()?.forward(&input))
}

separable::separable_net! {
    /// Two small blocks as a network: networks compile without `alloc` too (their
    /// `from_safetensors` needs it and is left out).
    pub struct Pair {
        input: 6 x 6 x 2,
        defaults: { padding: same, bias: both, activation: relu },
        blocks: {
            first: PairFirst { output: 4 },
            second: PairSecond { output: 3, stride: 2 },
        }
    }
}

/// The network with zero weights on a filled input: every output is zero (the biases are zero).
#[must_use]
pub fn pair_of_zeros() -> Tensor<3, 3, 3> {
    Pair::zeroed().forward(&Tensor::filled(1.0))
}

separable_conv! {
    /// A layer whose weights are baked in at compile time: a `static`, no heap, no file access.
    pub struct Baked {
        input: 4 x 4 x 2, output: 3, multiplier: 2, kernel: 3 x 2, padding: same, bias: both,
        weights: "../data/embed_dtypes.safetensors", prefix: "bf16.",
    }
}

/// Runs [`Baked::embedded`] on `input` into `output` (HWC slices of 32 and 48 elements).
///
/// # Errors
/// `Error::Length` if a slice has the wrong length.
pub fn run_baked(input: &[f32], output: &mut [f32]) -> Result<(), Error> {
    Baked::embedded().forward_slices(input, output)
}

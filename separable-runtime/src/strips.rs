//! The loops of generated layers too large to unroll: output rows in strips, channels in
//! blocks, each block's depthwise output kept in a small scratch buffer that the pointwise
//! microkernel reads straight away.
//!
//! A layer's sizes arrive as a [`StripPlan`] constant that `separable_conv!` writes from its
//! shape arithmetic; the loops themselves are compiled here, once per element type, so that a
//! generated layer costs its user's build only a few calls. Their work is in the kernels they
//! call ([`crate::dw`], [`crate::gemm`]), which are compiled for literal sizes where those pay
//! and apply the activations while the outputs are in registers or L1.

use separable_shape::Activation;

use crate::dw::{self, DepthwiseKernels, Geometry};
use crate::gemm::{self, Block, Isa, Microkernels};

/// How a layer's output is cut into strips of rows and blocks of channels, and where its
/// windows lie wholly inside the input. Generated code writes one as a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripPlan {
    /// The depthwise stage; its `block` is the channel block of every strip.
    pub geometry: Geometry,
    /// `[OH, OW, N]` of the output.
    pub output: [usize; 3],
    /// Output rows per strip.
    pub rows: usize,
    /// `[first, end)` of the output columns whose windows have every column tap inside the
    /// input.
    pub interior_cols: [usize; 2],
    /// The activations after the depthwise and after the pointwise stage.
    pub activations: [Activation; 2],
}

/// The weights of a layer as [`StripPlan`]'s loops read them.
#[derive(Clone, Copy, Debug)]
pub struct StripWeights<'a, T> {
    /// Depthwise weights `[kh][kw][c·M + m]`.
    pub depthwise: &'a [T],
    /// Depthwise bias, `C·M` values, if any.
    pub depthwise_bias: Option<&'a [T]>,
    /// Pointwise weights packed in panels (see [`crate::gemm::pack`]).
    pub pointwise: &'a [T],
    /// Pointwise bias, `N` values, if any.
    pub pointwise_bias: Option<&'a [T]>,
}

impl StripPlan {
    /// `C·M`, the depthwise channels.
    fn depthwise_channels(&self) -> usize {
        self.geometry.input[2] * self.geometry.multiplier
    }

    /// Elements of the scratch buffer the loops need: a strip of depthwise outputs, `rows x OW`
    /// pixels of one channel block.
    #[must_use]
    pub const fn scratch_len(&self) -> usize {
        self.rows * self.output[1] * self.geometry.block
    }

    /// Asserts what every loop relies on: whole channel blocks, non-empty strips and interior
    /// columns inside the output.
    fn check(&self) {
        let ow = self.output[1];
        let kc = self.geometry.block;
        assert!(
            kc > 0 && self.depthwise_channels().is_multiple_of(kc),
            "the channel block does not divide the depthwise channels"
        );
        assert!(self.rows > 0, "empty strips");
        let [c0, c1] = self.interior_cols;
        assert!(c0 <= c1 && c1 <= ow, "interior columns outside the output");
    }

    /// [`Self::check`], and that `scratch` holds [`Self::scratch_len`] elements.
    fn check_with_scratch(&self, scratch: usize) {
        self.check();
        assert!(scratch >= self.scratch_len(), "scratch is too short");
    }
}

/// Element types whose strip loops are compiled in this crate: the stages of a strip layer,
/// called by generated code as `<f32 as StripLoops>::forward_strip(..)` and so on.
///
/// Every method panics if `isa` is not supported by this CPU, or a buffer or the plan does not
/// match the layer (generated code never does this).
pub trait StripLoops: DepthwiseKernels + Microkernels {
    /// Both stages for strip `strip`, the output rows from `strip * rows` that `out` holds: per
    /// channel block, the strip's depthwise output goes to `scratch`, and the pointwise
    /// microkernel adds its contribution to `out`. Strips are independent, so threads can share
    /// them out; [`forward`] runs them all.
    #[allow(clippy::too_many_arguments)] // the plan, the layer, its buffers and the strip
    fn forward_strip(
        isa: Isa,
        plan: &StripPlan,
        weights: &StripWeights<'_, Self>,
        x: &[Self],
        strip: usize,
        out: &mut [Self],
        scratch: &mut [Self],
    );
    /// The depthwise stage alone (with its bias and activation) into `out`
    /// (`OH x OW x C·M`), over the same strips of rows as [`forward`] but with every channel in
    /// one block: `out` holds the whole depthwise output, so nothing goes through a scratch
    /// buffer.
    fn depthwise(
        isa: Isa,
        plan: &StripPlan,
        weights: &StripWeights<'_, Self>,
        x: &[Self],
        out: &mut [Self],
    );
    /// The pointwise stage alone (with its bias and activation) from a depthwise output `y`
    /// (`OH x OW x C·M`) into `out`, a strip of rows at a time.
    fn pointwise(
        isa: Isa,
        plan: &StripPlan,
        weights: &StripWeights<'_, Self>,
        y: &[Self],
        out: &mut [Self],
    );
}

/// `scratch` from its first element on a cache line, at most
/// [`separable_shape::SCRATCH_PAD`] elements in (from the start if the address cannot be
/// aligned): a stack array is aligned only to its element, and a misaligned strip splits every
/// vector load and store of the depthwise outputs across two lines (on mb5 the fused depthwise
/// stage took 80 µs instead of 55).
fn cache_aligned<T>(scratch: &mut [T]) -> &mut [T] {
    let offset = scratch.as_ptr().align_offset(64);
    let offset = if offset <= separable_shape::SCRATCH_PAD {
        offset.min(scratch.len())
    } else {
        0
    };
    &mut scratch[offset..]
}

/// Both stages: [`StripLoops::forward_strip`] over every strip of `out` (`OH x OW x N`, HWC).
///
/// # Panics
/// If `isa` is not supported by this CPU, or a buffer or the plan does not match the layer
/// (generated code never does this).
#[inline]
pub fn forward<T: StripLoops>(
    isa: Isa,
    plan: &StripPlan,
    weights: &StripWeights<'_, T>,
    x: &[T],
    out: &mut [T],
    scratch: &mut [T],
) {
    let [oh, ow, n] = plan.output;
    assert_eq!(Some(out.len()), oh.checked_mul(ow * n), "output length");
    for (strip, out) in out.chunks_mut(plan.rows * ow * n).enumerate() {
        T::forward_strip(isa, plan, weights, x, strip, out, scratch);
    }
}

/// [`forward`] with a scratch buffer of `LEN` elements on the stack: a generated layer's
/// forward pass, `LEN` being its plan's [`StripPlan::scratch_len`] plus
/// [`separable_shape::SCRATCH_PAD`], so that the strip can start on a cache line.
///
/// # Panics
/// As [`forward`], and if `LEN` is shorter than the plan's scratch.
#[inline]
pub fn forward_on_stack<T: StripLoops, const LEN: usize>(
    isa: Isa,
    plan: &StripPlan,
    weights: &StripWeights<'_, T>,
    x: &[T],
    out: &mut [T],
) {
    let mut scratch = [T::ZERO; LEN];
    forward(isa, plan, weights, x, out, cache_aligned(&mut scratch));
}

/// [`forward_on_stack`] with the strips shared out among the calling thread and rayon's
/// threads when the `rayon` feature is on (in order on this thread otherwise), one scratch
/// buffer per thread. Each strip is computed as in [`forward`], so the output is
/// bit-identical.
///
/// # Panics
/// As [`forward_on_stack`].
pub fn forward_parallel<T: StripLoops, const LEN: usize>(
    isa: Isa,
    plan: &StripPlan,
    weights: &StripWeights<'_, T>,
    x: &[T],
    out: &mut [T],
) {
    let [oh, ow, n] = plan.output;
    assert_eq!(Some(out.len()), oh.checked_mul(ow * n), "output length");
    crate::parallel::for_each_chunk_with(
        out,
        plan.rows * ow * n,
        || [T::ZERO; LEN],
        |scratch, strip, out| {
            let scratch = cache_aligned(scratch);
            T::forward_strip(isa, plan, weights, x, strip, out, scratch);
        },
    );
}

#[allow(clippy::too_many_arguments)] // as `forward_strip`
fn forward_strip_loop<T: StripLoops>(
    isa: Isa,
    plan: &StripPlan,
    weights: &StripWeights<'_, T>,
    x: &[T],
    strip: usize,
    out: &mut [T],
    scratch: &mut [T],
) {
    plan.check_with_scratch(scratch.len());
    let [oh, ow, n] = plan.output;
    let (kc, cm) = (plan.geometry.block, plan.depthwise_channels());
    let r0 = strip * plan.rows;
    assert!(
        out.len().is_multiple_of(ow * n),
        "the strip is not whole rows"
    );
    let r1 = r0 + out.len() / (ow * n);
    assert!(
        r1 - r0 <= plan.rows && r1 <= oh,
        "the strip is outside the output"
    );
    let pixels = (r1 - r0) * ow;
    let bias = weights.pointwise_bias.unwrap_or(&[]);
    let blocks = cm / kc;
    for kb in 0..blocks {
        let strip = &mut scratch[..pixels * kc];
        depthwise_block(isa, plan, weights, x, r0, kb, strip);
        let block = Block {
            a: strip,
            pixels,
            k0: kb * kc,
            kb: kc,
            k: cm,
            n,
            packed: weights.pointwise,
        };
        // The activation with the last block's sums, in registers.
        let activation = if kb + 1 == blocks {
            plan.activations[1]
        } else {
            Activation::None
        };
        gemm::pointwise_block(isa, &block, (kb == 0).then_some(bias), activation, out);
    }
}

fn depthwise_loop<T: StripLoops>(
    isa: Isa,
    plan: &StripPlan,
    weights: &StripWeights<'_, T>,
    x: &[T],
    out: &mut [T],
) {
    // One block of every channel: the kernels run as fast per pixel as on `forward`'s blocks
    // (mb7: 26.6 us either way), and the rows are written in place instead of each block being
    // copied into them (mb7's depthwise stage took 39 us with the copies).
    let plan = StripPlan {
        geometry: Geometry {
            block: plan.depthwise_channels(),
            ..plan.geometry
        },
        ..*plan
    };
    plan.check();
    let [oh, ow, _] = plan.output;
    let cm = plan.depthwise_channels();
    assert_eq!(Some(out.len()), oh.checked_mul(ow * cm), "output length");
    depthwise_block(isa, &plan, weights, x, 0, 0, out);
}

fn pointwise_loop<T: StripLoops>(
    isa: Isa,
    plan: &StripPlan,
    weights: &StripWeights<'_, T>,
    y: &[T],
    out: &mut [T],
) {
    plan.check();
    let [oh, ow, n] = plan.output;
    let cm = plan.depthwise_channels();
    assert_eq!(Some(y.len()), oh.checked_mul(ow * cm), "depthwise length");
    assert_eq!(Some(out.len()), oh.checked_mul(ow * n), "output length");
    let bias = weights.pointwise_bias.unwrap_or(&[]);
    for r0 in (0..oh).step_by(plan.rows) {
        let r1 = (r0 + plan.rows).min(oh);
        let block = Block {
            a: &y[r0 * ow * cm..r1 * ow * cm],
            pixels: (r1 - r0) * ow,
            k0: 0,
            kb: cm,
            k: cm,
            n,
            packed: weights.pointwise,
        };
        let out = &mut out[r0 * ow * n..r1 * ow * n];
        gemm::pointwise_block(isa, &block, Some(bias), plan.activations[1], out);
    }
}

/// The depthwise stage, with its bias and activation, of channel block `kb` of the output rows
/// from `first` into `out`, one block per pixel of those rows: row by row, one run over the
/// interior columns and one per border pixel, each over the taps inside the input.
fn depthwise_block<T: StripLoops>(
    isa: Isa,
    plan: &StripPlan,
    weights: &StripWeights<'_, T>,
    x: &[T],
    first: usize,
    kb: usize,
    out: &mut [T],
) {
    let g = &plan.geometry;
    let depthwise = dw::DepthwiseWeights {
        taps: weights.depthwise,
        bias: weights.depthwise_bias,
        activation: plan.activations[0],
    };
    for (i, pixels) in out.chunks_exact_mut(plan.output[1] * g.block).enumerate() {
        let row = dw::Row {
            output_row: first + i,
            kb,
            interior_cols: plan.interior_cols,
        };
        dw::depthwise_row(isa, g, x, &depthwise, &row, pixels);
    }
}

/// `StripLoops` for one element type: the generic loops, compiled here.
macro_rules! strip_loops {
    ($($t:ty),*) => {$(
        impl StripLoops for $t {
            #[allow(clippy::too_many_arguments)]
            fn forward_strip(
                isa: Isa,
                plan: &StripPlan,
                weights: &StripWeights<'_, $t>,
                x: &[$t],
                strip: usize,
                out: &mut [$t],
                scratch: &mut [$t],
            ) {
                forward_strip_loop(isa, plan, weights, x, strip, out, scratch);
            }
            fn depthwise(
                isa: Isa,
                plan: &StripPlan,
                weights: &StripWeights<'_, $t>,
                x: &[$t],
                out: &mut [$t],
            ) {
                depthwise_loop(isa, plan, weights, x, out);
            }
            fn pointwise(
                isa: Isa,
                plan: &StripPlan,
                weights: &StripWeights<'_, $t>,
                y: &[$t],
                out: &mut [$t],
            ) {
                pointwise_loop(isa, plan, weights, y, out);
            }
        }
    )*};
}

strip_loops!(f32, f64);

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;

    /// A 4 x 4 x 8 -> 4 x 4 x 2 layer, 3 x 3 `same`, in strips of 2 rows and blocks of 4.
    const PLAN: StripPlan = StripPlan {
        geometry: Geometry {
            input: [4, 4, 8],
            multiplier: 1,
            block: 4,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            padding: [1, 1],
        },
        output: [4, 4, 2],
        rows: 2,
        interior_cols: [1, 3],
        activations: [Activation::None, Activation::Relu],
    };

    fn run(plan: &StripPlan, scratch: usize) -> Vec<f32> {
        let x = vec![1.0; 4 * 4 * 8];
        let dw = vec![1.0; 9 * 8];
        let pw = vec![1.0; gemm::packed_len(8, 2)];
        let weights = StripWeights {
            depthwise: &dw,
            depthwise_bias: None,
            pointwise: &pw,
            pointwise_bias: None,
        };
        let mut out = vec![0.0; 4 * 4 * 2];
        let mut scratch = vec![0.0; scratch];
        forward(Isa::Portable, plan, &weights, &x, &mut out, &mut scratch);
        out
    }

    #[test]
    fn all_ones_count_the_taps_inside_the_input() {
        let out = run(&PLAN, PLAN.scratch_len());
        // Each output channel sums 8 depthwise channels, each the count of in-bounds taps.
        let taps = |i: usize| if i == 0 || i == 3 { 2.0 } else { 3.0 };
        for (p, pixel) in out.chunks(2).enumerate() {
            let expected = 8.0 * taps(p / 4) * taps(p % 4);
            assert_eq!(pixel, [expected, expected], "pixel {p}");
        }
    }

    #[test]
    fn scratch_starts_on_a_cache_line() {
        let mut buffer = vec![0.0f32; 64];
        for start in 0..16 {
            let len = 64 - start;
            let aligned = cache_aligned(&mut buffer[start..]);
            assert_eq!(aligned.as_ptr().addr() % 64, 0, "from element {start}");
            assert!(aligned.len() + separable_shape::SCRATCH_PAD >= len);
        }
        let mut doubles = vec![0.0f64; 32];
        for start in 0..8 {
            assert_eq!(cache_aligned(&mut doubles[start..]).as_ptr().addr() % 64, 0);
        }
    }

    #[test]
    #[should_panic(expected = "scratch is too short")]
    fn a_short_scratch_is_rejected() {
        run(&PLAN, PLAN.scratch_len() - 1);
    }

    #[test]
    #[should_panic(expected = "the channel block does not divide")]
    fn a_block_that_does_not_divide_the_channels_is_rejected() {
        let mut plan = PLAN;
        plan.geometry.block = 3;
        run(&plan, 64);
    }

    #[test]
    #[should_panic(expected = "interior columns outside the output")]
    fn an_interior_outside_the_output_is_rejected() {
        let mut plan = PLAN;
        plan.interior_cols = [1, 5];
        run(&plan, PLAN.scratch_len());
    }
}

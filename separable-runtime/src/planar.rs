//! Tiny layers with few channels, vectorised across positions instead of channels.
//!
//! With `C·M` and `N` of a few channels (the seed has 3 and 4), a pixel's channels fill a
//! fraction of one vector, so code that vectorises across channels runs mostly scalar. These
//! functions turn the layer around: the HWC input is copied into one zero-padded plane per
//! channel, row-major with row stride [`Planes::row_stride`], and the depthwise output of a
//! channel is computed as one flat run of `L` positions, `run[i] = sum over taps of
//! w[kh][kw] * plane[i + kh·DH·stride + kw·DW]`: a whole-array multiply-add per tap, which the
//! compiler vectorises across positions. Position `i = oh·SH·stride + ow·SW` of the run is output
//! `(oh, ow)`; the other positions (the padding columns, and the rows and columns a stride skips)
//! are computed and never read. The depthwise sums of a block of positions stay in a register
//! across the taps (a block is one vector: 8 `f32` or 4 `f64` with AVX2, 4 or 2 otherwise).
//! Layers run these stages with AVX2 even where AVX-512 is available ([`isa`]). The pointwise
//! stage then reads the runs output pixel by output pixel, writing each pixel's `N` channels.
//!
//! Every sum is taken in the order of the per-pixel code (bias, then the taps `kh`, `kw`
//! ascending, then the depthwise channels ascending); with AVX2 or AVX-512 (and the `std`
//! feature) each step is a fused multiply-add, so the instruction sets agree to its rounding.
//! Taps on padding add `0 * w`, which is zero for a finite weight; a non-finite depthwise weight
//! instead takes a slower path that skips the taps on padding, so `NaN` and infinities reach
//! exactly the outputs whose window covers an input pixel with that tap.
//!
//! Every array length is a const generic and the geometry a constant, so after inlining all
//! indices are literals and the scratch (`C·P + C·M·L` elements) lives on the stack.

use separable_shape::{Activation, POINTWISE_PANEL};

use crate::Element;
use crate::gemm::Isa;
use crate::kernel::activate;

/// Runs are a whole number of this many positions (one AVX2 vector of `f32`), so they split
/// into full vectors.
pub const LANES: usize = 8;

/// Element types whose multiply-adds the planar stages can fuse.
pub trait MulAdd: Element {
    /// `self * a + b`: fused (one rounding) when `fused`, which callers set only in code compiled
    /// with FMA (`Isa::Avx2`, `Isa::Avx512`) and which needs the `std` feature; two roundings
    /// otherwise.
    #[must_use]
    fn mul_add_if(self, a: Self, b: Self, fused: bool) -> Self;

    /// `accumulate` of 8 positions with their sums in one 256-bit register and one fused
    /// multiply-add per tap, returning `true`; `false` (doing nothing) where this type and
    /// target have no such code. Written with intrinsics because the compiler, left to itself
    /// with AVX-512 enabled for the whole build (`-C target-cpu=native`), vectorises across
    /// blocks with gathers instead, about 2.5 times slower.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[inline(always)]
    unsafe fn accumulate8<const KH: usize, const KW: usize, const P: usize>(
        block: &mut [Self; 8],
        plane: &[Self; P],
        start: usize,
        taps: &impl Fn(usize, usize) -> (Self, usize),
    ) -> bool {
        let _ = (block, plane, start, taps);
        false
    }
}

impl MulAdd for f32 {
    #[inline(always)]
    fn mul_add_if(self, a: f32, b: f32, fused: bool) -> f32 {
        #[cfg(feature = "std")]
        if fused {
            return self.mul_add(a, b);
        }
        let _ = fused;
        self * a + b
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn accumulate8<const KH: usize, const KW: usize, const P: usize>(
        block: &mut [f32; 8],
        plane: &[f32; P],
        start: usize,
        taps: &impl Fn(usize, usize) -> (f32, usize),
    ) -> bool {
        use core::arch::x86_64::{
            _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps,
        };
        // SAFETY: the caller's contract: this CPU supports AVX2 and FMA. Every load and store
        // is of 8 `f32` from a slice of 8 (`block`, and `plane` sliced with bounds checks).
        unsafe {
            let mut acc = _mm256_loadu_ps(block.as_ptr());
            for kh in 0..KH {
                for kw in 0..KW {
                    let (wv, offset) = taps(kh, kw);
                    let x = &plane[start + offset..][..8];
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr()), _mm256_set1_ps(wv), acc);
                }
            }
            _mm256_storeu_ps(block.as_mut_ptr(), acc);
        }
        true
    }
}

impl MulAdd for f64 {
    #[inline(always)]
    fn mul_add_if(self, a: f64, b: f64, fused: bool) -> f64 {
        #[cfg(feature = "std")]
        if fused {
            return self.mul_add(a, b);
        }
        let _ = fused;
        self * a + b
    }
}

/// The instruction set to run the planar stages with on a CPU whose best is `best`: AVX2 where
/// AVX-512 is available. At these sizes 512-bit vectors were measured slower (the seed's forward
/// pass about 120 ns with AVX-512 and 90 ns with AVX2 on an AVX-512 Xeon), and a run of a few
/// dozen positions fills few of them.
#[must_use]
#[inline]
pub fn isa(best: Isa) -> Isa {
    match best {
        Isa::Avx512 => Isa::Avx2,
        other => other,
    }
}

/// Whether code running as `isa` fuses its multiply-adds ([`MulAdd::mul_add_if`]).
#[inline(always)]
fn fuses(isa: Isa) -> bool {
    isa != Isa::Portable
}

/// Where a layer's input and outputs sit in its planes. Generated code writes one as a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    /// Row stride of every plane and run: `W` plus the padding, at least the window's reach.
    pub row_stride: usize,
    /// `[top, left]` padding: input pixel `(h, w)` sits at `(h + top) * row_stride + w + left`.
    pub pad: [usize; 2],
    /// `[SH, SW]`.
    pub stride: [usize; 2],
    /// `[DH, DW]`.
    pub dilation: [usize; 2],
}

/// The weights, biases and activations of a layer, as the planar stages read them.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a, T, const CM: usize, const N: usize, const KH: usize, const KW: usize> {
    /// Depthwise weights `[kh][kw][c·M + m]`.
    pub depthwise: &'a [[[T; CM]; KW]; KH],
    /// Depthwise bias, if any.
    pub depthwise_bias: Option<&'a [T; CM]>,
    /// Pointwise weights packed in panels (see [`crate::gemm::pack`]).
    pub pointwise: &'a [T],
    /// Pointwise bias, if any.
    pub pointwise_bias: Option<&'a [T; N]>,
    /// Activations after the depthwise and after the pointwise stage.
    pub activations: [Activation; 2],
}

/// Both stages: `x` into planes, the depthwise runs, then the pointwise stage into `out`.
#[inline(always)]
pub fn forward<
    T: MulAdd,
    const H: usize,
    const W: usize,
    const C: usize,
    const CM: usize,
    const N: usize,
    const OH: usize,
    const OW: usize,
    const KH: usize,
    const KW: usize,
    const P: usize,
    const L: usize,
>(
    isa: Isa,
    g: &Planes,
    weights: &Weights<'_, T, CM, N, KH, KW>,
    x: &[[[T; C]; W]; H],
    out: &mut [[[T; N]; OW]; OH],
) {
    let runs = depthwise_runs::<T, H, W, C, CM, N, KH, KW, P, L>(isa, g, weights, x);
    let fused = fuses(isa);
    let bias = weights.pointwise_bias.copied().unwrap_or([T::ZERO; N]);
    for (oh, row) in out.iter_mut().enumerate() {
        for (ow, pixel) in row.iter_mut().enumerate() {
            let i = position(g, oh, ow);
            let mut acc = bias;
            for (panel, acc) in acc.chunks_mut(POINTWISE_PANEL).enumerate() {
                let packed =
                    &weights.pointwise[panel * CM * POINTWISE_PANEL..][..CM * POINTWISE_PANEL];
                for (run, w) in runs.iter().zip(packed.chunks_exact(POINTWISE_PANEL)) {
                    let y = run[i];
                    for (a, &wv) in acc.iter_mut().zip(w) {
                        *a = y.mul_add_if(wv, *a, fused);
                    }
                }
            }
            activate(weights.activations[1], &mut acc);
            *pixel = acc;
        }
    }
}

/// The depthwise stage alone, into `out` in HWC order.
#[inline(always)]
pub fn depthwise<
    T: MulAdd,
    const H: usize,
    const W: usize,
    const C: usize,
    const CM: usize,
    const N: usize,
    const OH: usize,
    const OW: usize,
    const KH: usize,
    const KW: usize,
    const P: usize,
    const L: usize,
>(
    isa: Isa,
    g: &Planes,
    weights: &Weights<'_, T, CM, N, KH, KW>,
    x: &[[[T; C]; W]; H],
    out: &mut [[[T; CM]; OW]; OH],
) {
    let runs = depthwise_runs::<T, H, W, C, CM, N, KH, KW, P, L>(isa, g, weights, x);
    for (oh, row) in out.iter_mut().enumerate() {
        for (ow, pixel) in row.iter_mut().enumerate() {
            let i = position(g, oh, ow);
            for (v, run) in pixel.iter_mut().zip(&runs) {
                *v = run[i];
            }
        }
    }
}

/// Run position of output `(oh, ow)`.
#[inline(always)]
fn position(g: &Planes, oh: usize, ow: usize) -> usize {
    oh * g.stride[0] * g.row_stride + ow * g.stride[1]
}

/// The depthwise runs, with bias and activation: one per depthwise channel.
#[inline(always)]
fn depthwise_runs<
    T: MulAdd,
    const H: usize,
    const W: usize,
    const C: usize,
    const CM: usize,
    const N: usize,
    const KH: usize,
    const KW: usize,
    const P: usize,
    const L: usize,
>(
    isa: Isa,
    g: &Planes,
    weights: &Weights<'_, T, CM, N, KH, KW>,
    x: &[[[T; C]; W]; H],
) -> [[T; L]; CM] {
    const {
        assert!(C > 0 && CM.is_multiple_of(C), "C must divide C·M");
        assert!(L.is_multiple_of(LANES), "runs must be whole vectors");
    };
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    let m = CM / C;
    let mut planes = [[T::ZERO; P]; C];
    let origin = g.pad[0] * g.row_stride + g.pad[1];
    for (h, row) in x.iter().enumerate() {
        let start = origin + h * g.row_stride;
        for (c, plane) in planes.iter_mut().enumerate() {
            // A row of one channel at a time, so it can be one shuffle and one store.
            let values: [T; W] = core::array::from_fn(|w| row[w][c]);
            plane[start..start + W].copy_from_slice(&values);
        }
    }
    // A short-circuiting test, not a branch-free fold: built with AVX-512 for the whole crate
    // (`-C target-cpu=native`) the fold became a 512-bit reduction, and the seed's `forward`
    // took 95-103 ns against a median of 88 with this test (the default build: 88 either way).
    let finite = weights
        .depthwise
        .as_flattened()
        .as_flattened()
        .iter()
        .all(|&w| w * T::ZERO == T::ZERO);
    let fused = fuses(isa);
    let mut runs = [[T::ZERO; L]; CM];
    for (k, run) in runs.iter_mut().enumerate() {
        let plane = &planes[k / m];
        let bias = weights.depthwise_bias.map_or(T::ZERO, |b| b[k]);
        run.fill(bias);
        let taps = |kh: usize, kw: usize| (weights.depthwise[kh][kw][k], tap_offset(g, kh, kw));
        if finite {
            // Blocks of one vector register, whose sums the compiler keeps in it (a wider block
            // would be split into registers built by shuffles).
            match (isa, size_of::<T>()) {
                (Isa::Avx2 | Isa::Avx512, 4) => {
                    blocks::<T, KH, KW, P, L, 8>(run, plane, &taps, fused);
                }
                (Isa::Avx2 | Isa::Avx512, _) | (_, 4) => {
                    blocks::<T, KH, KW, P, L, 4>(run, plane, &taps, fused);
                }
                _ => blocks::<T, KH, KW, P, L, 2>(run, plane, &taps, fused),
            }
        } else {
            for kh in 0..KH {
                for kw in 0..KW {
                    let (wv, offset) = taps(kh, kw);
                    let x = &plane[offset..offset + L];
                    for (i, (a, &xv)) in run.iter_mut().zip(x).enumerate() {
                        if inside::<H, W>(g, i + offset) {
                            *a = xv.mul_add_if(wv, *a, fused);
                        }
                    }
                }
            }
        }
        activate(weights.activations[0], run);
    }
    runs
}

/// [`accumulate`] over a whole run in blocks of `V` positions.
#[inline(always)]
fn blocks<
    T: MulAdd,
    const KH: usize,
    const KW: usize,
    const P: usize,
    const L: usize,
    const V: usize,
>(
    run: &mut [T; L],
    plane: &[T; P],
    taps: &impl Fn(usize, usize) -> (T, usize),
    fused: bool,
) {
    const { assert!(V > 0 && LANES.is_multiple_of(V), "blocks must divide LANES") };
    for (b, block) in run.as_chunks_mut::<V>().0.iter_mut().enumerate() {
        accumulate::<T, KH, KW, P, V>(block, plane, b * V, taps, fused);
    }
}

/// Adds every tap to one block of `V` run positions starting at `start`, the sums kept in
/// registers across the taps; `taps(kh, kw)` is the weight and plane offset of a tap.
#[inline(always)]
fn accumulate<T: MulAdd, const KH: usize, const KW: usize, const P: usize, const V: usize>(
    block: &mut [T; V],
    plane: &[T; P],
    start: usize,
    taps: &impl Fn(usize, usize) -> (T, usize),
    fused: bool,
) {
    // With FMA (hence AVX2), `fused` and `std`, 8 positions take the vector code, which rounds
    // as `mul_add` does.
    #[cfg(feature = "std")]
    if V == 8
        && fused
        && let Ok(block) = <&mut [T; 8]>::try_from(&mut block[..])
        // SAFETY: `fused` is set only for `Isa::Avx2` and `Isa::Avx512` (`fuses`), and
        // `depthwise_runs` asserted that this CPU supports the one it was given.
        && unsafe { T::accumulate8::<KH, KW, P>(block, plane, start, taps) }
    {
        return;
    }
    let mut acc = *block;
    for kh in 0..KH {
        for kw in 0..KW {
            let (wv, offset) = taps(kh, kw);
            let x = &plane[start + offset..start + offset + V];
            for (a, &xv) in acc.iter_mut().zip(x) {
                *a = xv.mul_add_if(wv, *a, fused);
            }
        }
    }
    *block = acc;
}

/// Plane offset of tap `(kh, kw)` from the run position it contributes to.
#[inline(always)]
fn tap_offset(g: &Planes, kh: usize, kw: usize) -> usize {
    kh * g.dilation[0] * g.row_stride + kw * g.dilation[1]
}

/// Whether plane position `j` holds an input pixel (not padding).
#[inline(always)]
fn inside<const H: usize, const W: usize>(g: &Planes, j: usize) -> bool {
    let (row, col) = (j / g.row_stride, j % g.row_stride);
    (g.pad[0]..g.pad[0] + H).contains(&row) && (g.pad[1]..g.pad[1] + W).contains(&col)
}

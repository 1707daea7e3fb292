//! The depthwise microkernel: a run of adjacent output pixels of one row over a block of
//! channels, summing the taps of their windows that land inside the input, and the rows built
//! from it (one run over the interior columns, one per border pixel).
//!
//! `out[c·M + m] = act(bias[c·M + m] + sum over taps t of x[t][c] * w[t][c·M + m])`, the
//! activation applied to each run's outputs while they are in L1 (with a pass over each strip
//! of rows instead, mb1's stage with `relu6` took 180 us, against 166). Every size is a run-time
//! value ([`Geometry`]), so the kernels are compiled once, in this crate, whatever layers a
//! program declares. With multiplier 1 and `f32`, the AVX-512 and AVX2 paths keep a group of
//! pixels' accumulators in registers across all taps and use fused multiply-adds; they are
//! compiled with the kernel size and the stride as literals for the 3 x 3 windows of stride 1
//! and 2 ([`COMPILED_WINDOWS`]), and with the channel count too for [`COMPILED_CHANNELS`], and
//! read them from the geometry otherwise. Everything else runs the portable loop, which the
//! compiler vectorises.

use separable_shape::Activation;

use crate::Element;
use crate::gemm::Isa;
use crate::kernel::activate_slice;

/// The shape of a layer's depthwise stage as the kernels see it: the generated code passes it
/// as a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `[H, W, C]` of the input.
    pub input: [usize; 3],
    /// The depth multiplier `M`.
    pub multiplier: usize,
    /// Depthwise channels per block `KC`: a multiple of `M` that divides `C·M`.
    pub block: usize,
    /// `[KH, KW]`.
    pub kernel: [usize; 2],
    /// `[SH, SW]`.
    pub stride: [usize; 2],
    /// `[DH, DW]`.
    pub dilation: [usize; 2],
    /// Padding before the first row and column, `[top, left]`.
    pub padding: [usize; 2],
}

/// `(KH, KW, SW, DW)` of the windows whose vector kernels are compiled with those sizes as
/// literals: MobileNet's 3 x 3 windows with stride 1 and 2.
pub const COMPILED_WINDOWS: [(usize, usize, usize, usize); 2] = [(3, 3, 1, 1), (3, 3, 2, 1)];

/// Input channel counts `C` for which the kernels of [`COMPILED_WINDOWS`] are also compiled
/// with `C` as a literal, so that every tap's offset is a constant (MobileNet's widths).
pub const COMPILED_CHANNELS: [usize; 6] = [32, 64, 128, 256, 512, 1024];

impl Geometry {
    /// `C·M`, the depthwise channels, if it fits in `usize`.
    fn depthwise_channels(&self) -> Option<usize> {
        self.input[2].checked_mul(self.multiplier)
    }

    /// Panics unless the block divides the channels and `x` and `w` have the sizes of the
    /// input and the weights; returns `C·M`.
    fn check(&self, x: usize, w: usize, kb: usize) -> usize {
        let [h, width, c] = self.input;
        let (m, kc) = (self.multiplier, self.block);
        let cm = self.depthwise_channels().unwrap_or(usize::MAX);
        assert!(
            m > 0 && kc > 0 && kc.is_multiple_of(m) && cm.is_multiple_of(kc) && cm < usize::MAX,
            "channel block does not divide the channels"
        );
        assert!(
            self.stride.iter().chain(&self.dilation).all(|&v| v > 0),
            "zero stride or dilation"
        );
        assert_eq!(
            h.checked_mul(width).and_then(|p| p.checked_mul(c)),
            Some(x),
            "input has the wrong length"
        );
        assert_eq!(
            self.kernel[0]
                .checked_mul(self.kernel[1])
                .and_then(|t| t.checked_mul(cm)),
            Some(w),
            "weights have the wrong length"
        );
        assert!(
            kb.checked_add(1)
                .and_then(|b| b.checked_mul(kc))
                .is_some_and(|end| end <= cm),
            "channel block outside the weights"
        );
        cm
    }
}

/// `first + (count - 1) * step`, the last of `count > 0` positions, if it fits.
fn last(first: usize, count: usize, step: usize) -> Option<usize> {
    (count - 1).checked_mul(step)?.checked_add(first)
}

/// The taps of a run of adjacent output pixels of one row that land inside the input: the
/// same kernel rows and columns for every pixel of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taps {
    /// Kernel rows inside the input.
    pub rows: core::ops::Range<usize>,
    /// Kernel columns inside the input.
    pub cols: core::ops::Range<usize>,
    /// Input `[row, column]` of the first pixel's tap `(rows.start, cols.start)`; pixel `p`'s
    /// taps are `p · SW` columns to its right.
    pub origin: [usize; 2],
    /// Channel block.
    pub kb: usize,
}

impl Taps {
    /// Whether no tap lands inside the input.
    fn is_empty(&self) -> bool {
        self.rows.is_empty() || self.cols.is_empty()
    }
}

/// A layer's depthwise weights `[KH][KW][C·M]`, its bias (`C·M` values) if it has one, and
/// the activation of its sums.
#[derive(Clone, Copy, Debug)]
pub struct DepthwiseWeights<'a, T> {
    /// `[kh][kw][c·M + m]`.
    pub taps: &'a [T],
    /// `C·M` values.
    pub bias: Option<&'a [T]>,
    /// Applied to every output.
    pub activation: Activation,
}

/// Writes the depthwise outputs of a run of adjacent output pixels in one row to `out`, `KC`
/// values per pixel of channel block `taps.kb`: the activation of the bias (zero without one)
/// plus the window sum over the taps `taps` (see [`Taps`]). `x` is the whole input (`H·W·C`,
/// HWC).
///
/// Several pixels are computed together so their accumulators form independent chains that
/// keep the FMA units busy; a tap outside `taps` is not read, so padding adds nothing.
///
/// # Panics
/// If `isa` is not supported by this CPU, a tap of the run falls outside the input or the
/// kernel, the slices do not have the geometry's sizes, or the block is outside the channels
/// (generated code never does any of these).
#[inline]
pub fn depthwise_run<T: DepthwiseKernels>(
    isa: Isa,
    geometry: &Geometry,
    x: &[T],
    taps: &Taps,
    weights: &DepthwiseWeights<'_, T>,
    out: &mut [T],
) {
    let cm = geometry.check(x.len(), weights.taps.len(), taps.kb);
    assert!(
        weights.bias.is_none_or(|b| b.len() == cm),
        "bias has the wrong length"
    );
    assert!(
        out.len().is_multiple_of(geometry.block),
        "output is not whole pixels"
    );
    let pixels = out.len() / geometry.block;
    if pixels == 0 {
        return;
    }
    if !taps.is_empty() {
        let [h, width, _] = geometry.input;
        assert!(
            taps.rows.end <= geometry.kernel[0] && taps.cols.end <= geometry.kernel[1],
            "taps outside the kernel"
        );
        let bottom = last(taps.origin[0], taps.rows.len(), geometry.dilation[0]);
        assert!(
            bottom.is_some_and(|r| r < h),
            "run reaches past the last row"
        );
        let reach = last(taps.origin[1], pixels, geometry.stride[1])
            .and_then(|col| last(col, taps.cols.len(), geometry.dilation[1]));
        assert!(
            reach.is_some_and(|col| col < width),
            "run reaches column {reach:?} of {width}"
        );
    }
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    // SAFETY: every condition of `DepthwiseKernels::depthwise_run` was asserted above.
    unsafe { T::depthwise_run(isa, geometry, x, taps, weights, out) };
}

/// Where [`depthwise_row`] computes: an output row, a channel block, and the columns whose
/// windows have every column tap inside the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// The output row.
    pub output_row: usize,
    /// The channel block.
    pub kb: usize,
    /// `[first, end)` of the output columns whose windows have every column tap inside the
    /// input (equal when there are none).
    pub interior_cols: [usize; 2],
}

/// Writes one output row of channel block `row.kb` to `out` (`OW` pixels of `KC` values):
/// one [`depthwise_run`] over the interior columns and one per border pixel, each with the
/// taps that land inside the input.
///
/// # Panics
/// If `isa` is not supported by this CPU, `out` is not whole pixels, the interior columns are
/// not inside the row or reach the padding, or the slices do not have the geometry's sizes
/// (generated code never does any of these).
pub fn depthwise_row<T: DepthwiseKernels>(
    isa: Isa,
    geometry: &Geometry,
    x: &[T],
    weights: &DepthwiseWeights<'_, T>,
    row: &Row,
    out: &mut [T],
) {
    let (g, kc) = (geometry, geometry.block);
    assert!(
        kc > 0 && out.len().is_multiple_of(kc),
        "output is not whole pixels"
    );
    let ow = out.len() / kc;
    let [c0, c1] = row.interior_cols;
    assert!(c0 <= c1 && c1 <= ow, "interior columns outside the row");
    let [h, width, _] = g.input;
    let (lo, hi) = separable_shape::tap_range(
        row.output_row,
        g.stride[0],
        g.dilation[0],
        g.padding[0],
        h,
        g.kernel[0],
    );
    // The first in-bounds tap's input row: non-negative, as `tap_range` admits only taps
    // inside the input (and unused when there are none).
    let row0 = (row.output_row * g.stride[0] + lo * g.dilation[0]).saturating_sub(g.padding[0]);
    let run = |cols: core::ops::Range<usize>, col0: usize, out: &mut [T]| {
        let taps = Taps {
            rows: lo..hi,
            cols,
            origin: [row0, col0],
            kb: row.kb,
        };
        depthwise_run(isa, g, x, &taps, weights, out);
    };
    if c0 < c1 {
        let col0 = (c0 * g.stride[1])
            .checked_sub(g.padding[1])
            .expect("interior columns reach the padding");
        run(0..g.kernel[1], col0, &mut out[c0 * kc..c1 * kc]);
    }
    for (ow, pixel) in (0..ow).zip(out.chunks_exact_mut(kc)) {
        if (c0..c1).contains(&ow) {
            continue;
        }
        let (left, right) = separable_shape::tap_range(
            ow,
            g.stride[1],
            g.dilation[1],
            g.padding[1],
            width,
            g.kernel[1],
        );
        let col0 = (ow * g.stride[1] + left * g.dilation[1]).saturating_sub(g.padding[1]);
        run(left..right, col0, pixel);
    }
}

/// Element types with depthwise microkernels.
pub trait DepthwiseKernels: Element {
    /// See [`depthwise_run`].
    ///
    /// # Safety
    /// `isa` is supported by this CPU and the arguments pass [`depthwise_run`]'s checks.
    unsafe fn depthwise_run(
        isa: Isa,
        geometry: &Geometry,
        x: &[Self],
        taps: &Taps,
        weights: &DepthwiseWeights<'_, Self>,
        out: &mut [Self],
    );
}

/// Pixels per group of the portable run.
const PORTABLE_GROUP: usize = 4;

/// The portable run: the bias, then groups of pixels, taps outermost, channels innermost
/// (vectorised), each group activated when its sums are done.
fn portable_run<T: Element>(
    g: &Geometry,
    x: &[T],
    taps: &Taps,
    weights: &DepthwiseWeights<'_, T>,
    out: &mut [T],
) {
    let [_, width, c] = g.input;
    let (m, kc, kw_n) = (g.multiplier, g.block, g.kernel[1]);
    let cm = c * m;
    let (sw, [dh, dw]) = (g.stride[1], g.dilation);
    let (ci0, co0) = (taps.kb * (kc / m), taps.kb * kc);
    match weights.bias {
        Some(bias) => {
            for pixel in out.chunks_exact_mut(kc) {
                pixel.copy_from_slice(&bias[co0..][..kc]);
            }
        }
        None => out.fill(T::ZERO),
    }
    for (gi, group) in out.chunks_mut(PORTABLE_GROUP * kc).enumerate() {
        let p0 = gi * PORTABLE_GROUP;
        for (i, kh) in taps.rows.clone().enumerate() {
            let row = &x[(taps.origin[0] + i * dh) * width * c..][..width * c];
            for (j, kw) in taps.cols.clone().enumerate() {
                let wtap = &weights.taps[(kh * kw_n + kw) * cm + co0..][..kc];
                for (q, acc) in group.chunks_exact_mut(kc).enumerate() {
                    let col = taps.origin[1] + (p0 + q) * sw + j * dw;
                    let xs = &row[col * c + ci0..][..kc / m];
                    if m == 1 {
                        for ((a, &xv), &wv) in acc.iter_mut().zip(xs).zip(wtap) {
                            *a = *a + xv * wv;
                        }
                    } else {
                        for ((a, wv), &xv) in
                            acc.chunks_exact_mut(m).zip(wtap.chunks_exact(m)).zip(xs)
                        {
                            for (a, &wv) in a.iter_mut().zip(wv) {
                                *a = *a + xv * wv;
                            }
                        }
                    }
                }
            }
        }
        // While the group is in L1.
        activate_slice(weights.activation, group);
    }
}

impl DepthwiseKernels for f64 {
    unsafe fn depthwise_run(
        _: Isa,
        geometry: &Geometry,
        x: &[f64],
        taps: &Taps,
        weights: &DepthwiseWeights<'_, f64>,
        out: &mut [f64],
    ) {
        portable_run(geometry, x, taps, weights, out);
    }
}

impl DepthwiseKernels for f32 {
    unsafe fn depthwise_run(
        isa: Isa,
        geometry: &Geometry,
        x: &[f32],
        taps: &Taps,
        weights: &DepthwiseWeights<'_, f32>,
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if geometry.multiplier == 1 && isa != Isa::Portable {
            let [_, width, c] = geometry.input;
            let kc = geometry.block;
            let c0 = taps.kb * kc;
            // The first tap's row; no input is read when there are no taps.
            let first = if taps.is_empty() {
                0
            } else {
                taps.origin[0] * width * c + c0
            };
            let args = x86::Run {
                out: out.as_mut_ptr(),
                input: x[first..].as_ptr(),
                weights: weights.taps[c0..].as_ptr(),
                bias: weights.bias.map(|b| b[c0..].as_ptr()),
                pixels: out.len() / kc,
                col0: taps.origin[1],
                rows: [taps.rows.start, taps.rows.end],
                cols: [taps.cols.start, taps.cols.end],
                row_step: geometry.dilation[0] * width * c,
                channels: c,
                block: kc,
                kernel: geometry.kernel,
                stride: geometry.stride[1],
                dilation: geometry.dilation[1],
            };
            let window = (
                geometry.kernel[0],
                geometry.kernel[1],
                geometry.stride[1],
                geometry.dilation[1],
            );
            // SAFETY: `depthwise_run` checked that `isa` is supported (as the activations'
            // `#[target_feature]` needs) and every tap of the run is inside the input and the
            // weights; `x86::Run` is those checked sizes.
            unsafe {
                macro_rules! compiled {
                    ($kernel:ident: $(($kh:literal, $kw:literal, $sw:literal, $dw:literal))*) => {
                        match (window, c) {
                            $(
                                (($kh, $kw, $sw, $dw), 32) => x86::$kernel::<$kh, $kw, $sw, $dw, 32>(&args),
                                (($kh, $kw, $sw, $dw), 64) => x86::$kernel::<$kh, $kw, $sw, $dw, 64>(&args),
                                (($kh, $kw, $sw, $dw), 128) => x86::$kernel::<$kh, $kw, $sw, $dw, 128>(&args),
                                (($kh, $kw, $sw, $dw), 256) => x86::$kernel::<$kh, $kw, $sw, $dw, 256>(&args),
                                (($kh, $kw, $sw, $dw), 512) => x86::$kernel::<$kh, $kw, $sw, $dw, 512>(&args),
                                (($kh, $kw, $sw, $dw), 1024) => x86::$kernel::<$kh, $kw, $sw, $dw, 1024>(&args),
                                (($kh, $kw, $sw, $dw), _) => x86::$kernel::<$kh, $kw, $sw, $dw, 0>(&args),
                            )*
                            _ => x86::$kernel::<0, 0, 0, 0, 0>(&args),
                        }
                    };
                }
                if isa == Isa::Avx512 {
                    compiled!(run_avx512: (3, 3, 1, 1) (3, 3, 2, 1));
                    x86::activate_512(weights.activation, out);
                } else {
                    compiled!(run_avx2: (3, 3, 1, 1) (3, 3, 2, 1));
                    x86::activate_256(weights.activation, out);
                }
            }
            return;
        }
        portable_run(geometry, x, taps, weights, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{
        __m256, __m512, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::{Activation, activate_slice};

    /// `(1 << left) - 1` lanes, all 16 from 16 on.
    fn lanes(left: usize) -> u16 {
        if left >= 16 {
            u16::MAX
        } else {
            (1 << left) - 1
        }
    }

    /// Loads 16 lanes, or the lanes of `mask` unless `FULL`: a full load can be folded into the
    /// multiply-add that uses it, a masked one cannot.
    ///
    /// # Safety
    /// AVX-512F; the lanes read are inside an allocation.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load<const FULL: bool>(mask: u16, p: *const f32) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe {
            if FULL {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(mask, p)
            }
        }
    }

    /// Stores 16 lanes, or the lanes of `mask` unless `FULL`.
    ///
    /// # Safety
    /// AVX-512F; the lanes written are inside an allocation.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const FULL: bool>(mask: u16, p: *mut f32, v: __m512) {
        // SAFETY: the caller's contract.
        unsafe {
            if FULL {
                _mm512_storeu_ps(p, v);
            } else {
                _mm512_mask_storeu_ps(p, mask, v);
            }
        }
    }

    /// One run, multiplier 1.
    pub(super) struct Run {
        /// `pixels` blocks of `block` outputs.
        pub(super) out: *mut f32,
        /// Channel `kb * KC` of the input pixel in the row of tap `kh = rows[0]`, column 0.
        pub(super) input: *const f32,
        /// Channel `kb * KC` of weight `[0][0]` (channel stride `channels`).
        pub(super) weights: *const f32,
        /// Channel `kb * KC` of the bias, if there is one.
        pub(super) bias: Option<*const f32>,
        /// Output pixels of the run.
        pub(super) pixels: usize,
        /// Input column of tap `kw = cols[0]` of the first pixel.
        pub(super) col0: usize,
        /// `[first, end)` of the kernel rows whose taps are read.
        pub(super) rows: [usize; 2],
        /// `[first, end)` of the kernel columns whose taps are read.
        pub(super) cols: [usize; 2],
        /// Elements from one tap row to the next: `DH·W·C`.
        pub(super) row_step: usize,
        /// `C`: the input's and the weights' channel stride.
        pub(super) channels: usize,
        /// `KC`.
        pub(super) block: usize,
        /// `[KH, KW]`.
        pub(super) kernel: [usize; 2],
        /// `SW`.
        pub(super) stride: usize,
        /// `DW`.
        pub(super) dilation: usize,
    }

    /// `N`, or the run-time `n` when `N` is 0 (the kernels for the other windows).
    #[inline(always)]
    fn size<const N: usize>(n: usize) -> usize {
        if N == 0 { n } else { N }
    }

    /// The activation of a run's outputs, in a pass of its own while they are in L1 (a row of
    /// MobileNet's layers is 14-20 KiB). Clipping the sums in the kernels' stores instead ran
    /// the depthwise stage alone faster (mb1 with `relu6`: 151 against 166 us) but `forward`
    /// only about 1 %, cost the layers without an activation (mb7: 5 %) and grew a MobileNet
    /// binary by 80 KiB.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn activate_512(activation: Activation, out: &mut [f32]) {
        activate_slice(activation, out);
    }

    /// [`activate_512`] for AVX2.
    ///
    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn activate_256(activation: Activation, out: &mut [f32]) {
        activate_slice(activation, out);
    }

    /// Pixels computed together by the AVX-512 run.
    const GROUP512: usize = 8;
    /// Pixels computed together by the AVX2 run.
    const GROUP256: usize = 6;

    /// # Safety
    /// AVX-512F. Every tap of the run (row `(kh - rows[0]) · row_step`, column
    /// `col0 + p · SW + (kw - cols[0]) · DW` for `p < pixels` and `kh`, `kw` in `rows`,
    /// `cols`) is inside the input, the block inside the weights and the bias, `out` holds
    /// `pixels · block` floats; `KH`, `KW`, `SW`, `DW` are 0 or the run's.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_avx512<
        const KH: usize,
        const KW: usize,
        const SW: usize,
        const DW: usize,
        const C: usize,
    >(
        run: &Run,
    ) {
        // Pixel groups outermost: a group's input pixels are used for all their channels while
        // they are in L1, instead of the row being streamed once per 16 channels.
        let mut p = 0;
        while p < run.pixels {
            let group = GROUP512.min(run.pixels - p);
            // 16 channels at a time, with masks only for the last few.
            let mut c = 0;
            while c < run.block {
                let mask = lanes(run.block - c);
                // SAFETY: forwarded; lanes masked to the block, all 16 inside it when full.
                unsafe {
                    macro_rules! groups {
                        ($full:literal: $($g:literal)*) => {
                            match group {
                                $($g => group_avx512::<KH, KW, SW, DW, C, $g, $full>(run, c, p, mask),)*
                                _ => unreachable!("at most GROUP512 pixels per group"),
                            }
                        };
                    }
                    if c + 16 <= run.block {
                        groups!(true: 1 2 3 4 5 6 7 8);
                    } else {
                        groups!(false: 1 2 3 4 5 6 7 8);
                    }
                }
                c += 16;
            }
            p += group;
        }
    }

    /// `G` pixels from `p`, 16 channels from `c` (those of `mask` unless `FULL`).
    ///
    /// # Safety
    /// As `run_avx512`, with `p + G <= pixels`, and `c + 16 <= block` if `FULL`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn group_avx512<
        const KH: usize,
        const KW: usize,
        const SW: usize,
        const DW: usize,
        const C: usize,
        const G: usize,
        const FULL: bool,
    >(
        run: &Run,
        c: usize,
        p: usize,
        mask: u16,
    ) {
        let (kh_n, kw_n) = (size::<KH>(run.kernel[0]), size::<KW>(run.kernel[1]));
        let (sw, dw) = (size::<SW>(run.stride), size::<DW>(run.dilation));
        let (ch, kc) = (size::<C>(run.channels), run.block);
        // SAFETY: every offset is inside the buffers per the caller's contract.
        unsafe {
            let out = run.out;
            let init = match run.bias {
                Some(bias) => load::<FULL>(mask, bias.add(c)),
                None => _mm512_setzero_ps(),
            };
            let mut acc: [__m512; G] = [init; G];
            let ([r0, r1], [c0, c1]) = (run.rows, run.cols);
            // Every kernel row and column in turn, so that the loops unroll for literal sizes;
            // those outside the run's taps are skipped.
            for kh in 0..kh_n {
                if kh < r0 || kh >= r1 {
                    continue;
                }
                let row = run.input.add((kh - r0) * run.row_step + c);
                let taps = run.weights.add(kh * kw_n * ch + c);
                if KW != 0 && SW == 1 && DW != 0 && c0 == 0 && c1 == KW {
                    // A literal window at stride 1 with every column's taps: each input column
                    // is loaded once and multiplied by every tap that reads it (up to KW of
                    // them), instead of once per tap; the sums keep their order (kw
                    // ascending). Forward 1-4 % faster on mb1 to mb7. At stride 2 the same
                    // made mb2's depthwise stage slower (157 -> 186 us), so it keeps the loop
                    // below.
                    let wv: [__m512; KW] =
                        core::array::from_fn(|kw| load::<FULL>(mask, taps.add(kw * ch)));
                    let x = row.add((run.col0 + p) * ch);
                    for t in 0..G + (KW - 1) * DW {
                        let xv = load::<FULL>(mask, x.add(t * ch));
                        for (kw, wv) in wv.iter().enumerate() {
                            if let Some(j) = t.checked_sub(kw * DW)
                                && j < G
                            {
                                acc[j] = _mm512_fmadd_ps(xv, *wv, acc[j]);
                            }
                        }
                    }
                    continue;
                }
                for kw in 0..kw_n {
                    if kw < c0 || kw >= c1 {
                        continue;
                    }
                    let wv = load::<FULL>(mask, taps.add(kw * ch));
                    let x = row.add((run.col0 + p * sw + (kw - c0) * dw) * ch);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let xv = load::<FULL>(mask, x.add(j * sw * ch));
                        *acc = _mm512_fmadd_ps(xv, wv, *acc);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                store::<FULL>(mask, out.add((p + j) * kc + c), *acc);
            }
        }
    }

    /// # Safety
    /// As `run_avx512`, with AVX2 and FMA instead of AVX-512F.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2<
        const KH: usize,
        const KW: usize,
        const SW: usize,
        const DW: usize,
        const C: usize,
    >(
        run: &Run,
    ) {
        // Pixel groups outermost, as in `run_avx512`.
        let vectors = run.block / 8 * 8;
        let mut p = 0;
        while p < run.pixels {
            let group = GROUP256.min(run.pixels - p);
            let mut c = 0;
            while c < vectors {
                // SAFETY: forwarded; lanes `c .. c + 8` are inside the block.
                unsafe {
                    macro_rules! groups {
                        ($($g:literal)*) => {
                            match group {
                                $($g => group_avx2::<KH, KW, SW, DW, C, $g>(run, c, p),)*
                                _ => unreachable!("at most GROUP256 pixels per group"),
                            }
                        };
                    }
                    groups!(1 2 3 4 5 6);
                }
                c += 8;
            }
            p += group;
        }
        // The last channels, one at a time.
        let kw_n = size::<KW>(run.kernel[1]);
        let (sw, dw) = (size::<SW>(run.stride), size::<DW>(run.dilation));
        let (ch, kc) = (size::<C>(run.channels), run.block);
        for c in vectors..kc {
            for p in 0..run.pixels {
                // SAFETY: as above, for one lane.
                unsafe {
                    let mut sum = run.bias.map_or(0.0, |bias| *bias.add(c));
                    for kh in run.rows[0]..run.rows[1] {
                        for kw in run.cols[0]..run.cols[1] {
                            let row = (kh - run.rows[0]) * run.row_step;
                            let col = run.col0 + p * sw + (kw - run.cols[0]) * dw;
                            sum += *run.input.add(row + col * ch + c)
                                * *run.weights.add((kh * kw_n + kw) * ch + c);
                        }
                    }
                    *run.out.add(p * kc + c) = sum;
                }
            }
        }
    }

    /// # Safety
    /// As `run_avx2`, with `p + G <= pixels` and `c + 8 <= block`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn group_avx2<
        const KH: usize,
        const KW: usize,
        const SW: usize,
        const DW: usize,
        const C: usize,
        const G: usize,
    >(
        run: &Run,
        c: usize,
        p: usize,
    ) {
        let (kh_n, kw_n) = (size::<KH>(run.kernel[0]), size::<KW>(run.kernel[1]));
        let (sw, dw) = (size::<SW>(run.stride), size::<DW>(run.dilation));
        let (ch, kc) = (size::<C>(run.channels), run.block);
        // SAFETY: every offset is inside the buffers per the caller's contract.
        unsafe {
            let out = run.out;
            let init = match run.bias {
                Some(bias) => _mm256_loadu_ps(bias.add(c)),
                None => _mm256_setzero_ps(),
            };
            let mut acc: [__m256; G] = [init; G];
            let ([r0, r1], [c0, c1]) = (run.rows, run.cols);
            for kh in 0..kh_n {
                if kh < r0 || kh >= r1 {
                    continue;
                }
                let row = run.input.add((kh - r0) * run.row_step + c);
                let taps = run.weights.add(kh * kw_n * ch + c);
                if KW != 0 && SW == 1 && DW != 0 && c0 == 0 && c1 == KW {
                    // Each input column loaded once, as in `group_avx512`.
                    let wv: [__m256; KW] =
                        core::array::from_fn(|kw| _mm256_loadu_ps(taps.add(kw * ch)));
                    let x = row.add((run.col0 + p) * ch);
                    for t in 0..G + (KW - 1) * DW {
                        let xv = _mm256_loadu_ps(x.add(t * ch));
                        for (kw, wv) in wv.iter().enumerate() {
                            if let Some(j) = t.checked_sub(kw * DW)
                                && j < G
                            {
                                acc[j] = _mm256_fmadd_ps(xv, *wv, acc[j]);
                            }
                        }
                    }
                    continue;
                }
                for kw in 0..kw_n {
                    if kw < c0 || kw >= c1 {
                        continue;
                    }
                    let wv = _mm256_loadu_ps(taps.add(kw * ch));
                    let x = row.add((run.col0 + p * sw + (kw - c0) * dw) * ch);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let xv = _mm256_loadu_ps(x.add(j * sw * ch));
                        *acc = _mm256_fmadd_ps(xv, wv, *acc);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add((p + j) * kc + c), *acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// An input, weights and a bias of small integers (every sum exact in any order).
    fn data(g: &Geometry) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let [h, w, c] = g.input;
        let cm = c * g.multiplier;
        let x = (0..h * w * c)
            .map(|i| ((i * 7 + i / c * 31) % 11) as f32 - 5.0)
            .collect();
        let weights = (0..g.kernel[0] * g.kernel[1] * cm)
            .map(|i| ((i * 3 + i / cm * 5) % 7) as f32 - 3.0)
            .collect();
        let bias = (0..cm).map(|k| (k % 13) as f32).collect();
        (x, weights, bias)
    }

    /// A plain sum over the taps `rows x cols` from input pixel `origin`, block `kb`, onto the
    /// bias (or zero).
    fn expected(
        g: &Geometry,
        (x, w, bias): (&[f32], &[f32], Option<&[f32]>),
        (rows, cols): (core::ops::Range<usize>, core::ops::Range<usize>),
        origin: [usize; 2],
        kb: usize,
    ) -> Vec<f32> {
        let [_, width, c] = g.input;
        let (m, kc) = (g.multiplier, g.block);
        (0..kc)
            .map(|k| {
                let (co, ci) = (kb * kc + k, (kb * kc + k) / m);
                let mut sum = bias.map_or(0.0, |b| b[co]);
                for (i, kh) in rows.clone().enumerate() {
                    for (j, kw) in cols.clone().enumerate() {
                        let (r, col) =
                            (origin[0] + i * g.dilation[0], origin[1] + j * g.dilation[1]);
                        sum +=
                            x[(r * width + col) * c + ci] * w[(kh * g.kernel[1] + kw) * c * m + co];
                    }
                }
                sum
            })
            .collect()
    }

    fn isas() -> impl Iterator<Item = Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_supported())
    }

    /// The windows the tests run: the literal ones and others.
    const WINDOWS: [([usize; 2], [usize; 2], [usize; 2]); 7] = [
        ([3, 3], [1, 1], [1, 1]),
        ([3, 3], [2, 2], [1, 1]),
        ([3, 3], [1, 1], [2, 2]),
        ([3, 3], [3, 3], [2, 2]),
        ([5, 5], [1, 1], [1, 1]),
        ([1, 1], [2, 2], [1, 1]),
        ([2, 4], [1, 2], [3, 1]),
    ];

    /// Every path, over channel counts around the vector widths, run lengths around the pixel
    /// groups, the windows with literal sizes and others, sub-windows of taps, with and
    /// without a bias and an activation, against a plain sum.
    fn check(c: usize, m: usize, kc: usize) {
        for (kernel, stride, dilation) in WINDOWS {
            let g = Geometry {
                input: [9, 40, c],
                multiplier: m,
                block: kc,
                kernel,
                stride,
                dilation,
                padding: [0, 0],
            };
            let (x, w, bias) = data(&g);
            let [kh, kw] = kernel;
            let sub_rows = [0..kh, 1..kh, 0..1, 0..0];
            let sub_cols = [0..kw, 0..kw - 1, 1..kw];
            for isa in isas() {
                for (rows, cols) in sub_rows
                    .iter()
                    .flat_map(|r| sub_cols.iter().map(move |c| (r.clone(), c.clone())))
                {
                    for (row0, col0) in [(0, 0), (1, 3), (0, 1)] {
                        for pixels in [0_usize, 1, 5, 6, 7, 8, 9, 13, 17] {
                            let reach = col0
                                + pixels.saturating_sub(1) * stride[1]
                                + cols.len().saturating_sub(1) * dilation[1];
                            let bottom = row0 + rows.len().saturating_sub(1) * dilation[0];
                            if reach >= 40 || bottom >= 9 {
                                continue;
                            }
                            let stages = [
                                (Some(&bias[..]), Activation::None),
                                (None, Activation::None),
                                (Some(&bias[..]), Activation::Relu6),
                                (None, Activation::Relu),
                            ];
                            let blocks = (0..c * m / kc).flat_map(|kb| stages.map(|s| (kb, s)));
                            for (kb, (bias, activation)) in blocks {
                                let taps = Taps {
                                    rows: rows.clone(),
                                    cols: cols.clone(),
                                    origin: [row0, col0],
                                    kb,
                                };
                                let weights = DepthwiseWeights {
                                    taps: &w,
                                    bias,
                                    activation,
                                };
                                // Written, not added to: whatever `out` held is gone.
                                let mut out = vec![f32::NAN; pixels * kc];
                                depthwise_run(isa, &g, &x, &taps, &weights, &mut out);
                                let mut want: Vec<f32> = (0..pixels)
                                    .flat_map(|p| {
                                        expected(
                                            &g,
                                            (&x, &w, bias),
                                            (rows.clone(), cols.clone()),
                                            [row0, col0 + p * stride[1]],
                                            kb,
                                        )
                                    })
                                    .collect();
                                activate_slice(activation, &mut want);
                                assert_eq!(
                                    out, want,
                                    "{isa:?} {g:?} {taps:?} {activation:?} pixels {pixels}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_isa_matches_a_plain_sum() {
        check(1, 1, 1);
        check(3, 1, 3);
        check(15, 1, 15);
        check(16, 1, 16);
        check(17, 1, 17);
        check(33, 1, 33);
        check(64, 1, 32);
        check(3, 2, 6);
        check(8, 3, 12);
    }

    /// Whole rows with padding on every side, including rows and columns that see only
    /// padding, against a plain sum over the taps inside the input.
    #[test]
    fn rows_sum_the_taps_inside_the_input() {
        for (kernel, stride, dilation) in WINDOWS {
            for padding in [[1, 1], [0, 2], [3, 4]] {
                let g = Geometry {
                    input: [5, 11, 17],
                    multiplier: 1,
                    block: 17,
                    kernel,
                    stride,
                    dilation,
                    padding,
                };
                let (x, w, bias) = data(&g);
                let axis = |o: usize, a: usize| {
                    separable_shape::tap_range(
                        o,
                        stride[a],
                        dilation[a],
                        padding[a],
                        g.input[a],
                        kernel[a],
                    )
                };
                // Output sizes with the padding on both sides.
                let size = |a: usize| {
                    (g.input[a] + 2 * padding[a]).saturating_sub((kernel[a] - 1) * dilation[a] + 1)
                        / stride[a]
                        + 1
                };
                let (oh, ow) = (size(0), size(1));
                let interior: Vec<usize> =
                    (0..ow).filter(|&o| axis(o, 1) == (0, kernel[1])).collect();
                let interior_cols = match (interior.first(), interior.last()) {
                    (Some(&a), Some(&b)) => [a, b + 1],
                    _ => [0, 0],
                };
                for isa in isas() {
                    for output_row in 0..oh {
                        let row = Row {
                            output_row,
                            kb: 0,
                            interior_cols,
                        };
                        let weights = DepthwiseWeights {
                            taps: &w,
                            bias: Some(&bias),
                            activation: Activation::None,
                        };
                        let mut out = vec![f32::NAN; ow * 17];
                        depthwise_row(isa, &g, &x, &weights, &row, &mut out);
                        let (lo, hi) = axis(output_row, 0);
                        let want: Vec<f32> = (0..ow)
                            .flat_map(|o| {
                                let (left, right) = axis(o, 1);
                                let origin = [
                                    (output_row * stride[0] + lo * dilation[0])
                                        .saturating_sub(padding[0]),
                                    (o * stride[1] + left * dilation[1]).saturating_sub(padding[1]),
                                ];
                                expected(
                                    &g,
                                    (&x, &w, Some(&bias)),
                                    (lo..hi, left..right),
                                    origin,
                                    0,
                                )
                            })
                            .collect();
                        assert_eq!(out, want, "{isa:?} {g:?} row {output_row}");
                    }
                }
            }
        }
    }

    /// A NaN in the input reaches the outputs whose windows read it through every path's
    /// activation, which clips the sums around it to zero.
    #[test]
    fn nan_survives_the_activation() {
        let g = Geometry {
            input: [3, 20, 17],
            block: 17,
            ..tiny()
        };
        let mut x = vec![1.0f32; 3 * 20 * 17];
        x[(20 + 9) * 17 + 5] = f32::NAN;
        let w = vec![-1.0f32; 9 * 17];
        let taps = Taps {
            rows: 0..3,
            cols: 0..3,
            origin: [0, 0],
            kb: 0,
        };
        for isa in isas() {
            for activation in [Activation::Relu, Activation::Relu6] {
                let weights = DepthwiseWeights {
                    taps: &w,
                    bias: None,
                    activation,
                };
                let mut out = vec![1.0f32; 18 * 17];
                depthwise_run(isa, &g, &x, &taps, &weights, &mut out);
                for (i, &v) in out.iter().enumerate() {
                    let (p, c) = (i / 17, i % 17);
                    if c == 5 && (7..=9).contains(&p) {
                        assert!(v.is_nan(), "{isa:?} {activation:?} pixel {p}: {v}");
                    } else {
                        assert_eq!(v, 0.0, "{isa:?} {activation:?} pixel {p} channel {c}");
                    }
                }
            }
        }
    }

    fn tiny() -> Geometry {
        Geometry {
            input: [3, 4, 1],
            multiplier: 1,
            block: 1,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            padding: [0, 0],
        }
    }

    /// A run of `pixels` pixels over `rows x cols` from `origin` on a 3 x 4 x 1 input.
    fn run_tiny(
        (rows, cols): (core::ops::Range<usize>, core::ops::Range<usize>),
        origin: [usize; 2],
        bias: Option<&[f32]>,
        pixels: usize,
    ) {
        let (x, w) = (vec![0.0f32; 12], vec![0.0f32; 9]);
        let taps = Taps {
            rows,
            cols,
            origin,
            kb: 0,
        };
        let weights = DepthwiseWeights {
            taps: &w,
            bias,
            activation: Activation::None,
        };
        let mut out = vec![0.0f32; pixels];
        depthwise_run(Isa::Portable, &tiny(), &x, &taps, &weights, &mut out);
    }

    #[test]
    #[should_panic(expected = "run reaches column")]
    fn a_run_past_the_row_is_refused() {
        run_tiny((0..3, 0..3), [0, 1], None, 2);
    }

    #[test]
    #[should_panic(expected = "run reaches past the last row")]
    fn a_run_past_the_input_is_refused() {
        run_tiny((0..3, 0..2), [1, 0], None, 1);
    }

    #[test]
    #[should_panic(expected = "taps outside the kernel")]
    fn taps_outside_the_kernel_are_refused() {
        run_tiny((0..1, 2..4), [0, 0], None, 1);
    }

    #[test]
    #[should_panic(expected = "bias has the wrong length")]
    fn a_short_bias_is_refused() {
        run_tiny((0..0, 0..0), [0, 0], Some(&[]), 1);
    }

    #[test]
    #[should_panic(expected = "interior columns reach the padding")]
    fn an_interior_on_the_padding_is_refused() {
        let mut g = tiny();
        g.padding = [1, 1];
        let (x, w) = (vec![0.0f32; 12], vec![0.0f32; 9]);
        let weights = DepthwiseWeights {
            taps: &w,
            bias: None,
            activation: Activation::None,
        };
        let row = Row {
            output_row: 1,
            kb: 0,
            interior_cols: [0, 2],
        };
        depthwise_row(Isa::Portable, &g, &x, &weights, &row, &mut [0.0f32; 4]);
    }
}

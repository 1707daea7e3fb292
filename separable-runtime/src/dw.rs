//! The depthwise microkernels: the interior run of a row of output pixels, and one border
//! pixel, over a block of channels.
//!
//! `acc[c·M + m] += sum over taps t of x[t][c] * w[t][c·M + m]`. Every size is a run-time
//! value ([`Geometry`]), so the kernels are compiled once, in this crate, whatever layers a
//! program declares. With multiplier 1 and `f32`, the AVX-512 and AVX2 paths keep a group of
//! pixels' accumulators in registers across all taps and use fused multiply-adds; they are
//! compiled with the kernel size and the stride as literals for the 3 x 3 windows of stride 1
//! and 2 ([`COMPILED_WINDOWS`]), and with the channel count too for [`COMPILED_CHANNELS`], and
//! read them from the geometry otherwise. Everything else runs
//! the portable loop, which the compiler vectorises.

use crate::Element;
use crate::gemm::Isa;

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

/// Adds the depthwise window sums of a run of adjacent output pixels in one row, all of whose
/// taps are inside the input (the interior of a row), to `out`: `KC` values per pixel, holding
/// their biases. `x` is the whole input (`H·W·C`, HWC), `w` the weights (`[KH][KW][C·M]`);
/// tap `(kh, kw)` of pixel `p` reads input pixel
/// `(origin[0] + kh·DH, origin[1] + p·SW + kw·DW)`, channels of block `kb`.
///
/// Several pixels are computed together so their accumulators form independent chains that
/// keep the FMA units busy.
///
/// # Panics
/// If `isa` is not supported by this CPU, a tap of the run falls outside the input, the
/// slices do not have the geometry's sizes, or the block is outside the channels (generated
/// code never does any of these).
#[inline]
pub fn depthwise_run<T: DepthwiseKernels>(
    isa: Isa,
    geometry: &Geometry,
    x: &[T],
    origin: [usize; 2],
    kb: usize,
    w: &[T],
    out: &mut [T],
) {
    geometry.check(x.len(), w.len(), kb);
    assert!(
        out.len().is_multiple_of(geometry.block),
        "output is not whole pixels"
    );
    let pixels = out.len() / geometry.block;
    if pixels == 0 {
        return;
    }
    let [h, width, _] = geometry.input;
    let [kh, kw] = geometry.kernel;
    assert!(kh > 0 && kw > 0, "empty kernel");
    let bottom = last(origin[0], kh, geometry.dilation[0]);
    assert!(
        bottom.is_some_and(|r| r < h),
        "run reaches past the last row"
    );
    let reach = last(origin[1], pixels, geometry.stride[1])
        .and_then(|col| col.checked_add((kw - 1).checked_mul(geometry.dilation[1])?));
    assert!(
        reach.is_some_and(|col| col < width),
        "run reaches column {reach:?} of {width}"
    );
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    // SAFETY: every condition of `DepthwiseKernels::depthwise_run` was asserted above.
    unsafe { T::depthwise_run(isa, geometry, x, origin, kb, w, out) };
}

/// The taps of one border pixel that land inside the input: kernel rows `rows` and columns
/// `cols`, tap `(rows.start, cols.start)` reading input pixel `origin`; channel block `kb`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taps {
    /// Kernel rows inside the input.
    pub rows: core::ops::Range<usize>,
    /// Kernel columns inside the input.
    pub cols: core::ops::Range<usize>,
    /// Input `[row, column]` of the first tap.
    pub origin: [usize; 2],
    /// Channel block.
    pub kb: usize,
}

/// Adds one border pixel's in-bounds taps to `acc` (`KC` values, holding its bias); `x` and
/// `w` as for [`depthwise_run`].
///
/// # Panics
/// If `isa` is not supported by this CPU, a tap falls outside the input or the weights, or
/// the slices do not have the geometry's sizes (generated code never does any of these).
#[inline]
pub fn depthwise_pixel<T: DepthwiseKernels>(
    isa: Isa,
    geometry: &Geometry,
    x: &[T],
    taps: &Taps,
    w: &[T],
    acc: &mut [T],
) {
    geometry.check(x.len(), w.len(), taps.kb);
    assert_eq!(acc.len(), geometry.block, "acc is not one block");
    if taps.rows.is_empty() || taps.cols.is_empty() {
        return;
    }
    assert!(
        taps.rows.end <= geometry.kernel[0] && taps.cols.end <= geometry.kernel[1],
        "taps outside the kernel"
    );
    let [h, width, _] = geometry.input;
    let bottom = last(taps.origin[0], taps.rows.len(), geometry.dilation[0]);
    let right = last(taps.origin[1], taps.cols.len(), geometry.dilation[1]);
    assert!(
        bottom.is_some_and(|r| r < h) && right.is_some_and(|c| c < width),
        "taps outside the input"
    );
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    // SAFETY: every condition of `DepthwiseKernels::depthwise_pixel` was asserted above.
    unsafe { T::depthwise_pixel(isa, geometry, x, taps, w, acc) };
}

/// Adds the in-bounds taps of the border pixels `cols` of output row `oh` to `out` (`KC`
/// values per pixel, holding their biases); `x` and `w` as for [`depthwise_run`]. The taps of
/// each pixel are those `tap_range` finds inside the input.
///
/// # Panics
/// If `isa` is not supported by this CPU, `out` is not one block per pixel, or the slices do
/// not have the geometry's sizes.
#[allow(clippy::too_many_arguments)] // the layer, its buffers and the row's position
pub fn depthwise_border<T: DepthwiseKernels>(
    isa: Isa,
    geometry: &Geometry,
    x: &[T],
    oh: usize,
    cols: core::ops::Range<usize>,
    kb: usize,
    w: &[T],
    out: &mut [T],
) {
    geometry.check(x.len(), w.len(), kb);
    let kc = geometry.block;
    assert_eq!(
        Some(out.len()),
        cols.len().checked_mul(kc),
        "out is not one block per pixel"
    );
    if cols.is_empty() {
        return;
    }
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    let (g, [h, width, _]) = (geometry, geometry.input);
    let (lo, hi) =
        separable_shape::tap_range(oh, g.stride[0], g.dilation[0], g.padding[0], h, g.kernel[0]);
    if lo == hi {
        return;
    }
    // The first in-bounds tap's input row and column: non-negative, as `tap_range` admits only
    // taps inside the input.
    let row0 = (oh * g.stride[0] + lo * g.dilation[0]).saturating_sub(g.padding[0]);
    for (ow, acc) in cols.zip(out.chunks_exact_mut(kc)) {
        let (left, right) = separable_shape::tap_range(
            ow,
            g.stride[1],
            g.dilation[1],
            g.padding[1],
            width,
            g.kernel[1],
        );
        if left == right {
            continue;
        }
        let col0 = (ow * g.stride[1] + left * g.dilation[1]).saturating_sub(g.padding[1]);
        let taps = Taps {
            rows: lo..hi,
            cols: left..right,
            origin: [row0, col0],
            kb,
        };
        let bottom = last(row0, hi - lo, g.dilation[0]);
        let end = last(col0, right - left, g.dilation[1]);
        assert!(
            hi <= g.kernel[0]
                && right <= g.kernel[1]
                && bottom.is_some_and(|r| r < h)
                && end.is_some_and(|c| c < width),
            "taps outside the input"
        );
        // SAFETY: the geometry, the slices and `isa` were checked above, and the taps of this
        // pixel just now: the conditions of `DepthwiseKernels::depthwise_pixel`.
        unsafe { T::depthwise_pixel(isa, g, x, &taps, w, acc) };
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
        origin: [usize; 2],
        kb: usize,
        w: &[Self],
        out: &mut [Self],
    );

    /// See [`depthwise_pixel`].
    ///
    /// # Safety
    /// `isa` is supported by this CPU and the arguments pass [`depthwise_pixel`]'s checks.
    unsafe fn depthwise_pixel(
        isa: Isa,
        geometry: &Geometry,
        x: &[Self],
        taps: &Taps,
        w: &[Self],
        acc: &mut [Self],
    );
}

/// The portable border pixel: every in-bounds tap over the block's channels.
fn portable_pixel<T: Element>(g: &Geometry, x: &[T], taps: &Taps, w: &[T], acc: &mut [T]) {
    let [_, width, c] = g.input;
    let (m, kc, kw_n) = (g.multiplier, g.block, g.kernel[1]);
    let cm = c * m;
    let (ci0, co0) = (taps.kb * (kc / m), taps.kb * kc);
    for (i, kh) in taps.rows.clone().enumerate() {
        let row = taps.origin[0] + i * g.dilation[0];
        for (j, kw) in taps.cols.clone().enumerate() {
            let col = taps.origin[1] + j * g.dilation[1];
            let pixel = &x[(row * width + col) * c + ci0..][..kc / m];
            let weights = &w[(kh * kw_n + kw) * cm + co0..][..kc];
            for ((acc, wv), &xv) in acc
                .chunks_exact_mut(m)
                .zip(weights.chunks_exact(m))
                .zip(pixel)
            {
                for (a, &wv) in acc.iter_mut().zip(wv) {
                    *a = *a + xv * wv;
                }
            }
        }
    }
}

/// Pixels per group of the portable run.
const PORTABLE_GROUP: usize = 4;

/// The portable run: groups of pixels, taps outermost, channels innermost (vectorised).
fn portable_run<T: Element>(
    g: &Geometry,
    x: &[T],
    origin: [usize; 2],
    kb: usize,
    w: &[T],
    out: &mut [T],
) {
    let [_, width, c] = g.input;
    let (m, kc, [kh_n, kw_n]) = (g.multiplier, g.block, g.kernel);
    let cm = c * m;
    let (sw, [dh, dw]) = (g.stride[1], g.dilation);
    let (ci0, co0) = (kb * (kc / m), kb * kc);
    for (gi, group) in out.chunks_mut(PORTABLE_GROUP * kc).enumerate() {
        let p0 = gi * PORTABLE_GROUP;
        for kh in 0..kh_n {
            let row = &x[(origin[0] + kh * dh) * width * c..][..width * c];
            for kw in 0..kw_n {
                let wtap = &w[(kh * kw_n + kw) * cm + co0..][..kc];
                for (j, acc) in group.chunks_exact_mut(kc).enumerate() {
                    let col = origin[1] + (p0 + j) * sw + kw * dw;
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
    }
}

impl DepthwiseKernels for f64 {
    unsafe fn depthwise_run(
        _: Isa,
        geometry: &Geometry,
        x: &[f64],
        origin: [usize; 2],
        kb: usize,
        w: &[f64],
        out: &mut [f64],
    ) {
        portable_run(geometry, x, origin, kb, w, out);
    }

    unsafe fn depthwise_pixel(
        _: Isa,
        geometry: &Geometry,
        x: &[f64],
        taps: &Taps,
        w: &[f64],
        acc: &mut [f64],
    ) {
        portable_pixel(geometry, x, taps, w, acc);
    }
}

impl DepthwiseKernels for f32 {
    unsafe fn depthwise_run(
        isa: Isa,
        geometry: &Geometry,
        x: &[f32],
        origin: [usize; 2],
        kb: usize,
        w: &[f32],
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if geometry.multiplier == 1 && isa != Isa::Portable {
            let [_, width, c] = geometry.input;
            let kc = geometry.block;
            let args = x86::Run {
                out: out.as_mut_ptr(),
                // Channel `kb * KC` of input pixel `(origin[0], 0)`; with multiplier 1 the
                // weights' channel stride `C·M` is `C`.
                input: x[(origin[0] * width) * c + kb * kc..].as_ptr(),
                weights: w[kb * kc..].as_ptr(),
                pixels: out.len() / kc,
                col0: origin[1],
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
            // SAFETY: the caller's contract: `depthwise_run` checked that every tap of the run
            // is inside the input, the block inside the weights and `out` whole pixels, and
            // that this CPU supports `isa`.
            unsafe {
                // The compiled windows, each also for the channel counts of `COMPILED_CHANNELS`
                // (every offset of the taps a literal), then the same code with run-time sizes.
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
                } else {
                    compiled!(run_avx2: (3, 3, 1, 1) (3, 3, 2, 1));
                }
            }
            return;
        }
        portable_run(geometry, x, origin, kb, w, out);
    }

    unsafe fn depthwise_pixel(
        isa: Isa,
        geometry: &Geometry,
        x: &[f32],
        taps: &Taps,
        w: &[f32],
        acc: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if geometry.multiplier == 1 && isa == Isa::Avx512 {
            let kc = geometry.block;
            let input = x[taps.kb * kc..].as_ptr();
            let weights = w[taps.kb * kc..].as_ptr();
            // SAFETY: `depthwise_pixel` checked every tap against the input and the weights
            // and the block against both; `isa` is supported (the caller's contract).
            unsafe {
                x86::pixel_avx512(acc, input, weights, geometry, taps);
            }
            return;
        }
        portable_pixel(geometry, x, taps, w, acc);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{
        __m256, __m512, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm512_fmadd_ps,
        _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_storeu_ps,
    };

    use super::{Geometry, Taps};

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

    /// One border pixel: the taps `taps.rows x taps.cols`, 16 channels at a time.
    ///
    /// # Safety
    /// AVX-512F, multiplier 1; `input` points at channel `kb * KC` of input pixel `(0, 0)` of
    /// the geometry's input, `weights` at channel `kb * KC` of weight `[0][0]`, and every tap of
    /// `taps` is inside both; `acc` holds `KC` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pixel_avx512(
        acc: &mut [f32],
        input: *const f32,
        weights: *const f32,
        g: &Geometry,
        taps: &Taps,
    ) {
        let [_, width, c] = g.input;
        let (kc, kw_n, [dh, dw]) = (g.block, g.kernel[1], g.dilation);
        let acc = acc.as_mut_ptr();
        let sizes = [width, c, kw_n, dh, dw];
        let mut ch = 0;
        while ch < kc {
            let mask = lanes(kc - ch);
            // SAFETY: per the caller's contract; `FULL` only for 16 channels inside the block.
            unsafe {
                let (a, x, w) = (acc.add(ch), input.add(ch), weights.add(ch));
                if ch + 16 <= kc {
                    pixel_lanes::<true>(a, x, w, taps, sizes, mask);
                } else {
                    pixel_lanes::<false>(a, x, w, taps, sizes, mask);
                }
            }
            ch += 16;
        }
    }

    /// 16 channels (those of `mask` unless `FULL`) of one border pixel.
    ///
    /// # Safety
    /// As `pixel_avx512`, with `acc`, `input` and `weights` moved to the first of the channels.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pixel_lanes<const FULL: bool>(
        acc: *mut f32,
        input: *const f32,
        weights: *const f32,
        taps: &Taps,
        [width, c, kw_n, dh, dw]: [usize; 5],
        mask: u16,
    ) {
        // SAFETY: per the caller's contract.
        unsafe {
            let mut sum = load::<FULL>(mask, acc);
            for (i, kh) in taps.rows.clone().enumerate() {
                let row = taps.origin[0] + i * dh;
                for (j, kw) in taps.cols.clone().enumerate() {
                    let col = taps.origin[1] + j * dw;
                    let xv = load::<FULL>(mask, input.add((row * width + col) * c));
                    let wv = load::<FULL>(mask, weights.add((kh * kw_n + kw) * c));
                    sum = _mm512_fmadd_ps(xv, wv, sum);
                }
            }
            store::<FULL>(mask, acc, sum);
        }
    }

    /// One interior run, multiplier 1.
    pub(super) struct Run {
        /// `pixels` blocks of `block` accumulators.
        pub(super) out: *mut f32,
        /// Channel `kb * KC` of the input pixel in the row of tap `kh = 0`, column 0.
        pub(super) input: *const f32,
        /// Channel `kb * KC` of weight `[0][0]` (channel stride `channels`).
        pub(super) weights: *const f32,
        /// Output pixels of the run.
        pub(super) pixels: usize,
        /// Input column of tap `kw = 0` of the first pixel.
        pub(super) col0: usize,
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

    /// Pixels computed together by the AVX-512 run.
    const GROUP512: usize = 8;
    /// Pixels computed together by the AVX2 run.
    const GROUP256: usize = 6;

    /// # Safety
    /// AVX-512F. Every tap of the run (row `kh · row_step`, column
    /// `col0 + p · SW + kw · DW` for `p < pixels`, `kh < KH`, `kw < KW`) is inside the input,
    /// the block inside the weights, `out` holds `pixels · block` floats; `KH`, `KW`, `SW`,
    /// `DW` are 0 or the run's.
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
            let mut acc: [__m512; G] = [_mm512_maskz_loadu_ps(0, out); G];
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = load::<FULL>(mask, out.add((p + j) * kc + c));
            }
            for kh in 0..kh_n {
                let row = run.input.add(kh * run.row_step + c);
                let taps = run.weights.add(kh * kw_n * ch + c);
                for kw in 0..kw_n {
                    let wv = load::<FULL>(mask, taps.add(kw * ch));
                    let x = row.add((run.col0 + p * sw + kw * dw) * ch);
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
        let (kh_n, kw_n) = (size::<KH>(run.kernel[0]), size::<KW>(run.kernel[1]));
        let (sw, dw) = (size::<SW>(run.stride), size::<DW>(run.dilation));
        let (ch, kc) = (size::<C>(run.channels), run.block);
        for c in vectors..kc {
            for p in 0..run.pixels {
                // SAFETY: as above, for one lane.
                unsafe {
                    let o = run.out.add(p * kc + c);
                    let mut sum = *o;
                    for kh in 0..kh_n {
                        for kw in 0..kw_n {
                            let col = run.col0 + p * sw + kw * dw;
                            sum += *run.input.add(kh * run.row_step + col * ch + c)
                                * *run.weights.add((kh * kw_n + kw) * ch + c);
                        }
                    }
                    *o = sum;
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
            let mut acc: [__m256; G] = [_mm256_loadu_ps(out); G];
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_loadu_ps(out.add((p + j) * kc + c));
            }
            for kh in 0..kh_n {
                let row = run.input.add(kh * run.row_step + c);
                let taps = run.weights.add(kh * kw_n * ch + c);
                for kw in 0..kw_n {
                    let wv = _mm256_loadu_ps(taps.add(kw * ch));
                    let x = row.add((run.col0 + p * sw + kw * dw) * ch);
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

    /// An input and weights of small integers (every sum exact in any order).
    fn data(g: &Geometry) -> (Vec<f32>, Vec<f32>) {
        let [h, w, c] = g.input;
        let cm = c * g.multiplier;
        let x = (0..h * w * c)
            .map(|i| ((i * 7 + i / c * 31) % 11) as f32 - 5.0)
            .collect();
        let weights = (0..g.kernel[0] * g.kernel[1] * cm)
            .map(|i| ((i * 3 + i / cm * 5) % 7) as f32 - 3.0)
            .collect();
        (x, weights)
    }

    /// A plain sum over the taps `rows x cols` from input pixel `origin`, block `kb`, onto `bias`.
    fn expected(
        g: &Geometry,
        (x, w): (&[f32], &[f32]),
        (rows, cols): (core::ops::Range<usize>, core::ops::Range<usize>),
        origin: [usize; 2],
        kb: usize,
        bias: &[f32],
    ) -> Vec<f32> {
        let [_, width, c] = g.input;
        let (m, kc) = (g.multiplier, g.block);
        (0..kc)
            .map(|k| {
                let (co, ci) = (kb * kc + k, (kb * kc + k) / m);
                let mut sum = bias[k];
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

    /// Every path, over channel counts around the vector widths, run lengths around the pixel
    /// groups, the windows with literal sizes and others, against a plain sum.
    fn check(c: usize, m: usize, kc: usize) {
        for (kernel, stride, dilation) in [
            ([3, 3], [1, 1], [1, 1]),
            ([3, 3], [2, 2], [1, 1]),
            ([3, 3], [1, 1], [2, 2]),
            ([3, 3], [3, 3], [2, 2]),
            ([5, 5], [1, 1], [1, 1]),
            ([1, 1], [2, 2], [1, 1]),
            ([2, 4], [1, 2], [3, 1]),
        ] {
            let g = Geometry {
                input: [9, 40, c],
                multiplier: m,
                block: kc,
                kernel,
                stride,
                dilation,
                padding: [0, 0],
            };
            let (x, w) = data(&g);
            let bias: Vec<f32> = (0..kc).map(|k| k as f32).collect();
            for isa in isas() {
                for (row0, col0) in [(0, 0), (1, 3), (0, 1)] {
                    for pixels in [0_usize, 1, 5, 6, 7, 8, 9, 13, 17] {
                        let reach = col0
                            + pixels.saturating_sub(1) * stride[1]
                            + (kernel[1] - 1) * dilation[1];
                        if reach >= 40 || row0 + (kernel[0] - 1) * dilation[0] >= 9 {
                            continue;
                        }
                        for kb in 0..c * m / kc {
                            let mut out: Vec<f32> = bias.repeat(pixels);
                            depthwise_run(isa, &g, &x, [row0, col0], kb, &w, &mut out);
                            let want: Vec<f32> = (0..pixels)
                                .flat_map(|p| {
                                    expected(
                                        &g,
                                        (&x, &w),
                                        (0..kernel[0], 0..kernel[1]),
                                        [row0, col0 + p * stride[1]],
                                        kb,
                                        &bias,
                                    )
                                })
                                .collect();
                            assert_eq!(
                                out, want,
                                "{isa:?} {g:?} run {row0}/{col0} pixels {pixels} block {kb}"
                            );
                        }
                    }
                }
                // Border pixels: every sub-window of taps.
                for rows in [0..kernel[0], 1..kernel[0], 0..1] {
                    for cols in [0..kernel[1], 0..kernel[1] - 1, 1..kernel[1]] {
                        for kb in 0..c * m / kc {
                            let origin = [1, 2];
                            let taps = Taps {
                                rows: rows.clone(),
                                cols: cols.clone(),
                                origin,
                                kb,
                            };
                            let mut acc = bias.clone();
                            depthwise_pixel(isa, &g, &x, &taps, &w, &mut acc);
                            let want = expected(
                                &g,
                                (&x, &w),
                                (rows.clone(), cols.clone()),
                                origin,
                                kb,
                                &bias,
                            );
                            assert_eq!(acc, want, "{isa:?} {g:?} taps {taps:?}");
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

    #[test]
    #[should_panic(expected = "run reaches column")]
    fn a_run_past_the_row_is_refused() {
        let g = Geometry {
            input: [3, 4, 1],
            multiplier: 1,
            block: 1,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            padding: [0, 0],
        };
        let (x, w) = (vec![0.0f32; 12], vec![0.0f32; 9]);
        let mut out = [0.0f32; 2];
        depthwise_run(Isa::Portable, &g, &x, [0, 1], 0, &w, &mut out);
    }

    #[test]
    #[should_panic(expected = "taps outside the input")]
    fn a_border_pixel_past_the_input_is_refused() {
        let g = Geometry {
            input: [3, 4, 1],
            multiplier: 1,
            block: 1,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            padding: [0, 0],
        };
        let (x, w) = (vec![0.0f32; 12], vec![0.0f32; 9]);
        let taps = Taps {
            rows: 0..3,
            cols: 0..2,
            origin: [1, 0],
            kb: 0,
        };
        depthwise_pixel(Isa::Portable, &g, &x, &taps, &w, &mut [0.0f32]);
    }
}

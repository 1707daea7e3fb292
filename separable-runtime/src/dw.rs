//! The depthwise window microkernel: all taps of one output pixel over a block of channels.
//!
//! `acc[c·M + m] += sum over taps t of x[t][c] * w[t][c·M + m]`. The generated interior loop
//! calls it once per output pixel with the window's input pixels and weights at literal
//! offsets. With multiplier 1 and `f32`, the AVX-512 and AVX2 paths keep one vector of
//! accumulators in a register across all taps and use fused multiply-adds; everything else
//! runs the portable loop, which the compiler vectorises.

use crate::Element;
use crate::gemm::Isa;

/// Element types with depthwise window microkernels.
pub trait DepthwiseKernels: Element {
    /// See [`depthwise_run`]; arguments already checked.
    fn depthwise_run<
        const C: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
    >(
        isa: Isa,
        out: &mut [[Self; KC]],
        run: &Run<'_, Self, C, W, KH>,
        w: &[[[Self; CM]; KW]; KH],
    );

    /// See [`depthwise_window`].
    fn depthwise_window<const CI: usize, const M: usize, const CO: usize, const TAPS: usize>(
        isa: Isa,
        acc: &mut [Self; CO],
        x: [&[Self; CI]; TAPS],
        w: [&[Self; CO]; TAPS],
    );
}

/// A whole `KH x KW` window over one block of channels. `isa` must be supported by this CPU
/// (generated code passes the one `dispatch` chose); it is a constant after inlining, so the
/// choice costs nothing.
#[inline(always)]
pub fn depthwise_window<
    T: DepthwiseKernels,
    const CI: usize,
    const M: usize,
    const CO: usize,
    const TAPS: usize,
>(
    isa: Isa,
    acc: &mut [T; CO],
    x: [&[T; CI]; TAPS],
    w: [&[T; CO]; TAPS],
) {
    const { assert!(CI * M == CO, "CO must equal CI * M") };
    T::depthwise_window::<CI, M, CO, TAPS>(isa, acc, x, w);
}

/// A run of adjacent output pixels in one row, all of whose taps are inside the input: the
/// interior of a row. Output pixel `p` reads input columns
/// `col0 + p * stride + kw * dilation` of `rows[kh]`, channels of block `kb`.
pub struct Run<'a, T, const C: usize, const W: usize, const KH: usize> {
    /// The input rows of taps `kh = 0 .. KH`.
    pub rows: [&'a [[T; C]; W]; KH],
    /// Input column of tap `kw = 0` for the first pixel of the run.
    pub col0: usize,
    /// Column stride.
    pub stride: usize,
    /// Column dilation.
    pub dilation: usize,
    /// Channel block: depthwise channels `kb * KC ..`, input channels `kb * KC / M ..`.
    pub kb: usize,
}

/// Adds a run's depthwise window sums to `out` (one entry per output pixel, holding its bias).
///
/// Several pixels are computed together so their accumulators form independent chains that
/// keep the FMA units busy; with multiplier 1 and `f32` the AVX-512 and AVX2 paths use
/// explicit vector code.
///
/// # Panics
/// If a tap of the run falls outside `rows`, or the block is outside the weights (generated
/// code never does either).
#[inline(always)]
pub fn depthwise_run<
    T: DepthwiseKernels,
    const C: usize,
    const W: usize,
    const CM: usize,
    const KC: usize,
    const M: usize,
    const KH: usize,
    const KW: usize,
>(
    isa: Isa,
    out: &mut [[T; KC]],
    run: &Run<'_, T, C, W, KH>,
    w: &[[[T; CM]; KW]; KH],
) {
    const { assert!(KC > 0 && M > 0 && KC.is_multiple_of(M) && CM.is_multiple_of(KC)) };
    assert!((run.kb + 1) * KC <= CM, "channel block outside the weights");
    assert!((run.kb + 1) * (KC / M) <= C, "channel block outside the input");
    if let Some(last) = out.len().checked_sub(1) {
        let reach = run.col0 + last * run.stride + (KW - 1) * run.dilation;
        assert!(reach < W, "run reaches column {reach} of {W}");
    }
    T::depthwise_run::<C, W, CM, KC, M, KH, KW>(isa, out, run, w);
}

/// Pixels per group of the portable run.
const PORTABLE_GROUP: usize = 4;

/// The portable run: groups of pixels, taps outermost, channels innermost (vectorised).
#[inline(always)]
fn portable_run<
    T: Element,
    const C: usize,
    const W: usize,
    const CM: usize,
    const KC: usize,
    const M: usize,
    const KH: usize,
    const KW: usize,
>(
    out: &mut [[T; KC]],
    run: &Run<'_, T, C, W, KH>,
    w: &[[[T; CM]; KW]; KH],
) {
    let ci0 = run.kb * (KC / M);
    let co0 = run.kb * KC;
    for (g, group) in out.chunks_mut(PORTABLE_GROUP).enumerate() {
        let p0 = g * PORTABLE_GROUP;
        for (row, wrow) in run.rows.iter().zip(w) {
            for (kw, wtap) in wrow.iter().enumerate() {
                let wtap = &wtap[co0..co0 + KC];
                for (j, acc) in group.iter_mut().enumerate() {
                    let col = run.col0 + (p0 + j) * run.stride + kw * run.dilation;
                    let x = &row[col][ci0..ci0 + KC / M];
                    if M == 1 {
                        for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(wtap) {
                            *a = *a + xv * wv;
                        }
                    } else {
                        for ((a, wv), &xv) in acc.chunks_exact_mut(M).zip(wtap.chunks_exact(M)).zip(x) {
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

/// The portable window: channels outermost, so the compiler keeps a vector of accumulators in
/// registers across the unrolled taps.
#[inline(always)]
fn portable<T: Element, const CI: usize, const M: usize, const CO: usize, const TAPS: usize>(
    acc: &mut [T; CO],
    x: [&[T; CI]; TAPS],
    w: [&[T; CO]; TAPS],
) {
    if M == 1 {
        for (i, acc) in acc.iter_mut().enumerate() {
            let mut sum = *acc;
            for t in 0..TAPS {
                sum = sum + x[t][i] * w[t][i];
            }
            *acc = sum;
        }
    } else {
        for (c, acc) in acc.chunks_exact_mut(M).enumerate() {
            for (m, acc) in acc.iter_mut().enumerate() {
                let mut sum = *acc;
                for t in 0..TAPS {
                    sum = sum + x[t][c] * w[t][c * M + m];
                }
                *acc = sum;
            }
        }
    }
}

impl DepthwiseKernels for f64 {
    #[inline(always)]
    fn depthwise_run<
        const C: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
    >(
        _: Isa,
        out: &mut [[f64; KC]],
        run: &Run<'_, f64, C, W, KH>,
        w: &[[[f64; CM]; KW]; KH],
    ) {
        portable_run::<f64, C, W, CM, KC, M, KH, KW>(out, run, w);
    }

    #[inline(always)]
    fn depthwise_window<const CI: usize, const M: usize, const CO: usize, const TAPS: usize>(
        _: Isa,
        acc: &mut [f64; CO],
        x: [&[f64; CI]; TAPS],
        w: [&[f64; CO]; TAPS],
    ) {
        portable::<f64, CI, M, CO, TAPS>(acc, x, w);
    }
}

impl DepthwiseKernels for f32 {
    #[inline(always)]
    fn depthwise_run<
        const C: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
    >(
        isa: Isa,
        out: &mut [[f32; KC]],
        run: &Run<'_, f32, C, W, KH>,
        w: &[[[f32; CM]; KW]; KH],
    ) {
        #[cfg(target_arch = "x86_64")]
        if M == 1 && !out.is_empty() {
            let geometry = x86::RunGeometry {
                pixels: out.len(),
                channels: KC,
                col0: run.col0,
                stride: run.stride,
                dilation: run.dilation,
                pixel_stride: C,
                tap_stride: CM,
            };
            let rows = run.rows.map(|r| r.as_flattened()[run.kb * KC..].as_ptr());
            let taps = w.each_ref().map(|r| r.as_flattened()[run.kb * KC..].as_ptr());
            let out = out.as_flattened_mut().as_mut_ptr();
            match isa {
                // SAFETY: `depthwise_run` checked that the last tap of the run is inside the
                // rows and the block inside the weights; `isa` is supported (the caller's
                // contract, as chosen by `dispatch`).
                Isa::Avx512 => return unsafe { x86::run_avx512::<KH, KW>(out, &rows, &taps, &geometry) },
                // SAFETY: as above.
                Isa::Avx2 => return unsafe { x86::run_avx2::<KH, KW>(out, &rows, &taps, &geometry) },
                Isa::Portable => {}
            }
        }
        portable_run::<f32, C, W, CM, KC, M, KH, KW>(out, run, w);
    }

    #[inline(always)]
    fn depthwise_window<const CI: usize, const M: usize, const CO: usize, const TAPS: usize>(
        isa: Isa,
        acc: &mut [f32; CO],
        x: [&[f32; CI]; TAPS],
        w: [&[f32; CO]; TAPS],
    ) {
        #[cfg(target_arch = "x86_64")]
        if M == 1 {
            let xs = x.map(|p| p.as_ptr());
            let ws = w.map(|p| p.as_ptr());
            match isa {
                // SAFETY: `isa` is supported (the caller's contract, as chosen by `dispatch`);
                // every pointer addresses `CO` floats (`CI == CO` when `M == 1`).
                Isa::Avx512 => return unsafe { x86::window_avx512::<TAPS>(acc, &xs, &ws) },
                // SAFETY: as above.
                Isa::Avx2 => return unsafe { x86::window_avx2::<TAPS>(acc, &xs, &ws) },
                Isa::Portable => {}
            }
        }
        let _ = isa;
        portable::<f32, CI, M, CO, TAPS>(acc, x, w);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{
        __m256, __m512, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm512_fmadd_ps,
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
    };

    /// The shape of a run in elements, for the pointer kernels.
    pub(super) struct RunGeometry {
        /// Output pixels.
        pub(super) pixels: usize,
        /// Channels per output pixel (the block).
        pub(super) channels: usize,
        pub(super) col0: usize,
        pub(super) stride: usize,
        pub(super) dilation: usize,
        /// Elements between adjacent input pixels (`C`).
        pub(super) pixel_stride: usize,
        /// Elements between adjacent taps of a weight row (`CM`).
        pub(super) tap_stride: usize,
    }

    /// Pixels computed together by the AVX-512 run.
    const GROUP512: usize = 8;
    /// Pixels computed together by the AVX2 run.
    const GROUP256: usize = 6;

    /// # Safety
    /// AVX-512F. `rows[kh]` points at channel `kb * KC` of input pixel 0 of row `kh` and every
    /// tap of the run (`col0 + p * stride + kw * dilation` for `p < pixels`, `kw < KW`) is inside
    /// that row; `taps[kh]` points at channel `kb * KC` of weight `[kh][0]`, with `KW` taps
    /// `tap_stride` apart; `out` holds `pixels * channels` floats.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn run_avx512<const KH: usize, const KW: usize>(
        out: *mut f32,
        rows: &[*const f32; KH],
        taps: &[*const f32; KH],
        g: &RunGeometry,
    ) {
        let mut c = 0;
        while c < g.channels {
            let left = g.channels - c;
            let mask: u16 = if left >= 16 { u16::MAX } else { (1 << left) - 1 };
            let mut p = 0;
            while p < g.pixels {
                let group = GROUP512.min(g.pixels - p);
                // SAFETY: forwarded; lanes masked to the block.
                unsafe {
                    match group {
                        8 => group_avx512::<KH, KW, 8>(out, rows, taps, g, c, p, mask),
                        7 => group_avx512::<KH, KW, 7>(out, rows, taps, g, c, p, mask),
                        6 => group_avx512::<KH, KW, 6>(out, rows, taps, g, c, p, mask),
                        5 => group_avx512::<KH, KW, 5>(out, rows, taps, g, c, p, mask),
                        4 => group_avx512::<KH, KW, 4>(out, rows, taps, g, c, p, mask),
                        3 => group_avx512::<KH, KW, 3>(out, rows, taps, g, c, p, mask),
                        2 => group_avx512::<KH, KW, 2>(out, rows, taps, g, c, p, mask),
                        _ => group_avx512::<KH, KW, 1>(out, rows, taps, g, c, p, mask),
                    }
                }
                p += group;
            }
            c += 16;
        }
    }

    /// `G` pixels from `p`, 16 channels from `c`.
    ///
    /// # Safety
    /// As `run_avx512`, with `p + G <= pixels`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)] // the run's pointers and the tile's position
    unsafe fn group_avx512<const KH: usize, const KW: usize, const G: usize>(
        out: *mut f32,
        rows: &[*const f32; KH],
        taps: &[*const f32; KH],
        g: &RunGeometry,
        c: usize,
        p: usize,
        mask: u16,
    ) {
        // SAFETY: every offset is inside the buffers per the caller's contract.
        unsafe {
            let mut acc: [__m512; G] = [_mm512_maskz_loadu_ps(0, out); G];
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_maskz_loadu_ps(mask, out.add((p + j) * g.channels + c));
            }
            for kh in 0..KH {
                for kw in 0..KW {
                    let wv = _mm512_maskz_loadu_ps(mask, taps[kh].add(kw * g.tap_stride + c));
                    let col = g.col0 + p * g.stride + kw * g.dilation;
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let x = rows[kh].add((col + j * g.stride) * g.pixel_stride + c);
                        *acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x), wv, *acc);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add((p + j) * g.channels + c), mask, *acc);
            }
        }
    }

    /// # Safety
    /// As `run_avx512`, with AVX2 and FMA instead of AVX-512F.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn run_avx2<const KH: usize, const KW: usize>(
        out: *mut f32,
        rows: &[*const f32; KH],
        taps: &[*const f32; KH],
        g: &RunGeometry,
    ) {
        let mut c = 0;
        while c + 8 <= g.channels {
            let mut p = 0;
            while p < g.pixels {
                let group = GROUP256.min(g.pixels - p);
                // SAFETY: forwarded; lanes `c .. c + 8` are inside the block.
                unsafe {
                    match group {
                        6 => group_avx2::<KH, KW, 6>(out, rows, taps, g, c, p),
                        5 => group_avx2::<KH, KW, 5>(out, rows, taps, g, c, p),
                        4 => group_avx2::<KH, KW, 4>(out, rows, taps, g, c, p),
                        3 => group_avx2::<KH, KW, 3>(out, rows, taps, g, c, p),
                        2 => group_avx2::<KH, KW, 2>(out, rows, taps, g, c, p),
                        _ => group_avx2::<KH, KW, 1>(out, rows, taps, g, c, p),
                    }
                }
                p += group;
            }
            c += 8;
        }
        // The last channels, one at a time.
        for c in c..g.channels {
            for p in 0..g.pixels {
                // SAFETY: as above, for one lane.
                unsafe {
                    let o = out.add(p * g.channels + c);
                    let mut sum = *o;
                    for kh in 0..KH {
                        for kw in 0..KW {
                            let col = g.col0 + p * g.stride + kw * g.dilation;
                            sum = sum
                                + *rows[kh].add(col * g.pixel_stride + c)
                                    * *taps[kh].add(kw * g.tap_stride + c);
                        }
                    }
                    *o = sum;
                }
            }
        }
    }

    /// # Safety
    /// As `run_avx2`, with `p + G <= pixels` and `c + 8 <= channels`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn group_avx2<const KH: usize, const KW: usize, const G: usize>(
        out: *mut f32,
        rows: &[*const f32; KH],
        taps: &[*const f32; KH],
        g: &RunGeometry,
        c: usize,
        p: usize,
    ) {
        // SAFETY: every offset is inside the buffers per the caller's contract.
        unsafe {
            let mut acc: [__m256; G] = [_mm256_loadu_ps(out); G];
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_loadu_ps(out.add((p + j) * g.channels + c));
            }
            for kh in 0..KH {
                for kw in 0..KW {
                    let wv = _mm256_loadu_ps(taps[kh].add(kw * g.tap_stride + c));
                    let col = g.col0 + p * g.stride + kw * g.dilation;
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let x = rows[kh].add((col + j * g.stride) * g.pixel_stride + c);
                        *acc = _mm256_fmadd_ps(_mm256_loadu_ps(x), wv, *acc);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add((p + j) * g.channels + c), *acc);
            }
        }
    }

    /// # Safety
    /// AVX-512F; `acc` and every `x[t]`, `w[t]` point to `acc.len()` floats.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn window_avx512<const TAPS: usize>(
        acc: &mut [f32],
        x: &[*const f32; TAPS],
        w: &[*const f32; TAPS],
    ) {
        let channels = acc.len();
        let mut c = 0;
        while c < channels {
            let left = channels - c;
            let mask: u16 = if left >= 16 {
                u16::MAX
            } else {
                (1 << left) - 1
            };
            // SAFETY: lanes `c .. c + 16` masked to `channels`, inside every buffer.
            unsafe {
                let out = acc.as_mut_ptr().add(c);
                let mut sum = _mm512_maskz_loadu_ps(mask, out);
                for t in 0..TAPS {
                    let xv = _mm512_maskz_loadu_ps(mask, x[t].add(c));
                    let wv = _mm512_maskz_loadu_ps(mask, w[t].add(c));
                    sum = _mm512_fmadd_ps(xv, wv, sum);
                }
                _mm512_mask_storeu_ps(out, mask, sum);
            }
            c += 16;
        }
    }

    /// # Safety
    /// AVX2 and FMA; `acc` and every `x[t]`, `w[t]` point to `acc.len()` floats.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn window_avx2<const TAPS: usize>(
        acc: &mut [f32],
        x: &[*const f32; TAPS],
        w: &[*const f32; TAPS],
    ) {
        let channels = acc.len();
        let mut c = 0;
        while c + 8 <= channels {
            // SAFETY: lanes `c .. c + 8` are inside every buffer.
            unsafe {
                let out = acc.as_mut_ptr().add(c);
                let mut sum = _mm256_loadu_ps(out);
                for t in 0..TAPS {
                    sum = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x[t].add(c)),
                        _mm256_loadu_ps(w[t].add(c)),
                        sum,
                    );
                }
                _mm256_storeu_ps(out, sum);
            }
            c += 8;
        }
        // The last channels, one at a time.
        for (i, a) in acc.iter_mut().enumerate().skip(c) {
            let mut sum = *a;
            for t in 0..TAPS {
                // SAFETY: `i < channels`, inside every buffer.
                sum = unsafe { sum + *x[t].add(i) * *w[t].add(i) };
            }
            *a = sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path against a plain sum, for channel counts around the vector widths.
    #[test]
    fn every_isa_matches_a_plain_sum() {
        fn run<const C: usize>() {
            let xs: [[f32; C]; 9] = core::array::from_fn(|t| {
                core::array::from_fn(|c| (t * 7 + c * 3) as f32 % 5.0 - 2.0)
            });
            let ws: [[f32; C]; 9] =
                core::array::from_fn(|t| core::array::from_fn(|c| (t * 5 + c) as f32 % 3.0 - 1.0));
            let bias: [f32; C] = core::array::from_fn(|c| c as f32);
            let expected: [f32; C] = core::array::from_fn(|c| {
                bias[c] + (0..9).map(|t| xs[t][c] * ws[t][c]).sum::<f32>()
            });
            for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
                if !isa.is_supported() {
                    continue;
                }
                let mut acc = bias;
                depthwise_window::<f32, C, 1, C, 9>(isa, &mut acc, xs.each_ref(), ws.each_ref());
                assert_eq!(acc, expected, "{isa:?} with {C} channels");
            }
        }
        run::<1>();
        run::<3>();
        run::<8>();
        run::<15>();
        run::<16>();
        run::<17>();
        run::<33>();
        run::<64>();
    }

    #[test]
    fn multipliers_spread_each_input_channel() {
        let mut acc = [0.0f64; 6];
        depthwise_window::<f64, 3, 2, 6, 2>(
            Isa::Portable,
            &mut acc,
            [&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0]],
            [&[1.0, 10.0, 100.0, 1000.0, 0.5, 0.25], &[1.0; 6]],
        );
        assert_eq!(acc, [2.0, 11.0, 201.0, 2001.0, 2.5, 1.75]);
    }
}

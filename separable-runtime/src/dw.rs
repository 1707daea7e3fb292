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
    /// See [`depthwise_pixel`]; arguments already checked. The portable loop, which `f32`
    /// replaces with vector code.
    #[inline(always)]
    fn depthwise_pixel<
        const C: usize,
        const H: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
        const DH: usize,
        const DW: usize,
    >(
        _: Isa,
        acc: &mut [Self; KC],
        x: &[[[Self; C]; W]; H],
        taps: &Taps,
        w: &[[[Self; CM]; KW]; KH],
    ) {
        portable_pixel::<Self, C, H, W, CM, KC, M, KH, KW, DH, DW>(acc, x, taps, w);
    }

    /// See [`depthwise_run`]; arguments already checked.
    fn depthwise_run<
        const C: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
        const SW: usize,
        const DW: usize,
    >(
        isa: Isa,
        out: &mut [[Self; KC]],
        run: &Run<'_, Self, C, W, KH>,
        w: &[[[Self; CM]; KW]; KH],
    );
}

/// A run of adjacent output pixels in one row, all of whose taps are inside the input: the
/// interior of a row. Output pixel `p` reads input columns
/// `col0 + p * SW + kw * DW` of `rows[kh]`, channels of block `kb`.
pub struct Run<'a, T, const C: usize, const W: usize, const KH: usize> {
    /// The input rows of taps `kh = 0 .. KH`.
    pub rows: [&'a [[T; C]; W]; KH],
    /// Input column of tap `kw = 0` for the first pixel of the run.
    pub col0: usize,
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
    const SW: usize,
    const DW: usize,
>(
    isa: Isa,
    out: &mut [[T; KC]],
    run: &Run<'_, T, C, W, KH>,
    w: &[[[T; CM]; KW]; KH],
) {
    const { assert!(KC > 0 && M > 0 && KC.is_multiple_of(M) && CM.is_multiple_of(KC)) };
    assert!((run.kb + 1) * KC <= CM, "channel block outside the weights");
    assert!(
        (run.kb + 1) * (KC / M) <= C,
        "channel block outside the input"
    );
    if let Some(last) = out.len().checked_sub(1) {
        let reach = run.col0 + last * SW + (KW - 1) * DW;
        assert!(reach < W, "run reaches column {reach} of {W}");
    }
    T::depthwise_run::<C, W, CM, KC, M, KH, KW, SW, DW>(isa, out, run, w);
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

/// Adds one border pixel's in-bounds taps to `acc` (which holds its bias).
///
/// # Panics
/// If a tap falls outside the input or the weights (generated code never does).
#[inline(always)]
pub fn depthwise_pixel<
    T: DepthwiseKernels,
    const C: usize,
    const H: usize,
    const W: usize,
    const CM: usize,
    const KC: usize,
    const M: usize,
    const KH: usize,
    const KW: usize,
    const DH: usize,
    const DW: usize,
>(
    isa: Isa,
    acc: &mut [T; KC],
    x: &[[[T; C]; W]; H],
    taps: &Taps,
    w: &[[[T; CM]; KW]; KH],
) {
    const { assert!(KC > 0 && M > 0 && KC.is_multiple_of(M) && CM.is_multiple_of(KC)) };
    if taps.rows.is_empty() || taps.cols.is_empty() {
        return;
    }
    assert!(
        taps.rows.end <= KH && taps.cols.end <= KW,
        "taps outside the kernel"
    );
    assert!(
        (taps.kb + 1) * KC <= CM,
        "channel block outside the weights"
    );
    assert!(
        (taps.kb + 1) * (KC / M) <= C,
        "channel block outside the input"
    );
    assert!(
        taps.origin[0] + (taps.rows.len() - 1) * DH < H
            && taps.origin[1] + (taps.cols.len() - 1) * DW < W,
        "taps outside the input"
    );
    T::depthwise_pixel::<C, H, W, CM, KC, M, KH, KW, DH, DW>(isa, acc, x, taps, w);
}

/// The portable border pixel: every in-bounds tap over the block's channels.
#[inline(always)]
fn portable_pixel<
    T: Element,
    const C: usize,
    const H: usize,
    const W: usize,
    const CM: usize,
    const KC: usize,
    const M: usize,
    const KH: usize,
    const KW: usize,
    const DH: usize,
    const DW: usize,
>(
    acc: &mut [T; KC],
    x: &[[[T; C]; W]; H],
    taps: &Taps,
    w: &[[[T; CM]; KW]; KH],
) {
    let (ci0, co0) = (taps.kb * (KC / M), taps.kb * KC);
    for (i, kh) in taps.rows.clone().enumerate() {
        let row = &x[taps.origin[0] + i * DH];
        for (j, kw) in taps.cols.clone().enumerate() {
            let pixel = &row[taps.origin[1] + j * DW][ci0..ci0 + KC / M];
            let weights = &w[kh][kw][co0..co0 + KC];
            for ((acc, wv), &xv) in acc
                .chunks_exact_mut(M)
                .zip(weights.chunks_exact(M))
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
    const SW: usize,
    const DW: usize,
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
                    let col = run.col0 + (p0 + j) * SW + kw * DW;
                    let x = &row[col][ci0..ci0 + KC / M];
                    if M == 1 {
                        for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(wtap) {
                            *a = *a + xv * wv;
                        }
                    } else {
                        for ((a, wv), &xv) in
                            acc.chunks_exact_mut(M).zip(wtap.chunks_exact(M)).zip(x)
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
    #[inline(always)]
    fn depthwise_run<
        const C: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
        const SW: usize,
        const DW: usize,
    >(
        _: Isa,
        out: &mut [[f64; KC]],
        run: &Run<'_, f64, C, W, KH>,
        w: &[[[f64; CM]; KW]; KH],
    ) {
        portable_run::<f64, C, W, CM, KC, M, KH, KW, SW, DW>(out, run, w);
    }
}

impl DepthwiseKernels for f32 {
    #[inline(always)]
    fn depthwise_pixel<
        const C: usize,
        const H: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
        const DH: usize,
        const DW: usize,
    >(
        isa: Isa,
        acc: &mut [f32; KC],
        x: &[[[f32; C]; W]; H],
        taps: &Taps,
        w: &[[[f32; CM]; KW]; KH],
    ) {
        #[cfg(target_arch = "x86_64")]
        if M == 1 && isa == Isa::Avx512 {
            let input = x.as_flattened().as_flattened()[taps.kb * KC..].as_ptr();
            let weights = w.as_flattened().as_flattened()[taps.kb * KC..].as_ptr();
            // SAFETY: `depthwise_pixel` checked every tap against the input and the weights
            // and the block against both; `isa` is supported (the caller's contract).
            unsafe {
                x86::pixel_avx512::<KC, C, W, CM, KW, DH, DW>(
                    acc.as_mut_ptr(),
                    input,
                    weights,
                    taps,
                );
            }
            return;
        }
        portable_pixel::<f32, C, H, W, CM, KC, M, KH, KW, DH, DW>(acc, x, taps, w);
    }

    #[inline(always)]
    fn depthwise_run<
        const C: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
        const SW: usize,
        const DW: usize,
    >(
        isa: Isa,
        out: &mut [[f32; KC]],
        run: &Run<'_, f32, C, W, KH>,
        w: &[[[f32; CM]; KW]; KH],
    ) {
        #[cfg(target_arch = "x86_64")]
        if M == 1 && !out.is_empty() {
            let rows = run.rows.map(|r| r.as_flattened()[run.kb * KC..].as_ptr());
            let taps = w
                .each_ref()
                .map(|r| r.as_flattened()[run.kb * KC..].as_ptr());
            let pixels = out.len();
            let out = out.as_flattened_mut().as_mut_ptr();
            match isa {
                // SAFETY: `depthwise_run` checked that the last tap of the run is inside the
                // rows and the block inside the weights; `isa` is supported (the caller's
                // contract, as chosen by `dispatch`).
                Isa::Avx512 => {
                    unsafe {
                        x86::run_avx512::<KH, KW, KC, SW, DW, C, CM>(
                            out, &rows, &taps, pixels, run.col0,
                        );
                    }
                    return;
                }
                // SAFETY: as above.
                Isa::Avx2 => {
                    unsafe {
                        x86::run_avx2::<KH, KW, KC, SW, DW, C, CM>(
                            out, &rows, &taps, pixels, run.col0,
                        );
                    }
                    return;
                }
                Isa::Portable => {}
            }
        }
        portable_run::<f32, C, W, CM, KC, M, KH, KW, SW, DW>(out, run, w);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{
        __m256, __m512, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm512_fmadd_ps,
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
    };

    /// One border pixel: the taps `taps.rows x taps.cols`, 16 channels at a time.
    ///
    /// # Safety
    /// AVX-512F; `input` points at channel `kb * KC` of input pixel `(0, 0)` of an `_ x W x C`
    /// image, `weights` at channel `kb * KC` of weight `[0][0]` of a `_ x KW x CM` kernel, and
    /// every tap of `taps` is inside both; `acc` holds `KC` floats.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn pixel_avx512<
        const KC: usize,
        const C: usize,
        const W: usize,
        const CM: usize,
        const KW: usize,
        const DH: usize,
        const DW: usize,
    >(
        acc: *mut f32,
        input: *const f32,
        weights: *const f32,
        taps: &super::Taps,
    ) {
        let mut c = 0;
        while c < KC {
            let left = KC - c;
            let mask: u16 = if left >= 16 {
                u16::MAX
            } else {
                (1 << left) - 1
            };
            // SAFETY: per the caller's contract, lanes masked to the block.
            unsafe {
                let mut sum = _mm512_maskz_loadu_ps(mask, acc.add(c));
                for (i, kh) in taps.rows.clone().enumerate() {
                    let row = taps.origin[0] + i * DH;
                    for (j, kw) in taps.cols.clone().enumerate() {
                        let col = taps.origin[1] + j * DW;
                        let xv = _mm512_maskz_loadu_ps(mask, input.add((row * W + col) * C + c));
                        let wv = _mm512_maskz_loadu_ps(mask, weights.add((kh * KW + kw) * CM + c));
                        sum = _mm512_fmadd_ps(xv, wv, sum);
                    }
                }
                _mm512_mask_storeu_ps(acc.add(c), mask, sum);
            }
            c += 16;
        }
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
    pub(super) unsafe fn run_avx512<
        const KH: usize,
        const KW: usize,
        const KC: usize,
        const SW: usize,
        const DW: usize,
        const C: usize,
        const CM: usize,
    >(
        out: *mut f32,
        rows: &[*const f32; KH],
        taps: &[*const f32; KH],
        pixels: usize,
        col0: usize,
    ) {
        // Pixel groups outermost: a group's input pixels are used for all their channels while
        // they are in L1, instead of the row being streamed once per 16 channels.
        let mut p = 0;
        while p < pixels {
            let group = GROUP512.min(pixels - p);
            let mut c = 0;
            while c < KC {
                let left = KC - c;
                let mask: u16 = if left >= 16 {
                    u16::MAX
                } else {
                    (1 << left) - 1
                };
                // SAFETY: forwarded; lanes masked to the block.
                unsafe {
                    macro_rules! groups {
                        ($($g:literal)*) => {
                            match group {
                                $($g => group_avx512::<KH, KW, KC, SW, DW, C, CM, $g>(out, rows, taps, col0, c, p, mask),)*
                                _ => unreachable!("at most GROUP512 pixels per group"),
                            }
                        };
                    }
                    groups!(1 2 3 4 5 6 7 8);
                }
                c += 16;
            }
            p += group;
        }
    }

    /// `G` pixels from `p`, 16 channels from `c`.
    ///
    /// # Safety
    /// As `run_avx512`, with `p + G <= pixels`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)] // the run's pointers and the tile's position
    unsafe fn group_avx512<
        const KH: usize,
        const KW: usize,
        const KC: usize,
        const SW: usize,
        const DW: usize,
        const C: usize,
        const CM: usize,
        const G: usize,
    >(
        out: *mut f32,
        rows: &[*const f32; KH],
        taps: &[*const f32; KH],
        col0: usize,
        c: usize,
        p: usize,
        mask: u16,
    ) {
        // SAFETY: every offset is inside the buffers per the caller's contract.
        unsafe {
            let mut acc: [__m512; G] = [_mm512_maskz_loadu_ps(0, out); G];
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_maskz_loadu_ps(mask, out.add((p + j) * KC + c));
            }
            for kh in 0..KH {
                for kw in 0..KW {
                    let wv = _mm512_maskz_loadu_ps(mask, taps[kh].add(kw * CM + c));
                    let col = col0 + p * SW + kw * DW;
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let x = rows[kh].add((col + j * SW) * C + c);
                        *acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x), wv, *acc);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add((p + j) * KC + c), mask, *acc);
            }
        }
    }

    /// # Safety
    /// As `run_avx512`, with AVX2 and FMA instead of AVX-512F.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn run_avx2<
        const KH: usize,
        const KW: usize,
        const KC: usize,
        const SW: usize,
        const DW: usize,
        const C: usize,
        const CM: usize,
    >(
        out: *mut f32,
        rows: &[*const f32; KH],
        taps: &[*const f32; KH],
        pixels: usize,
        col0: usize,
    ) {
        // Pixel groups outermost, as in `run_avx512`.
        let vectors = KC / 8 * 8;
        let mut p = 0;
        while p < pixels {
            let group = GROUP256.min(pixels - p);
            let mut c = 0;
            while c < vectors {
                // SAFETY: forwarded; lanes `c .. c + 8` are inside the block.
                unsafe {
                    macro_rules! groups {
                        ($($g:literal)*) => {
                            match group {
                                $($g => group_avx2::<KH, KW, KC, SW, DW, C, CM, $g>(out, rows, taps, col0, c, p),)*
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
        for c in vectors..KC {
            for p in 0..pixels {
                // SAFETY: as above, for one lane.
                unsafe {
                    let o = out.add(p * KC + c);
                    let mut sum = *o;
                    for kh in 0..KH {
                        for kw in 0..KW {
                            let col = col0 + p * SW + kw * DW;
                            sum += *rows[kh].add(col * C + c) * *taps[kh].add(kw * CM + c);
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
    unsafe fn group_avx2<
        const KH: usize,
        const KW: usize,
        const KC: usize,
        const SW: usize,
        const DW: usize,
        const C: usize,
        const CM: usize,
        const G: usize,
    >(
        out: *mut f32,
        rows: &[*const f32; KH],
        taps: &[*const f32; KH],
        col0: usize,
        c: usize,
        p: usize,
    ) {
        // SAFETY: every offset is inside the buffers per the caller's contract.
        unsafe {
            let mut acc: [__m256; G] = [_mm256_loadu_ps(out); G];
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_loadu_ps(out.add((p + j) * KC + c));
            }
            for kh in 0..KH {
                for kw in 0..KW {
                    let wv = _mm256_loadu_ps(taps[kh].add(kw * CM + c));
                    let col = col0 + p * SW + kw * DW;
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let x = rows[kh].add((col + j * SW) * C + c);
                        *acc = _mm256_fmadd_ps(_mm256_loadu_ps(x), wv, *acc);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add((p + j) * KC + c), *acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A plain sum over the window of each output pixel of a row run.
    fn expected<
        const C: usize,
        const W: usize,
        const CM: usize,
        const KC: usize,
        const M: usize,
    >(
        rows: &[[[f32; C]; W]; 3],
        w: &[[[f32; CM]; 3]; 3],
        run: (usize, usize, usize, usize),
        pixels: usize,
        bias: &[f32; KC],
    ) -> Vec<[f32; KC]> {
        let (col0, stride, dilation, kb) = run;
        (0..pixels)
            .map(|p| {
                core::array::from_fn(|k| {
                    let (co, ci) = (kb * KC + k, (kb * KC + k) / M);
                    let mut sum = bias[k];
                    for kh in 0..3 {
                        for kw in 0..3 {
                            sum += rows[kh][col0 + p * stride + kw * dilation][ci] * w[kh][kw][co];
                        }
                    }
                    sum
                })
            })
            .collect()
    }

    /// Every path, over channel counts around the vector widths and run lengths around the
    /// pixel groups, against a plain sum of small integers (exact in every order).
    fn check<const C: usize, const CM: usize, const KC: usize, const M: usize>() {
        const W: usize = 40;
        let rows: [[[f32; C]; W]; 3] = core::array::from_fn(|r| {
            core::array::from_fn(|x| {
                core::array::from_fn(|c| ((r * 31 + x * 7 + c * 3) % 11) as f32 - 5.0)
            })
        });
        let w: [[[f32; CM]; 3]; 3] = core::array::from_fn(|r| {
            core::array::from_fn(|x| {
                core::array::from_fn(|c| ((r * 5 + x * 3 + c) % 7) as f32 - 3.0)
            })
        });
        let bias: [f32; KC] = core::array::from_fn(|k| k as f32);
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            if !isa.is_supported() {
                continue;
            }
            for (col0, stride, dilation) in [(0, 1, 1), (3, 2, 1), (1, 1, 2), (0, 3, 2)] {
                for pixels in [0, 1, 5, 6, 7, 8, 9, 13, 17] {
                    let call = |out: &mut [[f32; KC]], run: &Run<'_, f32, C, W, 3>| match (
                        stride, dilation,
                    ) {
                        (1, 1) => {
                            depthwise_run::<f32, C, W, CM, KC, M, 3, 3, 1, 1>(isa, out, run, &w);
                        }
                        (2, 1) => {
                            depthwise_run::<f32, C, W, CM, KC, M, 3, 3, 2, 1>(isa, out, run, &w);
                        }
                        (1, 2) => {
                            depthwise_run::<f32, C, W, CM, KC, M, 3, 3, 1, 2>(isa, out, run, &w);
                        }
                        _ => {
                            depthwise_run::<f32, C, W, CM, KC, M, 3, 3, 3, 2>(isa, out, run, &w);
                        }
                    };
                    if pixels > 0 && col0 + (pixels - 1) * stride + 2 * dilation >= W {
                        continue;
                    }
                    for kb in 0..CM / KC {
                        let run = Run {
                            rows: rows.each_ref(),
                            col0,
                            kb,
                        };
                        let mut out = alloc::vec![bias; pixels];
                        call(&mut out, &run);
                        let want = expected::<C, W, CM, KC, M>(
                            &rows,
                            &w,
                            (col0, stride, dilation, kb),
                            pixels,
                            &bias,
                        );
                        assert_eq!(
                            out, want,
                            "{isa:?} C {C} KC {KC} M {M} run {col0}/{stride}/{dilation} pixels {pixels} block {kb}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_isa_matches_a_plain_sum() {
        check::<1, 1, 1, 1>();
        check::<3, 3, 3, 1>();
        check::<15, 15, 15, 1>();
        check::<16, 16, 16, 1>();
        check::<17, 17, 17, 1>();
        check::<33, 33, 33, 1>();
        check::<64, 64, 32, 1>();
        check::<3, 6, 6, 2>();
        check::<8, 24, 12, 3>();
    }

    #[test]
    #[should_panic(expected = "run reaches column")]
    fn a_run_past_the_row_is_refused() {
        let rows = [[[0.0f32; 1]; 4]; 3];
        let w = [[[0.0f32; 1]; 3]; 3];
        let run = Run {
            rows: rows.each_ref(),
            col0: 1,
            kb: 0,
        };
        let mut out = [[0.0f32; 1]; 2];
        depthwise_run::<f32, 1, 4, 1, 1, 1, 3, 3, 1, 1>(Isa::Portable, &mut out, &run, &w);
    }
}

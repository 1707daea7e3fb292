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
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps,
    };

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

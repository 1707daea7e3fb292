//! The element-wise passes of generated layers over their stack buffers and outputs: the
//! activation, and scattering a channel block into a depthwise output.
//!
//! They are compiled here, once per element type and instruction set (the same loop under
//! `#[target_feature]`, vectorised for AVX-512 or AVX2), so that the code of a layer, compiled
//! for the build's baseline, does not run them on narrow vectors.

use separable_shape::Activation;

use crate::Element;
use crate::gemm::Isa;
use crate::kernel::activate_slice;

/// Applies `activation` to every element of `values` (see [`crate::kernel::activate`]).
///
/// # Panics
/// If `isa` is not supported by this CPU.
#[inline]
pub fn activate_all<T: Passes>(isa: Isa, activation: Activation, values: &mut [T]) {
    if activation == Activation::None {
        return;
    }
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    // SAFETY: `isa` is supported, as `Passes` requires.
    unsafe { T::activate_all(isa, activation, values) };
}

/// Copies `block` consecutive values per pixel from `strip` (`pixels x block`) to channels
/// `offset .. offset + block` of the pixels of `out` (`pixels x stride`).
///
/// # Panics
/// If `isa` is not supported by this CPU, or the channels do not fit in `stride`, or the
/// buffers do not hold the same, whole number of pixels.
#[inline]
pub fn scatter<T: Passes>(
    isa: Isa,
    strip: &[T],
    out: &mut [T],
    block: usize,
    stride: usize,
    offset: usize,
) {
    assert!(
        block > 0 && offset.checked_add(block).is_some_and(|end| end <= stride),
        "channels outside the pixel"
    );
    assert!(
        strip.len().is_multiple_of(block)
            && out.len().is_multiple_of(stride)
            && strip.len() / block == out.len() / stride,
        "the buffers hold different pixels"
    );
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    // SAFETY: `isa` is supported, as `Passes` requires.
    unsafe { T::scatter(isa, strip, out, block, stride, offset) };
}

/// Element types with compiled element-wise passes; see the functions of this module.
pub trait Passes: Element {
    /// See [`activate_all`].
    ///
    /// # Safety
    /// `isa` is supported by this CPU.
    unsafe fn activate_all(isa: Isa, activation: Activation, values: &mut [Self]);
    /// See [`scatter`].
    ///
    /// # Safety
    /// `isa` is supported by this CPU.
    unsafe fn scatter(
        isa: Isa,
        strip: &[Self],
        out: &mut [Self],
        block: usize,
        stride: usize,
        offset: usize,
    );
}

#[inline(always)]
fn activate_loop<T: Element>(activation: Activation, values: &mut [T]) {
    activate_slice(activation, values);
}

#[inline(always)]
fn scatter_loop<T: Element>(
    strip: &[T],
    out: &mut [T],
    block: usize,
    stride: usize,
    offset: usize,
) {
    for (src, dst) in strip.chunks_exact(block).zip(out.chunks_exact_mut(stride)) {
        dst[offset..offset + block].copy_from_slice(src);
    }
}

/// The passes of one element type: the portable loops, and the same loops compiled for
/// AVX-512 and AVX2 on x86-64.
macro_rules! passes {
    ($t:ty, $module:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use super::{Activation, activate_loop, scatter_loop};

            /// # Safety
            /// The CPU supports AVX-512F.
            #[target_feature(enable = "avx512f,avx2,fma")]
            pub(super) unsafe fn activate_512(activation: Activation, values: &mut [$t]) {
                activate_loop(activation, values);
            }
            /// # Safety
            /// The CPU supports AVX2 and FMA.
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn activate_256(activation: Activation, values: &mut [$t]) {
                activate_loop(activation, values);
            }
            /// # Safety
            /// The CPU supports AVX-512F.
            #[target_feature(enable = "avx512f,avx2,fma")]
            pub(super) unsafe fn scatter_512(
                strip: &[$t],
                out: &mut [$t],
                block: usize,
                stride: usize,
                offset: usize,
            ) {
                scatter_loop(strip, out, block, stride, offset);
            }
            /// # Safety
            /// The CPU supports AVX2 and FMA.
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn scatter_256(
                strip: &[$t],
                out: &mut [$t],
                block: usize,
                stride: usize,
                offset: usize,
            ) {
                scatter_loop(strip, out, block, stride, offset);
            }
        }

        impl Passes for $t {
            unsafe fn activate_all(isa: Isa, activation: Activation, values: &mut [$t]) {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the caller's contract: this CPU supports AVX-512F.
                    Isa::Avx512 => unsafe { $module::activate_512(activation, values) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, AVX2 and FMA.
                    Isa::Avx2 => unsafe { $module::activate_256(activation, values) },
                    _ => activate_loop(activation, values),
                }
            }

            unsafe fn scatter(
                isa: Isa,
                strip: &[$t],
                out: &mut [$t],
                block: usize,
                stride: usize,
                offset: usize,
            ) {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the caller's contract: this CPU supports AVX-512F.
                    Isa::Avx512 => unsafe {
                        $module::scatter_512(strip, out, block, stride, offset)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, AVX2 and FMA.
                    Isa::Avx2 => unsafe { $module::scatter_256(strip, out, block, stride, offset) },
                    _ => scatter_loop(strip, out, block, stride, offset),
                }
            }
        }
    };
}

passes!(f32, x86_f32);
passes!(f64, x86_f64);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn isas() -> impl Iterator<Item = Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_supported())
    }

    #[test]
    fn every_isa_activates_and_scatters() {
        for isa in isas() {
            let mut values: Vec<f64> = (0..37).map(|v| f64::from(v) - 18.0).collect();
            values[5] = f64::NAN;
            activate_all(isa, Activation::Relu6, &mut values);
            assert!(values[5].is_nan(), "{isa:?}");
            for (i, &v) in values.iter().enumerate().filter(|&(i, _)| i != 5) {
                assert_eq!(v, (i as f64 - 18.0).clamp(0.0, 6.0), "{isa:?} at {i}");
            }
            let strip = [1.0f32, 2.0, 3.0, 4.0];
            let mut out = [0.0f32; 2 * 5];
            scatter(isa, &strip, &mut out, 2, 5, 3);
            assert_eq!(
                out,
                [0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 3.0, 4.0],
                "{isa:?}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "channels outside the pixel")]
    fn a_block_past_the_pixel_is_refused() {
        scatter(Isa::Portable, &[0.0f32; 2], &mut [0.0f32; 4], 2, 4, 3);
    }
}

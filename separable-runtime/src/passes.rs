//! The element-wise pass of generated layers over their stack buffers and outputs: the
//! activation.
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

/// Element types with compiled element-wise passes; see the functions of this module.
pub trait Passes: Element {
    /// See [`activate_all`].
    ///
    /// # Safety
    /// `isa` is supported by this CPU.
    unsafe fn activate_all(isa: Isa, activation: Activation, values: &mut [Self]);
}

#[inline(always)]
fn activate_loop<T: Element>(activation: Activation, values: &mut [T]) {
    activate_slice(activation, values);
}

/// The passes of one element type: the portable loops, and the same loops compiled for
/// AVX-512 and AVX2 on x86-64.
macro_rules! passes {
    ($t:ty, $module:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use super::{Activation, activate_loop};

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
    fn every_isa_activates() {
        for isa in isas() {
            let mut values: Vec<f64> = (0..37).map(|v| f64::from(v) - 18.0).collect();
            values[5] = f64::NAN;
            activate_all(isa, Activation::Relu6, &mut values);
            assert!(values[5].is_nan(), "{isa:?}");
            for (i, &v) in values.iter().enumerate().filter(|&(i, _)| i != 5) {
                assert_eq!(v, (i as f64 - 18.0).clamp(0.0, 6.0), "{isa:?} at {i}");
            }
        }
    }
}

//! The scalar types a layer computes in.

use core::fmt::{Debug, Display};
use core::ops::{Add, Mul};

mod sealed {
    use separable_shape::LayerSpec;

    use crate::Error;
    use crate::weights::PytorchSlices;

    /// Seals [`Element`](super::Element), and holds the work of generic functions compiled
    /// here once per element type rather than in every program that calls them.
    pub trait Sealed: Sized {
        /// [`crate::weights::load_pytorch`]: destinations `[dw, pw]` and `[dw_bias, pw_bias]`.
        fn load_pytorch(
            context: &'static str,
            spec: &LayerSpec,
            src: PytorchSlices<'_, Self>,
            weights: [&mut [Self]; 2],
            biases: [Option<&mut [Self]>; 2],
        ) -> Result<(), Error>;
    }

    macro_rules! sealed {
        ($($t:ty),*) => {$(
            impl Sealed for $t {
                fn load_pytorch(
                    context: &'static str,
                    spec: &LayerSpec,
                    src: PytorchSlices<'_, Self>,
                    weights: [&mut [Self]; 2],
                    biases: [Option<&mut [Self]>; 2],
                ) -> Result<(), Error> {
                    crate::weights::load_pytorch_into(context, spec, src, weights, biases)
                }
            }
        )*};
    }
    sealed!(f32, f64);
}

/// A floating-point element type of tensors and weights: `f32` or `f64`.
///
/// Sealed: the kernels rely on every implementor being an IEEE float whose all-zero bit pattern
/// is `0.0`.
pub trait Element:
    sealed::Sealed
    + Copy
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Mul<Output = Self>
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// `0.0`.
    const ZERO: Self;
    /// `6.0`, the upper clip of ReLU6.
    const SIX: Self;
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest for `f32`.
    fn from_f64(value: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    const SIX: Self = 6.0;
    const NAME: &'static str = "f32";

    #[allow(clippy::cast_possible_truncation)] // rounding to nearest is the documented intent
    fn from_f64(value: f64) -> Self {
        value as f32
    }

    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    const SIX: Self = 6.0;
    const NAME: &'static str = "f64";

    fn from_f64(value: f64) -> Self {
        value
    }

    fn to_f64(self) -> f64 {
        self
    }
}

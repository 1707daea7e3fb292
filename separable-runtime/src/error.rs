//! The runtime's error type.

use core::fmt;

use separable_shape::Bias;

/// Why a tensor, weight buffer or file was rejected. Every variant names the function that
/// rejected it and the tensor at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer has the wrong number of elements.
    #[error("{context}: `{tensor}` has {actual} elements, expected {expected} (shape {shape})")]
    Length {
        /// The function that read the buffer, e.g. `Seed::from_pytorch`.
        context: &'static str,
        /// The tensor, e.g. `depthwise.weight`.
        tensor: &'static str,
        /// The expected shape, in the layout the function documents.
        shape: Dims,
        /// The expected number of elements, the product of `shape`.
        expected: usize,
        /// The number of elements given.
        actual: usize,
    },
    /// An array has the wrong shape.
    #[error("{context}: `{tensor}` has shape {actual}, expected {expected}")]
    Shape {
        /// The function that read the array.
        context: &'static str,
        /// The tensor at fault.
        tensor: &'static str,
        /// The shape the layer declares.
        expected: Dims,
        /// The shape given.
        actual: Dims,
    },
    /// A layer description with no valid shape (only reachable through the runtime API:
    /// `separable_conv!` rejects such layers at compile time).
    #[error("{context}: {error}")]
    InvalidSpec {
        /// The function that was given the description.
        context: &'static str,
        /// Why it has no valid shape.
        error: separable_shape::ShapeError,
    },
    /// A bias was given for a stage the layer declares without one.
    #[error("{context}: `{tensor}` was given, but the layer is declared with `bias: {declared}`")]
    UnexpectedBias {
        /// The function that read the weights.
        context: &'static str,
        /// The bias tensor that was given.
        tensor: &'static str,
        /// The layer's declared `bias:`.
        declared: BiasName,
    },
    /// A stage the layer declares with a bias was given none.
    #[error("{context}: `{tensor}` is missing; the layer is declared with `bias: {declared}`")]
    MissingBias {
        /// The function that read the weights.
        context: &'static str,
        /// The bias tensor that is missing.
        tensor: &'static str,
        /// The layer's declared `bias:`.
        declared: BiasName,
    },
    /// A BatchNorm channel whose `running_var + eps` is not positive (or is NaN), so it has no
    /// scale to fold.
    #[error(
        "{context}: channel {channel} has `running_var + eps` = {value}, which is not positive"
    )]
    NonPositiveVariance {
        /// The function that folded the BatchNorm.
        context: &'static str,
        /// The channel at fault.
        channel: usize,
        /// `running_var[channel] + eps`, as printed by `f64`'s `Display`.
        value: FloatBits,
    },
    /// A safetensors file could not be parsed: it is truncated, its header is not valid JSON,
    /// its header length is out of range, or its offsets do not cover its data.
    #[cfg(feature = "alloc")]
    #[error("{item}::{function}: not a valid safetensors file: {reason}")]
    InvalidFile {
        /// The layer (its `NAME`) or type whose function read the file.
        item: &'static str,
        /// The function that read the file.
        function: &'static str,
        /// What the safetensors parser reported.
        reason: alloc::string::String,
    },
    /// A tensor is not in a safetensors file.
    #[cfg(feature = "alloc")]
    #[error("{item}::{function}: `{key}` is not in the file")]
    MissingTensor {
        /// The layer (its `NAME`) or type whose function read the file.
        item: &'static str,
        /// The function that read the file.
        function: &'static str,
        /// The tensor's full name, prefix included.
        key: alloc::string::String,
    },
    /// A bias the layer declares is not in a safetensors file.
    #[cfg(feature = "alloc")]
    #[error(
        "{item}::{function}: `{key}` is not in the file, but the layer is declared with `bias: {declared}`"
    )]
    MissingBiasTensor {
        /// The layer (its `NAME`) or type whose function read the file.
        item: &'static str,
        /// The function that read the file.
        function: &'static str,
        /// The bias tensor's full name, prefix included.
        key: alloc::string::String,
        /// The layer's declared `bias:`.
        declared: BiasName,
    },
    /// A safetensors file has a bias for a stage the layer declares without one.
    #[cfg(feature = "alloc")]
    #[error(
        "{item}::{function}: the file has `{key}`, but the layer is declared with `bias: {declared}`"
    )]
    UnexpectedBiasTensor {
        /// The layer (its `NAME`) or type whose function read the file.
        item: &'static str,
        /// The function that read the file.
        function: &'static str,
        /// The bias tensor's full name, prefix included.
        key: alloc::string::String,
        /// The layer's declared `bias:`.
        declared: BiasName,
    },
    /// A tensor in a safetensors file has the wrong shape.
    #[cfg(feature = "alloc")]
    #[error("{item}::{function}: `{key}` has shape {actual:?}, expected {expected}")]
    TensorShape {
        /// The layer (its `NAME`) or type whose function read the file.
        item: &'static str,
        /// The function that read the file.
        function: &'static str,
        /// The tensor's full name, prefix included.
        key: alloc::string::String,
        /// The shape the layer declares, in PyTorch's layout.
        expected: Dims,
        /// The shape in the file.
        actual: alloc::vec::Vec<usize>,
    },
    /// A tensor in a safetensors file has a dtype that does not convert to a float.
    #[cfg(feature = "alloc")]
    #[error("{item}::{function}: `{key}` has dtype {actual}, expected F32, F64, F16 or BF16")]
    TensorDtype {
        /// The layer (its `NAME`) or type whose function read the file.
        item: &'static str,
        /// The function that read the file.
        function: &'static str,
        /// The tensor's full name, prefix included.
        key: alloc::string::String,
        /// The dtype in the file, as safetensors names it (`I64`, `F8_E4M3`, ...).
        actual: alloc::string::String,
    },
}

/// An `f64` stored by its bits, so that [`Error`] can be `Eq`; prints as the `f64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FloatBits(pub u64);

impl FloatBits {
    /// The value.
    #[must_use]
    pub const fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl From<f64> for FloatBits {
    fn from(value: f64) -> Self {
        FloatBits(value.to_bits())
    }
}

impl fmt::Display for FloatBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

/// A [`Bias`] that prints as the word written in `separable_conv!` (`none`, `pointwise`, `both`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BiasName(pub Bias);

impl fmt::Display for BiasName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Bias::None => "none",
            Bias::Pointwise => "pointwise",
            Bias::Both => "both",
        })
    }
}

/// A tensor shape of up to four dimensions, printed as `[3, 1, 3, 3]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    len: usize,
    dims: [usize; 4],
}

impl Dims {
    /// A shape from its dimensions, outermost first.
    ///
    /// # Panics
    /// At compile time (or run time) if given more than four dimensions.
    #[must_use]
    pub const fn new<const N: usize>(dims: [usize; N]) -> Self {
        assert!(N <= 4, "Dims holds at most four dimensions");
        let mut out = [0; 4];
        let mut i = 0;
        while i < N {
            out[i] = dims[i];
            i += 1;
        }
        Dims { len: N, dims: out }
    }

    /// The dimensions, outermost first.
    #[must_use]
    pub fn as_slice(&self) -> &[usize] {
        &self.dims[..self.len]
    }

    /// The number of elements, or `None` if it overflows `usize`.
    #[must_use]
    pub fn elements(&self) -> Option<usize> {
        self.as_slice()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
}

impl fmt::Debug for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Error {
    /// Checks that `actual` elements were given for a tensor of shape `shape`.
    ///
    /// # Errors
    /// [`Error::Length`] when they differ.
    pub fn check_len(
        context: &'static str,
        tensor: &'static str,
        shape: Dims,
        actual: usize,
    ) -> Result<(), Error> {
        // A shape whose product overflows can never be matched by a real buffer.
        let expected = shape.elements().unwrap_or(usize::MAX);
        if expected == actual {
            Ok(())
        } else {
            Err(Error::Length {
                context,
                tensor,
                shape,
                expected,
                actual,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate alloc;
    use alloc::string::ToString;

    #[test]
    fn length_error_names_everything() {
        let e = Error::check_len(
            "Seed::from_pytorch",
            "depthwise.weight",
            Dims::new([3, 1, 3, 3]),
            26,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Seed::from_pytorch: `depthwise.weight` has 26 elements, expected 27 (shape [3, 1, 3, 3])"
        );
        assert!(Error::check_len("f", "t", Dims::new([2, 2]), 4).is_ok());
    }

    #[test]
    fn bias_errors_print_the_declared_word() {
        let e = Error::UnexpectedBias {
            context: "Seed::from_pytorch",
            tensor: "depthwise.bias",
            declared: BiasName(Bias::Pointwise),
        };
        assert_eq!(
            e.to_string(),
            "Seed::from_pytorch: `depthwise.bias` was given, but the layer is declared with `bias: pointwise`"
        );
    }

    #[test]
    fn overflowing_dims_never_match() {
        let dims = Dims::new([usize::MAX, 2]);
        assert_eq!(dims.elements(), None);
        assert!(Error::check_len("f", "t", dims, 0).is_err());
    }
}

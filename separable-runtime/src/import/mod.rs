//! Weights from trained models: safetensors files, and Keras and TFLite layouts.
//!
//! Every path ends in PyTorch's layouts ([`PytorchWeights`]), which generated layers load with
//! `from_pytorch`; the [`Layer`](crate::Layer) trait has the shortcuts
//! [`from_safetensors`](crate::Layer::from_safetensors),
//! [`from_keras`](crate::Layer::from_keras) and [`from_tflite`](crate::Layer::from_tflite).
//!
//! | source | depthwise weight | pointwise weight | biases |
//! |---|---|---|---|
//! | PyTorch (`Conv2d(C, C·M, groups=C)`, `Conv2d(C·M, N, 1)`) | `[C·M, 1, KH, KW]` | `[N, C·M, 1, 1]` | `[C·M]`, `[N]` |
//! | Keras `SeparableConv2D` | `depthwise_kernel (KH, KW, C, M)` | `pointwise_kernel (1, 1, C·M, N)` | `bias (N,)` |
//! | Keras `DepthwiseConv2D` + `Conv2D` 1 x 1 | `(KH, KW, C, M)` | `(1, 1, C·M, N)` | `(C·M,)`, `(N,)` |
//! | TFLite `DEPTHWISE_CONV_2D` + `CONV_2D` | `[1, KH, KW, C·M]` | `[N, 1, 1, C·M]` (OHWI) | `[C·M]`, `[N]` |
//!
//! In all of them depthwise channel `c·M + m` filters input channel `c`.

pub(crate) mod keras;
mod safetensors;

pub use keras::{keras_to_pytorch, tflite_to_pytorch};
pub use safetensors::SafetensorsFile;

#[cfg(doc)]
use crate::PytorchWeights;

/// The names of a layer's four tensors in a safetensors file: each key is `prefix` followed by
/// one of the names.
///
/// [`TensorNames::pytorch`] gives the names of a PyTorch module with submodules `depthwise` and
/// `pointwise`; other models name their modules differently:
///
/// ```
/// use separable_runtime::import::TensorNames;
///
/// // torchvision's MobileNetV2 names the convolutions of an inverted residual block
/// // `conv.0.0` (depthwise) and `conv.1` (the 1 x 1 projection).
/// let names = TensorNames {
///     prefix: "features.2.",
///     depthwise_weight: "conv.0.0.weight",
///     depthwise_bias: "conv.0.0.bias",
///     pointwise_weight: "conv.1.weight",
///     pointwise_bias: "conv.1.bias",
/// };
/// assert_eq!(names.key(names.pointwise_weight), "features.2.conv.1.weight");
/// assert_eq!(TensorNames::pytorch("features.3.").key("depthwise.weight"), "features.3.depthwise.weight");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorNames<'a> {
    /// Prepended to every name, e.g. `"features.3."` (with its trailing dot); may be empty.
    pub prefix: &'a str,
    /// The depthwise weight, PyTorch shape `[C·M, 1, KH, KW]`.
    pub depthwise_weight: &'a str,
    /// The depthwise bias, shape `[C·M]`; read with `bias: both`.
    pub depthwise_bias: &'a str,
    /// The pointwise weight, PyTorch shape `[N, C·M, 1, 1]`.
    pub pointwise_weight: &'a str,
    /// The pointwise bias, shape `[N]`; read with `bias: pointwise` or `both`.
    pub pointwise_bias: &'a str,
}

impl<'a> TensorNames<'a> {
    /// `depthwise.weight`, `depthwise.bias`, `pointwise.weight` and `pointwise.bias` after
    /// `prefix`: the state dict of a module whose convolutions are attributes named
    /// `depthwise` and `pointwise`.
    #[must_use]
    pub const fn pytorch(prefix: &'a str) -> Self {
        TensorNames {
            prefix,
            depthwise_weight: "depthwise.weight",
            depthwise_bias: "depthwise.bias",
            pointwise_weight: "pointwise.weight",
            pointwise_bias: "pointwise.bias",
        }
    }

    /// The same names after another prefix.
    #[must_use]
    pub const fn with_prefix(self, prefix: &'a str) -> Self {
        TensorNames { prefix, ..self }
    }

    /// `prefix` followed by `name`.
    #[must_use]
    pub fn key(&self, name: &str) -> alloc::string::String {
        let mut key = alloc::string::String::with_capacity(self.prefix.len() + name.len());
        key.push_str(self.prefix);
        key.push_str(name);
        key
    }
}

impl Default for TensorNames<'_> {
    /// [`TensorNames::pytorch`] with an empty prefix.
    fn default() -> Self {
        TensorNames::pytorch("")
    }
}

/// Who reports an error: a layer's `NAME` (or a type's name) and one of its functions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub(crate) item: &'static str,
    pub(crate) function: &'static str,
}

//! Depthwise-separable convolution layers specialised at compile time from their shapes.
//!
//! Describe a layer by its shapes and [`separable_conv!`] generates a struct whose depthwise
//! and pointwise stages are monomorphised (every size is a literal), unrolled where that pays,
//! and shape-checked by the type system:
//!
//! ```
//! use separable::{separable_conv, Tensor};
//!
//! separable_conv! {
//!     /// The seed layer.
//!     pub struct Seed { input: 5 x 5 x 3, output: 4, kernel: 3 x 3, padding: same }
//! }
//!
//! assert_eq!((Seed::DEPTHWISE_PARAMS, Seed::POINTWISE_PARAMS), (27, 12));
//! assert_eq!((Seed::PARAMS, Seed::STANDARD_PARAMS), (39, 108));
//! assert_eq!((Seed::MACS, Seed::STANDARD_MACS), (975, 2700));
//!
//! let layer = Seed::from_pytorch(&[0.5; 27], None, &[1.0; 12], None)?;
//! let x = Tensor::<5, 5, 3>::filled(1.0);
//! let y: Tensor<5, 5, 4> = layer.forward(&x);
//! // The centre sees all 9 taps of each of the 3 channels.
//! assert_eq!(y[(2, 2, 0)], 3.0 * 9.0 * 0.5);
//! # Ok::<(), separable::Error>(())
//! ```
//!
//! [`separable_net!`] declares a whole stack of such layers at once, each block's input the
//! previous block's output, with shared defaults and per-block overrides.
//!
//! The README documents the syntax, the semantics (layouts, padding, weight formats) and the
//! unroll policy.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

pub use separable_runtime::{
    Activation, Axis, Bias, Dim, Dims, Element, Error, Isa, Layer, LayerShape, LayerSpec, Padding,
    PytorchWeights, ShapeError, Tensor, reference, weights,
};
// Weight import (safetensors files, Keras and TFLite layouts, BatchNorm folding), and the
// `ndarray` version that `Tensor` and `Layer::forward_batch` use.
#[cfg(feature = "ndarray")]
pub use separable_runtime::ndarray;
pub use separable_runtime::{
    BiasName, FloatBits, SafetensorsFile, TensorData, TensorNames, batchnorm, import,
};

/// Declares a depthwise-separable convolution layer from its shapes.
///
/// ```
/// separable::separable_conv! {
///     #[derive(Clone, Debug)]
///     pub struct Block {
///         input: 112 x 112 x 32,  // H x W x C, channels last
///         output: 64,             // pointwise output channels
///         kernel: 3,              // `K` or `KH x KW` (default 3)
///         stride: 1,              // `S` or `SH x SW` (default 1)
///         padding: same,          // same | valid | P | PH x PW (default valid)
///         bias: both,             // none | pointwise | both (default none)
///         activation: relu,       // none | relu | relu6, after both stages (default none)
///     }
/// }
/// assert_eq!(Block::OUTPUT_SHAPE, [112, 112, 64]);
/// ```
///
/// Further keys: `dilation: D | DH x DW`, `multiplier: M` (depth multiplier),
/// `depthwise_activation:` / `pointwise_activation:` (one stage each), `dtype: f32 | f64`.
/// The README lists the generated items and the exact semantics.
#[macro_export]
macro_rules! separable_conv {
    ($($layer:tt)*) => {
        $crate::__private::separable_conv_impl! { $crate; $($layer)* }
    };
}

/// Declares a network: a stack of depthwise-separable layers, each block's input the previous
/// block's output, with shared defaults and per-block overrides.
///
/// ```
/// use separable::{Layer, Tensor};
///
/// separable::separable_net! {
///     /// The first blocks of a MobileNet v1 0.25 body.
///     #[derive(Clone, Debug)]
///     pub struct Body {
///         input: 32 x 32 x 8,
///         defaults: { kernel: 3, padding: 1, bias: both, activation: relu },
///         blocks: {
///             /// Doc comments and attributes go to the block's type.
///             b0: Block0 { output: 16 },
///             b1: Block1 { output: 32, stride: 2 },
///             // An explicit input is checked against the previous block's output.
///             b2: Block2 { input: 16 x 16 x 32, output: 32 },
///         }
///     }
/// }
///
/// // Every block is a `separable_conv!` layer, and the network sums them up.
/// assert_eq!(Block1::INPUT_SHAPE, [32, 32, 16]);
/// assert_eq!(Body::OUTPUT_SHAPE, [16, 16, 32]);
/// assert_eq!(Body::PARAMS, Block0::PARAMS + Block1::PARAMS + Block2::PARAMS);
///
/// let body = Body::zeroed();
/// let y: Tensor<16, 16, 32> = body.forward(&Tensor::filled(1.0));
/// assert_eq!(y, body.b2.forward(&body.b1.forward(&body.b0.forward(&Tensor::filled(1.0)))));
/// println!("{body}"); // `Body::SUMMARY`: a table of the blocks with their counts
/// ```
///
/// Each block `field: Type { .. }` declares the layer `Type` with the entries of `defaults`,
/// then its own (a block's key replaces the default's), and `input:` the previous block's
/// output (or the network's `input:` for the first). The network struct has the blocks as
/// fields, `forward`, `zeroed`, `from_safetensors(bytes, prefix)` (block `k` from
/// `{prefix}{k}.`, or `{prefix}` and the block's own `prefix: ".."`), the constants
/// `INPUT_SHAPE`, `OUTPUT_SHAPE`, `PARAMS`, `MACS` and `SUMMARY`, and `Display`. The README's
/// "Whole networks" section has the details.
#[macro_export]
macro_rules! separable_net {
    ($($net:tt)*) => {
        $crate::__private::separable_net_impl! { $crate; $($net)* }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use separable_macros::{separable_conv_impl, separable_net_impl};
    pub use separable_runtime::__private::*;
}

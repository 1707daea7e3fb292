//! The shape arithmetic of a depthwise-separable convolution, defined once.
//!
//! The `separable_conv!` macro computes every size of a layer with these functions at expansion
//! time, the generated code re-checks its literals against them in `const` assertions, and the
//! runtime's reference kernels use them at run time. All functions are `const fn`, use checked
//! arithmetic and report overflow instead of wrapping.
//!
//! ```
//! use separable_shape::{Bias, LayerSpec, Padding};
//!
//! let seed = LayerSpec::new([5, 5, 3], 4).with_padding(Padding::Same);
//! let shape = seed.shape().unwrap();
//! assert_eq!(shape.output, [5, 5, 4]);
//! assert_eq!((shape.depthwise_params, shape.pointwise_params), (27, 12));
//! assert_eq!((shape.params, shape.standard_params), (39, 108));
//! assert_eq!((shape.macs, shape.standard_macs), (975, 2700));
//!
//! let valid = LayerSpec::new([5, 5, 3], 4).with_bias(Bias::None);
//! assert_eq!(valid.shape().unwrap().output, [3, 3, 4]);
//! ```
#![no_std]

use core::fmt;

/// Unwraps an `Option` inside a `const fn` (where `?` is not available), mapping `None` to an
/// overflow of the named quantity.
macro_rules! checked {
    ($e:expr, $quantity:expr) => {
        match $e {
            Some(v) => v,
            None => {
                return Err(ShapeError::Overflow {
                    quantity: $quantity,
                })
            }
        }
    };
}

/// Propagates a `Result` inside a `const fn`.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Err(e),
        }
    };
}

/// Spatial padding of the depthwise stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// No padding: the window only visits positions inside the input (Keras and PyTorch default).
    Valid,
    /// TensorFlow/Keras `SAME`: the output has `ceil(input / stride)` positions; the zero padding
    /// this needs is split with the smaller half before and the larger half after.
    Same,
    /// Symmetric zero padding of `height` rows above and below and `width` columns left and right
    /// (PyTorch `padding=(height, width)`).
    Explicit {
        /// Rows added above and below.
        height: usize,
        /// Columns added left and right.
        width: usize,
    },
}

/// Which stages carry a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bias {
    /// Neither stage.
    None,
    /// Only the pointwise stage (Keras `SeparableConv2D`).
    Pointwise,
    /// Both stages (two PyTorch `Conv2d` modules, or a layer with folded BatchNorm).
    Both,
}

impl Bias {
    /// Whether the depthwise stage has a bias.
    #[must_use]
    pub const fn depthwise(self) -> bool {
        matches!(self, Bias::Both)
    }

    /// Whether the pointwise stage has a bias.
    #[must_use]
    pub const fn pointwise(self) -> bool {
        !matches!(self, Bias::None)
    }
}

/// An activation function applied elementwise after a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// The identity.
    None,
    /// `max(x, 0)`, NaN stays NaN.
    Relu,
    /// `min(max(x, 0), 6)`, NaN stays NaN.
    Relu6,
}

/// One spatial dimension of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Rows (`H`).
    Height,
    /// Columns (`W`).
    Width,
}

impl Dim {
    /// `"height"` or `"width"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Dim::Height => "height",
            Dim::Width => "width",
        }
    }
}

/// Why a layer's shape cannot be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShapeError {
    /// A size, stride, dilation or multiplier is zero.
    Zero {
        /// The quantity that is zero, e.g. `"stride"`.
        quantity: &'static str,
    },
    /// The window is larger than the padded input, so the output would be empty.
    EmptyOutput {
        /// The spatial dimension that is empty.
        dim: Dim,
        /// Input size plus padding along `dim`.
        padded_input: usize,
        /// `(kernel - 1) * dilation + 1` along `dim`.
        effective_kernel: usize,
    },
    /// A size or count does not fit in `usize`.
    Overflow {
        /// The quantity that overflows, e.g. ``"`MACS`"`` or `"the number of input elements"`.
        quantity: &'static str,
    },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ShapeError::Zero { quantity } => write!(f, "{quantity} must be at least 1"),
            ShapeError::EmptyOutput {
                dim,
                padded_input,
                effective_kernel,
            } => write!(
                f,
                "the kernel does not fit: the output {} would be empty (padded input {padded_input} < effective kernel {effective_kernel})",
                dim.name(),
            ),
            ShapeError::Overflow { quantity } => write!(f, "{quantity} overflows `usize`"),
        }
    }
}

impl core::error::Error for ShapeError {}

/// Padding and output size along one spatial dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Axis {
    /// Zero rows (or columns) before the input.
    pub pad_before: usize,
    /// Zero rows (or columns) after the input.
    pub pad_after: usize,
    /// Output positions.
    pub output: usize,
}

/// How one spatial dimension is padded; [`Padding`] split per dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AxisPadding {
    /// No padding.
    Valid,
    /// TensorFlow `SAME`.
    Same,
    /// This many zeros on each side.
    Explicit(usize),
}

/// `(kernel - 1) * dilation + 1`: the extent of a dilated window.
///
/// # Errors
/// [`ShapeError::Overflow`] if it does not fit in `usize`.
pub const fn effective_kernel(kernel: usize, dilation: usize) -> Result<usize, ShapeError> {
    if kernel == 0 {
        return Err(ShapeError::Zero { quantity: "kernel" });
    }
    if dilation == 0 {
        return Err(ShapeError::Zero {
            quantity: "dilation",
        });
    }
    let spread = checked!(
        (kernel - 1).checked_mul(dilation),
        "the dilated kernel extent"
    );
    Ok(checked!(spread.checked_add(1), "the dilated kernel extent"))
}

/// The padding and output size of a convolution along one dimension.
///
/// `SAME` follows TensorFlow: `output = ceil(input / stride)`, total padding
/// `max((output - 1) * stride + effective_kernel - input, 0)`, `total / 2` before and the rest
/// after. `Valid` and `Explicit(p)` give `(input + 2p - effective_kernel) / stride + 1`.
///
/// # Errors
/// [`ShapeError::Zero`] for a zero input, kernel, stride or dilation; [`ShapeError::EmptyOutput`]
/// when the window does not fit; [`ShapeError::Overflow`] when a size overflows.
pub const fn axis(
    dim: Dim,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: AxisPadding,
) -> Result<Axis, ShapeError> {
    if input == 0 {
        return Err(ShapeError::Zero { quantity: "input" });
    }
    if stride == 0 {
        return Err(ShapeError::Zero { quantity: "stride" });
    }
    let effective = tri!(effective_kernel(kernel, dilation));
    let pad = match padding {
        AxisPadding::Valid => 0,
        AxisPadding::Explicit(p) => p,
        AxisPadding::Same => {
            let output = input.div_ceil(stride);
            let reach = checked!((output - 1).checked_mul(stride), "the SAME padding");
            let reach = checked!(reach.checked_add(effective), "the SAME padding");
            let total = reach.saturating_sub(input);
            return Ok(Axis {
                pad_before: total / 2,
                pad_after: total - total / 2,
                output,
            });
        }
    };
    let padded = checked!(pad.checked_mul(2), "the padded input size");
    let padded = checked!(padded.checked_add(input), "the padded input size");
    if padded < effective {
        return Err(ShapeError::EmptyOutput {
            dim,
            padded_input: padded,
            effective_kernel: effective,
        });
    }
    Ok(Axis {
        pad_before: pad,
        pad_after: pad,
        output: (padded - effective) / stride + 1,
    })
}

/// The kernel taps `lo..hi` of output position `out` that land inside an input of `input`
/// positions, for a window placed at `out * stride - pad_before` with taps `dilation` apart.
///
/// The border loops of generated layers call it; their interior needs no such test.
#[inline]
#[must_use]
pub const fn tap_range(
    out: usize,
    stride: usize,
    dilation: usize,
    pad_before: usize,
    input: usize,
    kernel: usize,
) -> (usize, usize) {
    // Tap k reads input position start + k * dilation - pad_before.
    let start = out * stride;
    let lo = if start >= pad_before {
        0
    } else {
        (pad_before - start).div_ceil(dilation)
    };
    // Largest k with start + k * dilation < input + pad_before.
    let limit = input + pad_before;
    let hi = if start >= limit {
        0
    } else {
        let h = (limit - start - 1) / dilation + 1;
        if h < kernel { h } else { kernel }
    };
    if lo < hi { (lo, hi) } else { (0, 0) }
}

/// Output channels per panel of packed pointwise weights.
///
/// Generated layers store their pointwise weights as `[ceil(N / PANEL)][C·M][PANEL]`, the last
/// panel padded with zeros, so the matrix microkernels read each panel front to back.
pub const POINTWISE_PANEL: usize = 16;

/// Elements a strip layer's stack scratch holds beyond its strip (`rows x OW x KC`): room to
/// start the strip on a cache line (64 bytes, 16 `f32` or 8 `f64`), since a stack array is only
/// aligned to its element and a misaligned strip splits every vector load across two lines.
pub const SCRATCH_PAD: usize = 16;

/// The number of elements of packed pointwise weights for `k` input and `n` output channels,
/// or `None` on overflow.
#[must_use]
pub const fn packed_pointwise_len(k: usize, n: usize) -> Option<usize> {
    match n.div_ceil(POINTWISE_PANEL).checked_mul(POINTWISE_PANEL) {
        Some(padded) => padded.checked_mul(k),
        None => None,
    }
}

/// Everything that defines a layer's shapes: what a `separable_conv!` invocation declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerSpec {
    /// Input `[H, W, C]`.
    pub input: [usize; 3],
    /// Pointwise output channels `N`.
    pub output_channels: usize,
    /// Depthwise kernel `[KH, KW]`.
    pub kernel: [usize; 2],
    /// Depthwise stride `[SH, SW]`.
    pub stride: [usize; 2],
    /// Depthwise dilation `[DH, DW]`.
    pub dilation: [usize; 2],
    /// Depth multiplier `M`: the depthwise stage has `C * M` channels.
    pub multiplier: usize,
    /// Spatial padding of the depthwise stage.
    pub padding: Padding,
    /// Which stages have a bias.
    pub bias: Bias,
}

impl LayerSpec {
    /// A layer with the defaults of `separable_conv!`: 3 x 3 kernel, stride 1, dilation 1,
    /// multiplier 1, `valid` padding, no bias.
    #[must_use]
    pub const fn new(input: [usize; 3], output_channels: usize) -> Self {
        LayerSpec {
            input,
            output_channels,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            multiplier: 1,
            padding: Padding::Valid,
            bias: Bias::None,
        }
    }

    /// Replaces the kernel size.
    #[must_use]
    pub const fn with_kernel(mut self, kernel: [usize; 2]) -> Self {
        self.kernel = kernel;
        self
    }

    /// Replaces the stride.
    #[must_use]
    pub const fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }

    /// Replaces the dilation.
    #[must_use]
    pub const fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }

    /// Replaces the depth multiplier.
    #[must_use]
    pub const fn with_multiplier(mut self, multiplier: usize) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Replaces the padding.
    #[must_use]
    pub const fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Replaces the bias configuration.
    #[must_use]
    pub const fn with_bias(mut self, bias: Bias) -> Self {
        self.bias = bias;
        self
    }

    /// Computes every derived size of the layer.
    ///
    /// # Errors
    /// A [`ShapeError`] naming the first size that is zero, empty or overflows.
    pub const fn shape(&self) -> Result<LayerShape, ShapeError> {
        let [h, w, c] = self.input;
        let n = self.output_channels;
        let [kh, kw] = self.kernel;
        let m = self.multiplier;
        if c == 0 {
            return Err(ShapeError::Zero {
                quantity: "input channels",
            });
        }
        if n == 0 {
            return Err(ShapeError::Zero {
                quantity: "output channels",
            });
        }
        if m == 0 {
            return Err(ShapeError::Zero {
                quantity: "multiplier",
            });
        }
        let (pad_h, pad_w) = match self.padding {
            Padding::Valid => (AxisPadding::Valid, AxisPadding::Valid),
            Padding::Same => (AxisPadding::Same, AxisPadding::Same),
            Padding::Explicit { height, width } => {
                (AxisPadding::Explicit(height), AxisPadding::Explicit(width))
            }
        };
        let rows = tri!(axis(
            Dim::Height,
            h,
            kh,
            self.stride[0],
            self.dilation[0],
            pad_h
        ));
        let cols = tri!(axis(
            Dim::Width,
            w,
            kw,
            self.stride[1],
            self.dilation[1],
            pad_w
        ));
        let (oh, ow) = (rows.output, cols.output);
        let cm = checked!(c.checked_mul(m), "the depthwise channel count");

        let input_len = checked!(mul3(h, w, c), "the number of input elements");
        let depthwise_len = checked!(mul3(oh, ow, cm), "the number of depthwise output elements");
        let output_len = checked!(mul3(oh, ow, n), "the number of output elements");

        let taps = checked!(kh.checked_mul(kw), "the number of kernel taps");
        let dw_weights = checked!(taps.checked_mul(cm), "`DEPTHWISE_PARAMS`");
        let depthwise_params = checked!(
            dw_weights.checked_add(if self.bias.depthwise() { cm } else { 0 }),
            "`DEPTHWISE_PARAMS`"
        );
        let pw_bias = if self.bias.pointwise() { n } else { 0 };
        let pw_weights = checked!(cm.checked_mul(n), "`POINTWISE_PARAMS`");
        let pointwise_params = checked!(pw_weights.checked_add(pw_bias), "`POINTWISE_PARAMS`");
        let pointwise_packed = checked!(
            packed_pointwise_len(cm, n),
            "the packed pointwise weight count"
        );
        let params = checked!(depthwise_params.checked_add(pointwise_params), "`PARAMS`");
        let std_weights = checked!(mul3(taps, c, n), "`STANDARD_PARAMS`");
        let standard_params = checked!(std_weights.checked_add(pw_bias), "`STANDARD_PARAMS`");

        let positions = checked!(oh.checked_mul(ow), "the number of output positions");
        let dw_macs = checked!(mul3(positions, cm, taps), "`MACS`");
        let pw_macs = checked!(mul3(positions, cm, n), "`MACS`");
        let macs = checked!(dw_macs.checked_add(pw_macs), "`MACS`");
        let std_per_position = checked!(mul3(taps, c, n), "`STANDARD_MACS`");
        let standard_macs = checked!(positions.checked_mul(std_per_position), "`STANDARD_MACS`");

        Ok(LayerShape {
            rows,
            cols,
            input: [h, w, c],
            depthwise: [oh, ow, cm],
            output: [oh, ow, n],
            input_len,
            depthwise_len,
            output_len,
            depthwise_weights: dw_weights,
            pointwise_weights: pw_weights,
            pointwise_packed,
            depthwise_params,
            pointwise_params,
            params,
            standard_params,
            depthwise_macs: dw_macs,
            pointwise_macs: pw_macs,
            macs,
            standard_macs,
        })
    }
}

/// The derived sizes of a [`LayerSpec`], all checked against overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerShape {
    /// Padding and output size along the height.
    pub rows: Axis,
    /// Padding and output size along the width.
    pub cols: Axis,
    /// `[H, W, C]`.
    pub input: [usize; 3],
    /// `[OH, OW, C * M]`: the depthwise stage's output.
    pub depthwise: [usize; 3],
    /// `[OH, OW, N]`.
    pub output: [usize; 3],
    /// `H * W * C`.
    pub input_len: usize,
    /// `OH * OW * C * M`.
    pub depthwise_len: usize,
    /// `OH * OW * N`.
    pub output_len: usize,
    /// `KH * KW * C * M`: depthwise weights without bias.
    pub depthwise_weights: usize,
    /// `C * M * N`: pointwise weights without bias.
    pub pointwise_weights: usize,
    /// `C * M * ceil(N / 16) * 16`: the pointwise weights as stored, packed in panels of
    /// [`POINTWISE_PANEL`] output channels.
    pub pointwise_packed: usize,
    /// `KH * KW * C * M`, plus `C * M` with `Bias::Both`.
    pub depthwise_params: usize,
    /// `C * M * N`, plus `N` with any bias.
    pub pointwise_params: usize,
    /// `depthwise_params + pointwise_params`.
    pub params: usize,
    /// `KH * KW * C * N` of a standard convolution, plus `N` with any bias.
    pub standard_params: usize,
    /// `OH * OW * C * M * KH * KW`: every tap counted, padding included.
    pub depthwise_macs: usize,
    /// `OH * OW * C * M * N`.
    pub pointwise_macs: usize,
    /// `depthwise_macs + pointwise_macs`.
    pub macs: usize,
    /// `OH * OW * KH * KW * C * N` of a standard convolution.
    pub standard_macs: usize,
}

const fn mul3(a: usize, b: usize, c: usize) -> Option<usize> {
    match a.checked_mul(b) {
        Some(ab) => ab.checked_mul(c),
        None => None,
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_wrap)] // test sizes are tiny
mod tests {
    use super::*;

    fn same(input: usize, kernel: usize, stride: usize, dilation: usize) -> Axis {
        axis(
            Dim::Height,
            input,
            kernel,
            stride,
            dilation,
            AxisPadding::Same,
        )
        .unwrap()
    }

    /// The taps `tap_range` reports are exactly those that land inside the input.
    #[test]
    fn tap_range_matches_a_direct_scan() {
        for input in 1..9 {
            for kernel in 1..6 {
                for stride in 1..4 {
                    for dilation in 1..4 {
                        for pad in 0..6 {
                            for out in 0..12 {
                                let inside = |k: usize| {
                                    let p = (out * stride + k * dilation) as isize - pad as isize;
                                    (0..input as isize).contains(&p)
                                };
                                let (lo, hi) = tap_range(out, stride, dilation, pad, input, kernel);
                                for k in 0..kernel {
                                    assert_eq!(
                                        (lo..hi).contains(&k),
                                        inside(k),
                                        "input {input} kernel {kernel} stride {stride} dilation {dilation} pad {pad} out {out} k {k}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn seed_counts_match_the_brief() {
        let shape = LayerSpec::new([5, 5, 3], 4)
            .with_padding(Padding::Same)
            .shape()
            .unwrap();
        assert_eq!(shape.input, [5, 5, 3]);
        assert_eq!(shape.depthwise, [5, 5, 3]);
        assert_eq!(shape.output, [5, 5, 4]);
        assert_eq!(shape.depthwise_params, 27);
        assert_eq!(shape.pointwise_params, 12);
        assert_eq!(shape.params, 39);
        assert_eq!(shape.standard_params, 108);
        assert_eq!(shape.macs, 975);
        assert_eq!(shape.standard_macs, 2700);
    }

    #[test]
    fn valid_seed_is_three_by_three() {
        let shape = LayerSpec::new([5, 5, 3], 4).shape().unwrap();
        assert_eq!(shape.output, [3, 3, 4]);
        assert_eq!(shape.macs, 9 * 27 + 9 * 12);
    }

    #[test]
    fn same_is_symmetric_for_odd_kernels_at_stride_one() {
        let a = same(5, 3, 1, 1);
        assert_eq!((a.pad_before, a.pad_after, a.output), (1, 1, 5));
        let a = same(7, 7, 1, 1);
        assert_eq!((a.pad_before, a.pad_after, a.output), (3, 3, 7));
    }

    #[test]
    fn same_puts_the_extra_row_after() {
        // TensorFlow: 112 at stride 2 with a 3 kernel pads 0 before, 1 after.
        let a = same(112, 3, 2, 1);
        assert_eq!((a.pad_before, a.pad_after, a.output), (0, 1, 56));
        // Even kernel at stride 1: total 1, after.
        let a = same(6, 2, 1, 1);
        assert_eq!((a.pad_before, a.pad_after, a.output), (0, 1, 6));
        let a = same(6, 4, 1, 1);
        assert_eq!((a.pad_before, a.pad_after, a.output), (1, 2, 6));
        // Odd input at stride 2: 5 -> 3, total (3-1)*2+3-5 = 2.
        let a = same(5, 3, 2, 1);
        assert_eq!((a.pad_before, a.pad_after, a.output), (1, 1, 3));
    }

    #[test]
    fn same_with_stride_larger_than_kernel_needs_no_padding() {
        let a = same(9, 1, 3, 1);
        assert_eq!((a.pad_before, a.pad_after, a.output), (0, 0, 3));
        // 7 at stride 3 with a 2 kernel: (3 - 1) * 3 + 2 - 7 = 1, after.
        let a = same(7, 2, 3, 1);
        assert_eq!((a.pad_before, a.pad_after, a.output), (0, 1, 3));
    }

    #[test]
    fn same_accounts_for_dilation() {
        // effective kernel 5
        let a = same(5, 3, 1, 2);
        assert_eq!((a.pad_before, a.pad_after, a.output), (2, 2, 5));
    }

    #[test]
    fn explicit_and_valid_padding() {
        let a = axis(Dim::Width, 5, 3, 1, 1, AxisPadding::Explicit(2)).unwrap();
        assert_eq!((a.pad_before, a.pad_after, a.output), (2, 2, 7));
        let a = axis(Dim::Width, 11, 3, 3, 1, AxisPadding::Valid).unwrap();
        assert_eq!(a.output, 3);
        let a = axis(Dim::Width, 1, 1, 1, 1, AxisPadding::Valid).unwrap();
        assert_eq!(a.output, 1);
    }

    #[test]
    fn a_kernel_that_does_not_fit_is_an_empty_output() {
        assert_eq!(
            axis(Dim::Width, 2, 3, 1, 1, AxisPadding::Valid),
            Err(ShapeError::EmptyOutput {
                dim: Dim::Width,
                padded_input: 2,
                effective_kernel: 3
            })
        );
        assert_eq!(
            axis(Dim::Height, 4, 3, 1, 2, AxisPadding::Valid),
            Err(ShapeError::EmptyOutput {
                dim: Dim::Height,
                padded_input: 4,
                effective_kernel: 5
            })
        );
        // Same padding never empties an output.
        assert_eq!(same(1, 7, 1, 3).output, 1);
    }

    #[test]
    fn zeros_are_named() {
        let zero = |q| ShapeError::Zero { quantity: q };
        assert_eq!(
            axis(Dim::Height, 5, 3, 0, 1, AxisPadding::Valid).unwrap_err(),
            zero("stride")
        );
        assert_eq!(
            axis(Dim::Height, 5, 3, 1, 0, AxisPadding::Valid).unwrap_err(),
            zero("dilation")
        );
        assert_eq!(
            axis(Dim::Height, 5, 0, 1, 1, AxisPadding::Valid).unwrap_err(),
            zero("kernel")
        );
        assert_eq!(
            axis(Dim::Height, 0, 1, 1, 1, AxisPadding::Valid).unwrap_err(),
            zero("input")
        );
        assert_eq!(
            LayerSpec::new([5, 5, 0], 4).shape().unwrap_err(),
            zero("input channels")
        );
        assert_eq!(
            LayerSpec::new([5, 5, 3], 0).shape().unwrap_err(),
            zero("output channels")
        );
        assert_eq!(
            LayerSpec::new([5, 5, 3], 4)
                .with_multiplier(0)
                .shape()
                .unwrap_err(),
            zero("multiplier")
        );
    }

    #[test]
    fn overflow_is_reported_not_wrapped() {
        let huge = usize::MAX / 2;
        assert!(matches!(
            LayerSpec::new([huge, 3, 3], 4).shape(),
            Err(ShapeError::Overflow { .. })
        ));
        assert!(matches!(
            LayerSpec::new([3, 3, 3], huge).shape(),
            Err(ShapeError::Overflow { .. })
        ));
        assert!(matches!(
            axis(Dim::Height, 3, usize::MAX, 1, 2, AxisPadding::Same),
            Err(ShapeError::Overflow { .. })
        ));
        assert!(matches!(
            axis(Dim::Height, 3, 3, 1, 1, AxisPadding::Explicit(usize::MAX)),
            Err(ShapeError::Overflow { .. })
        ));
    }

    #[test]
    fn multiplier_and_bias_counts() {
        let shape = LayerSpec::new([5, 5, 3], 4)
            .with_multiplier(2)
            .with_bias(Bias::Both)
            .with_padding(Padding::Same)
            .shape()
            .unwrap();
        assert_eq!(shape.depthwise, [5, 5, 6]);
        assert_eq!(shape.depthwise_params, 9 * 6 + 6);
        assert_eq!(shape.pointwise_params, 6 * 4 + 4);
        assert_eq!(shape.standard_params, 9 * 3 * 4 + 4);
        assert_eq!(shape.macs, 25 * 6 * 9 + 25 * 6 * 4);
        let keras = LayerSpec::new([5, 5, 3], 4)
            .with_bias(Bias::Pointwise)
            .shape()
            .unwrap();
        assert_eq!(keras.depthwise_params, 27);
        assert_eq!(keras.pointwise_params, 16);
    }

    #[test]
    fn strides_and_rectangular_kernels() {
        let shape = LayerSpec::new([7, 9, 2], 3)
            .with_kernel([3, 5])
            .with_stride([2, 1])
            .shape()
            .unwrap();
        assert_eq!(shape.output, [3, 5, 3]);
        let shape = LayerSpec::new([112, 112, 64], 128)
            .with_stride([2, 2])
            .with_padding(Padding::Same)
            .shape()
            .unwrap();
        assert_eq!(shape.output, [56, 56, 128]);
        assert_eq!((shape.rows.pad_before, shape.rows.pad_after), (0, 1));
    }

    #[test]
    fn shapes_are_usable_in_const_context() {
        const SHAPE: LayerShape = match LayerSpec::new([5, 5, 3], 4).shape() {
            Ok(s) => s,
            Err(_) => panic!(),
        };
        assert_eq!(SHAPE.params, 39);
    }
}

//! Plain reference kernels: runtime shapes, PyTorch weight layouts, written for clarity.
//!
//! They share nothing with the generated code but the shape arithmetic of `separable-shape`,
//! which is what makes them a check on it: tests run generated layers and these functions on
//! the same data. They are also the baseline in the benchmarks.
//!
//! ```
//! use separable_runtime::reference;
//! use separable_runtime::{Activation, LayerSpec, Padding};
//!
//! // One channel, a 3 x 3 box filter over a 3 x 3 input of ones, SAME padding.
//! let spec = LayerSpec::new([3, 3, 1], 1).with_padding(Padding::Same);
//! let y = reference::depthwise(&spec, &[1.0f32; 9], &[1.0; 9], None, Activation::None).unwrap();
//! assert_eq!(y, [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
//!
//! // A description with no valid shape is an error that says why.
//! let bad = LayerSpec::new([5, 5, 3], 4).with_stride([0, 1]);
//! let e = reference::depthwise(&bad, &[0.0f32; 75], &[0.0; 27], None, Activation::None);
//! assert_eq!(e.unwrap_err().to_string(), "reference: stride must be at least 1");
//! ```

use alloc::vec;
use alloc::vec::Vec;

use separable_shape::{Activation, LayerSpec};

use crate::weights::{pytorch_depthwise_dims, pytorch_pointwise_dims};
use crate::{Dims, Element, Error};

fn shape_error(spec: &LayerSpec) -> Result<separable_shape::LayerShape, Error> {
    spec.shape().map_err(|error| Error::InvalidSpec {
        context: "reference",
        error,
    })
}

fn activate<T: Element>(activation: Activation, v: T) -> T {
    match activation {
        Activation::None => v,
        Activation::Relu => {
            if v < T::ZERO {
                T::ZERO
            } else {
                v
            }
        }
        Activation::Relu6 => {
            if v < T::ZERO {
                T::ZERO
            } else if v > T::SIX {
                T::SIX
            } else {
                v
            }
        }
    }
}

fn check_bias<T>(tensor: &'static str, bias: Option<&[T]>, len: usize) -> Result<(), Error> {
    match bias {
        Some(b) => Error::check_len("reference", tensor, Dims::new([len]), b.len()),
        None => Ok(()),
    }
}

/// The depthwise stage: `x` in HWC, `weight` in PyTorch's `[C·M, 1, KH, KW]`, optional `bias`
/// of `C·M`; returns `[OH][OW][C·M]` in HWC. `spec.bias` is ignored: the bias is used iff given.
///
/// # Errors
/// A shape error if `spec` has no valid shape, a length error for any buffer of the wrong size.
pub fn depthwise<T: Element>(
    spec: &LayerSpec,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    activation: Activation,
) -> Result<Vec<T>, Error> {
    let shape = shape_error(spec)?;
    let [h, w, c] = shape.input;
    let [oh, ow, cm] = shape.depthwise;
    let [kh, kw] = spec.kernel;
    let [sh, sw] = spec.stride;
    let [dh, dw] = spec.dilation;
    let m = spec.multiplier;
    Error::check_len("reference", "input", Dims::new([h, w, c]), x.len())?;
    Error::check_len(
        "reference",
        "depthwise.weight",
        pytorch_depthwise_dims(spec),
        weight.len(),
    )?;
    check_bias("depthwise.bias", bias, cm)?;

    let mut y = vec![T::ZERO; shape.depthwise_len];
    for oy in 0..oh {
        for ox in 0..ow {
            for k in 0..cm {
                let channel = k / m;
                let mut acc = bias.map_or(T::ZERO, |b| b[k]);
                for ky in 0..kh {
                    for kx in 0..kw {
                        // Input position of this tap, in padded coordinates.
                        let iy = (oy * sh + ky * dh).checked_sub(shape.rows.pad_before);
                        let ix = (ox * sw + kx * dw).checked_sub(shape.cols.pad_before);
                        if let (Some(iy), Some(ix)) = (iy, ix)
                            && iy < h
                            && ix < w
                        {
                            acc = acc
                                + x[(iy * w + ix) * c + channel] * weight[(k * kh + ky) * kw + kx];
                        }
                    }
                }
                y[(oy * ow + ox) * cm + k] = activate(activation, acc);
            }
        }
    }
    Ok(y)
}

/// The pointwise stage: `y` in HWC with `C·M` channels, `weight` in PyTorch's `[N, C·M, 1, 1]`,
/// optional `bias` of `N`; returns `[OH][OW][N]` in HWC.
///
/// # Errors
/// A shape error if `spec` has no valid shape, a length error for any buffer of the wrong size.
pub fn pointwise<T: Element>(
    spec: &LayerSpec,
    y: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    activation: Activation,
) -> Result<Vec<T>, Error> {
    let shape = shape_error(spec)?;
    let [oh, ow, cm] = shape.depthwise;
    let n = spec.output_channels;
    Error::check_len(
        "reference",
        "depthwise output",
        Dims::new([oh, ow, cm]),
        y.len(),
    )?;
    Error::check_len(
        "reference",
        "pointwise.weight",
        pytorch_pointwise_dims(spec),
        weight.len(),
    )?;
    check_bias("pointwise.bias", bias, n)?;

    let mut out = vec![T::ZERO; shape.output_len];
    for (pixel, out_pixel) in y.chunks_exact(cm).zip(out.chunks_exact_mut(n)) {
        for (o, out_value) in out_pixel.iter_mut().enumerate() {
            let mut acc = bias.map_or(T::ZERO, |b| b[o]);
            for (k, &v) in pixel.iter().enumerate() {
                acc = acc + v * weight[o * cm + k];
            }
            *out_value = activate(activation, acc);
        }
    }
    Ok(out)
}

/// Both stages: [`depthwise`] then [`pointwise`].
///
/// # Errors
/// As [`depthwise`] and [`pointwise`].
#[allow(clippy::too_many_arguments)] // one argument per tensor, as PyTorch names them
pub fn forward<T: Element>(
    spec: &LayerSpec,
    x: &[T],
    dw_weight: &[T],
    dw_bias: Option<&[T]>,
    pw_weight: &[T],
    pw_bias: Option<&[T]>,
    activations: [Activation; 2],
) -> Result<Vec<T>, Error> {
    let y = depthwise(spec, x, dw_weight, dw_bias, activations[0])?;
    pointwise(spec, &y, pw_weight, pw_bias, activations[1])
}

/// A standard (not separable) `KH x KW` convolution from `C` to `N` channels with the same
/// stride, dilation and padding: `weight` in PyTorch's `[N, C, KH, KW]`. Used to show that a
/// separable layer whose weights factor a standard kernel computes the same thing.
///
/// # Errors
/// As [`depthwise`].
pub fn standard<T: Element>(
    spec: &LayerSpec,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
) -> Result<Vec<T>, Error> {
    let shape = shape_error(spec)?;
    let [h, w, c] = shape.input;
    let [oh, ow, n] = shape.output;
    let [kh, kw] = spec.kernel;
    Error::check_len("reference", "input", Dims::new([h, w, c]), x.len())?;
    Error::check_len(
        "reference",
        "weight",
        Dims::new([n, c, kh, kw]),
        weight.len(),
    )?;
    check_bias("bias", bias, n)?;
    let mut out = vec![T::ZERO; shape.output_len];
    for oy in 0..oh {
        for ox in 0..ow {
            for o in 0..n {
                let mut acc = bias.map_or(T::ZERO, |b| b[o]);
                for ci in 0..c {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * spec.stride[0] + ky * spec.dilation[0])
                                .checked_sub(shape.rows.pad_before);
                            let ix = (ox * spec.stride[1] + kx * spec.dilation[1])
                                .checked_sub(shape.cols.pad_before);
                            if let (Some(iy), Some(ix)) = (iy, ix)
                                && iy < h
                                && ix < w
                            {
                                acc = acc
                                    + x[(iy * w + ix) * c + ci]
                                        * weight[((o * c + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                out[(oy * ow + ox) * n + o] = acc;
            }
        }
    }
    Ok(out)
}

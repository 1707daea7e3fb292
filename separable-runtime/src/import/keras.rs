//! Keras and TFLite weight layouts, converted to PyTorch's.

use alloc::vec::Vec;

use separable_shape::LayerSpec;

use crate::error::BiasName;
use crate::{Dims, Element, Error, PytorchWeights};

/// The names a conversion gives its four tensors in errors.
pub(crate) struct Names {
    pub(crate) depthwise_weight: &'static str,
    pub(crate) depthwise_bias: &'static str,
    pub(crate) pointwise_weight: &'static str,
    pub(crate) pointwise_bias: &'static str,
}

/// The names of the weights of Keras's `DepthwiseConv2D` and `Conv2D` layers.
pub(crate) const KERAS_LAYERS: Names = Names {
    depthwise_weight: "depthwise_kernel",
    depthwise_bias: "depthwise_bias",
    pointwise_weight: "pointwise_kernel",
    pointwise_bias: "pointwise_bias",
};

/// The names of the weights of Keras's `SeparableConv2D` (one bias, after the pointwise stage).
pub(crate) const KERAS_SEPARABLE: Names = Names {
    pointwise_bias: "bias",
    ..KERAS_LAYERS
};

/// The names of a TFLite model's filter and bias tensors.
pub(crate) const TFLITE: Names = Names {
    depthwise_weight: "depthwise_weight",
    depthwise_bias: "depthwise_bias",
    pointwise_weight: "pointwise_weight",
    pointwise_bias: "pointwise_bias",
};

/// Converts Keras kernels to PyTorch's layouts for a layer declared as `spec`.
///
/// - `depthwise_kernel`: `DepthwiseConv2D.kernel` or `SeparableConv2D.depthwise_kernel`, shape
///   `(KH, KW, C, M)`, row-major (as `layer.get_weights()` returns it).
/// - `depthwise_bias`: `DepthwiseConv2D.bias`, shape `(C·M,)`; with `bias: both`.
/// - `pointwise_kernel`: `Conv2D.kernel` (1 x 1) or `SeparableConv2D.pointwise_kernel`, shape
///   `(1, 1, C·M, N)`.
/// - `pointwise_bias`: `Conv2D.bias` or `SeparableConv2D.bias`, shape `(N,)`; with
///   `bias: pointwise` or `both`.
///
/// Element `(kh, kw, c, m)` of the depthwise kernel becomes PyTorch's `[c·M + m, 0, kh, kw]`, and
/// `(0, 0, k, n)` of the pointwise kernel becomes `[n, k, 0, 0]`.
///
/// ```
/// use separable_runtime::{LayerSpec, import::keras_to_pytorch};
///
/// // Kernel 1 x 2, C = 1, M = 2, N = 1.
/// let spec = LayerSpec::new([3, 3, 1], 1).with_kernel([1, 2]).with_multiplier(2);
/// // Keras (1, 2, 1, 2): [[[[a0, b0]], [[a1, b1]]]]
/// let w = keras_to_pytorch(&spec, &[1.0f32, 10.0, 2.0, 20.0], None, &[3.0, 4.0], None)?;
/// assert_eq!(w.depthwise_weight, [1.0, 2.0, 10.0, 20.0]); // [2, 1, 1, 2]: channel m, then taps
/// assert_eq!(w.pointwise_weight, [3.0, 4.0]);
/// # Ok::<(), separable_runtime::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidSpec`] if `spec` has no valid shape, [`Error::Length`] for a tensor of the
/// wrong size, [`Error::MissingBias`] or [`Error::UnexpectedBias`] for a bias whose presence
/// disagrees with `spec.bias`.
pub fn keras_to_pytorch<T: Element>(
    spec: &LayerSpec,
    depthwise_kernel: &[T],
    depthwise_bias: Option<&[T]>,
    pointwise_kernel: &[T],
    pointwise_bias: Option<&[T]>,
) -> Result<PytorchWeights<T>, Error> {
    let context = "import::keras_to_pytorch";
    check_spec(context, spec)?;
    keras_in(
        context,
        &KERAS_LAYERS,
        spec,
        [depthwise_kernel, pointwise_kernel],
        [depthwise_bias, pointwise_bias],
    )
}

/// Converts TFLite tensors to PyTorch's layouts for a layer declared as `spec`.
///
/// - `depthwise_weight`: the filter of a `DEPTHWISE_CONV_2D` operator, shape
///   `[1, KH, KW, C·M]`.
/// - `depthwise_bias`: its bias, shape `[C·M]`; with `bias: both`.
/// - `pointwise_weight`: the filter of a 1 x 1 `CONV_2D` operator, shape `[N, 1, 1, C·M]`
///   (TFLite's OHWI), which is PyTorch's `[N, C·M, 1, 1]` element for element.
/// - `pointwise_bias`: its bias, shape `[N]`; with `bias: pointwise` or `both`.
///
/// The TFLite converter gives both operators a bias (zeros when the Keras layer had none):
/// declare such a layer with `bias: both`, or pass `None` for a bias of zeros.
///
/// ```
/// use separable_runtime::{LayerSpec, import::tflite_to_pytorch};
///
/// // Kernel 1 x 2, C = 2, M = 1, N = 1.
/// let spec = LayerSpec::new([3, 3, 2], 1).with_kernel([1, 2]);
/// // TFLite [1, 1, 2, 2]: tap 0 of channels 0 and 1, then tap 1.
/// let w = tflite_to_pytorch(&spec, &[1.0f32, 10.0, 2.0, 20.0], None, &[3.0, 4.0], None)?;
/// assert_eq!(w.depthwise_weight, [1.0, 2.0, 10.0, 20.0]); // [2, 1, 1, 2]
/// assert_eq!(w.pointwise_weight, [3.0, 4.0]);
/// # Ok::<(), separable_runtime::Error>(())
/// ```
///
/// # Errors
/// As [`keras_to_pytorch`].
pub fn tflite_to_pytorch<T: Element>(
    spec: &LayerSpec,
    depthwise_weight: &[T],
    depthwise_bias: Option<&[T]>,
    pointwise_weight: &[T],
    pointwise_bias: Option<&[T]>,
) -> Result<PytorchWeights<T>, Error> {
    let context = "import::tflite_to_pytorch";
    check_spec(context, spec)?;
    tflite_in(
        context,
        spec,
        [depthwise_weight, pointwise_weight],
        [depthwise_bias, pointwise_bias],
    )
}

fn check_spec(context: &'static str, spec: &LayerSpec) -> Result<(), Error> {
    spec.shape()
        .map(drop)
        .map_err(|error| Error::InvalidSpec { context, error })
}

/// [`keras_to_pytorch`] for a valid spec, with the given names in errors.
pub(crate) fn keras_in<T: Element>(
    context: &'static str,
    names: &Names,
    spec: &LayerSpec,
    [dk, pk]: [&[T]; 2],
    biases: [Option<&[T]>; 2],
) -> Result<PytorchWeights<T>, Error> {
    let [kh, kw] = spec.kernel;
    let (c, m, n) = (spec.input[2], spec.multiplier, spec.output_channels);
    let cm = c * m;
    let taps = kh * kw;
    Error::check_len(
        context,
        names.depthwise_weight,
        Dims::new([kh, kw, c, m]),
        dk.len(),
    )?;
    Error::check_len(
        context,
        names.pointwise_weight,
        Dims::new([1, 1, cm, n]),
        pk.len(),
    )?;
    let [depthwise_bias, pointwise_bias] = check_biases(context, names, spec, biases)?;
    // (KH, KW, C, M) is [tap][c·M + m]; PyTorch is [c·M + m][tap].
    let depthwise_weight = (0..cm * taps)
        .map(|i| dk[(i % taps) * cm + i / taps])
        .collect();
    // (1, 1, C·M, N) is [k][n]; PyTorch is [n][k].
    let pointwise_weight = (0..n * cm).map(|i| pk[(i % cm) * n + i / cm]).collect();
    Ok(PytorchWeights {
        depthwise_weight,
        depthwise_bias,
        pointwise_weight,
        pointwise_bias,
    })
}

/// [`tflite_to_pytorch`] for a valid spec.
pub(crate) fn tflite_in<T: Element>(
    context: &'static str,
    spec: &LayerSpec,
    [dw, pw]: [&[T]; 2],
    biases: [Option<&[T]>; 2],
) -> Result<PytorchWeights<T>, Error> {
    let [kh, kw] = spec.kernel;
    let cm = spec.input[2] * spec.multiplier;
    let n = spec.output_channels;
    let taps = kh * kw;
    Error::check_len(
        context,
        TFLITE.depthwise_weight,
        Dims::new([1, kh, kw, cm]),
        dw.len(),
    )?;
    Error::check_len(
        context,
        TFLITE.pointwise_weight,
        Dims::new([n, 1, 1, cm]),
        pw.len(),
    )?;
    let [depthwise_bias, pointwise_bias] = check_biases(context, &TFLITE, spec, biases)?;
    // [1, KH, KW, C·M] is [tap][k]; PyTorch is [k][tap].
    let depthwise_weight = (0..cm * taps)
        .map(|i| dw[(i % taps) * cm + i / taps])
        .collect();
    Ok(PytorchWeights {
        depthwise_weight,
        depthwise_bias,
        pointwise_weight: pw.to_vec(),
        pointwise_bias,
    })
}

/// Checks both biases against `spec.bias` and their lengths, and copies them.
fn check_biases<T: Element>(
    context: &'static str,
    names: &Names,
    spec: &LayerSpec,
    [dw, pw]: [Option<&[T]>; 2],
) -> Result<[Option<Vec<T>>; 2], Error> {
    let declared = BiasName(spec.bias);
    let cm = spec.input[2] * spec.multiplier;
    let stages = [
        (dw, spec.bias.depthwise(), names.depthwise_bias, cm),
        (
            pw,
            spec.bias.pointwise(),
            names.pointwise_bias,
            spec.output_channels,
        ),
    ];
    let mut out = [None, None];
    for (slot, (given, present, tensor, len)) in out.iter_mut().zip(stages) {
        *slot = match (present, given) {
            (true, Some(b)) => {
                Error::check_len(context, tensor, Dims::new([len]), b.len())?;
                Some(b.to_vec())
            }
            (false, None) => None,
            (false, Some(_)) => {
                return Err(Error::UnexpectedBias {
                    context,
                    tensor,
                    declared,
                });
            }
            (true, None) => {
                return Err(Error::MissingBias {
                    context,
                    tensor,
                    declared,
                });
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use separable_shape::Bias;

    /// Kernel 2 x 3, C = 2, M = 2, N = 3.
    fn spec() -> LayerSpec {
        LayerSpec::new([4, 5, 2], 3)
            .with_kernel([2, 3])
            .with_multiplier(2)
            .with_bias(Bias::Both)
    }

    #[test]
    fn keras_indices_map_as_documented() {
        let spec = spec();
        let (kh, kw, c, m, n) = (2, 3, 2, 2, 3);
        // Each element encodes its Keras index.
        let code =
            |a: usize, b: usize, c: usize, d: usize| (1000 * a + 100 * b + 10 * c + d) as f64;
        let dk: Vec<f64> = (0..kh * kw * c * m)
            .map(|i| code(i / (kw * c * m), i / (c * m) % kw, i / m % c, i % m))
            .collect();
        let pk: Vec<f64> = (0..c * m * n).map(|i| code(0, 0, i / n, i % n)).collect();
        let b = [1.0, 2.0, 3.0, 4.0];
        let w = keras_to_pytorch(&spec, &dk, Some(&b), &pk, Some(&b[..3])).unwrap();
        for cc in 0..c {
            for mm in 0..m {
                for y in 0..kh {
                    for x in 0..kw {
                        let pt = ((cc * m + mm) * kh + y) * kw + x;
                        assert_eq!(w.depthwise_weight[pt], code(y, x, cc, mm));
                    }
                }
            }
        }
        for o in 0..n {
            for k in 0..c * m {
                assert_eq!(w.pointwise_weight[o * c * m + k], code(0, 0, k, o));
            }
        }
        assert_eq!(w.depthwise_bias.as_deref(), Some(&b[..]));
        assert_eq!(w.pointwise_bias.as_deref(), Some(&b[..3]));
    }

    #[test]
    fn tflite_is_keras_flattened_and_pytorch_pointwise() {
        let spec = spec();
        let dk: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let pk: Vec<f32> = (0..12).map(|i| 100.0 + i as f32).collect();
        let keras = keras_to_pytorch(&spec, &dk, Some(&[0.0; 4]), &pk, Some(&[0.0; 3])).unwrap();
        let tflite = tflite_to_pytorch(
            &spec,
            &dk,
            Some(&[0.0; 4]),
            &keras.pointwise_weight,
            Some(&[0.0; 3]),
        )
        .unwrap();
        assert_eq!(keras, tflite);
    }

    #[test]
    fn errors_name_the_tensor_and_its_layout() {
        let spec = spec().with_bias(Bias::Pointwise);
        let e =
            keras_to_pytorch(&spec, &[0.0f32; 23], None, &[0.0; 12], Some(&[0.0; 3])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "import::keras_to_pytorch: `depthwise_kernel` has 23 elements, expected 24 \
             (shape [2, 3, 2, 2])"
        );
        let e =
            tflite_to_pytorch(&spec, &[0.0f32; 24], None, &[0.0; 11], Some(&[0.0; 3])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "import::tflite_to_pytorch: `pointwise_weight` has 11 elements, expected 12 \
             (shape [3, 1, 1, 4])"
        );
        let e =
            keras_to_pytorch(&spec, &[0.0f32; 24], Some(&[0.0; 4]), &[0.0; 12], None).unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnexpectedBias {
                    tensor: "depthwise_bias",
                    ..
                }
            ),
            "{e}"
        );
        let e = keras_to_pytorch(&spec, &[0.0f32; 24], None, &[0.0; 12], None).unwrap_err();
        assert!(
            matches!(
                e,
                Error::MissingBias {
                    tensor: "pointwise_bias",
                    ..
                }
            ),
            "{e}"
        );
        let e = keras_to_pytorch(
            &spec.with_multiplier(0),
            &[0.0f32; 0],
            None,
            &[0.0; 0],
            None,
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidSpec { .. }), "{e}");
    }
}

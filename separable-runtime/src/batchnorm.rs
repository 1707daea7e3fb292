//! Folding BatchNorm into the convolution before it.
//!
//! `MobileNet`s are trained as convolution → BatchNorm → ReLU. In inference (PyTorch's `eval()`,
//! Keras's `training=False`) BatchNorm is a fixed affine map per channel, so it folds into the
//! convolution's weights and bias. For output channel `o` of a convolution with weight `W` and
//! bias `b` (zero if it has none), followed by BatchNorm with `gamma`, `beta`, `running_mean`,
//! `running_var` and `eps`:
//!
//! ```text
//! scale[o] = gamma[o] / sqrt(running_var[o] + eps)
//! W'[o, ..] = W[o, ..] * scale[o]
//! b'[o]     = (b[o] - running_mean[o]) * scale[o] + beta[o]
//! ```
//!
//! computed in `f64` and rounded once to the element type. This holds for both stages of a
//! depthwise-separable layer: the depthwise convolution's output channel `c·M + m` has its own
//! BatchNorm channel exactly as a pointwise output channel `n` does. A block whose two stages
//! are each followed by BatchNorm therefore becomes a layer with `bias: both`:
//!
//! ```
//! use separable_runtime::batchnorm::BatchNorm;
//! use separable_runtime::PytorchWeights;
//!
//! // Two depthwise channels of one weight each (a 1 x 1 kernel), one output channel.
//! let raw = PytorchWeights {
//!     depthwise_weight: vec![2.0f32, 3.0],
//!     depthwise_bias: None,
//!     pointwise_weight: vec![1.0, 1.0],
//!     pointwise_bias: None,
//! };
//! let bn = BatchNorm {
//!     gamma: vec![1.0, 0.5],
//!     beta: vec![0.0, 1.0],
//!     running_mean: vec![1.0, 0.0],
//!     running_var: vec![4.0, 1.0],
//!     eps: 0.0,
//! };
//! let folded = raw.fold_batchnorm(Some(&bn), None)?;
//! assert_eq!(folded.depthwise_weight, [1.0, 1.5]); // 2 * 1/2, 3 * 0.5/1
//! assert_eq!(folded.depthwise_bias, Some(vec![-0.5, 1.0])); // (0 - 1) * 1/2 + 0, 0 * 0.5 + 1
//! assert_eq!(folded.pointwise_bias, None);
//! # Ok::<(), separable_runtime::Error>(())
//! ```

use alloc::vec::Vec;

use crate::{Dims, Element, Error, PytorchWeights};

/// The inference-time parameters of a BatchNorm layer over `C` channels: PyTorch's
/// `BatchNorm2d` (`weight`, `bias`, `running_mean`, `running_var`, `eps`) or Keras's
/// `BatchNormalization` (`gamma`, `beta`, `moving_mean`, `moving_variance`, `epsilon`).
///
/// Read one from a safetensors file with
/// [`SafetensorsFile::batchnorm`](crate::import::SafetensorsFile::batchnorm).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm<T> {
    /// The learned scale, PyTorch's `weight`.
    pub gamma: Vec<T>,
    /// The learned shift, PyTorch's `bias`.
    pub beta: Vec<T>,
    /// The running mean.
    pub running_mean: Vec<T>,
    /// The running (biased) variance.
    pub running_var: Vec<T>,
    /// Added to the variance before the square root: PyTorch's default is [`PYTORCH_EPS`]
    /// (`1e-5`), Keras's [`KERAS_EPS`] (`1e-3`).
    pub eps: f64,
}

/// PyTorch's default `eps` for `BatchNorm2d` (it is not stored in the state dict).
pub const PYTORCH_EPS: f64 = 1e-5;
/// Keras's default `epsilon` for `BatchNormalization`.
pub const KERAS_EPS: f64 = 1e-3;

impl<T: Element> BatchNorm<T> {
    /// The number of channels, the length of `gamma`.
    #[must_use]
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// The per-channel affine map BatchNorm applies in inference, `y = x * scale + shift`:
    /// `scale = gamma / sqrt(running_var + eps)` and `shift = beta - running_mean * scale`.
    ///
    /// # Errors
    /// [`Error::Length`] if `beta`, `running_mean` or `running_var` is not as long as `gamma`;
    /// [`Error::NonPositiveVariance`] for a channel whose `running_var + eps` is not positive.
    pub fn scale_and_shift(&self) -> Result<(Vec<f64>, Vec<f64>), Error> {
        self.affine("BatchNorm::scale_and_shift", &TENSORS)
    }

    fn affine(&self, context: &'static str, names: &Names) -> Result<(Vec<f64>, Vec<f64>), Error> {
        let c = self.channels();
        let shape = Dims::new([c]);
        Error::check_len(context, names.beta, shape, self.beta.len())?;
        Error::check_len(context, names.running_mean, shape, self.running_mean.len())?;
        Error::check_len(context, names.running_var, shape, self.running_var.len())?;
        let mut scale = Vec::with_capacity(c);
        let mut shift = Vec::with_capacity(c);
        for channel in 0..c {
            let var = self.running_var[channel].to_f64() + self.eps;
            // `partial_cmp` is `None` for NaN, which is rejected too.
            if var.partial_cmp(&0.0) != Some(core::cmp::Ordering::Greater) {
                return Err(Error::NonPositiveVariance {
                    context,
                    channel,
                    value: var.into(),
                });
            }
            let s = self.gamma[channel].to_f64() / libm::sqrt(var);
            scale.push(s);
            shift.push(self.beta[channel].to_f64() - self.running_mean[channel].to_f64() * s);
        }
        Ok((scale, shift))
    }
}

/// The names of the tensors of one fold, for errors.
struct Names {
    weight: &'static str,
    bias: &'static str,
    beta: &'static str,
    running_mean: &'static str,
    running_var: &'static str,
}

const TENSORS: Names = Names {
    weight: "weight",
    bias: "bias",
    beta: "beta",
    running_mean: "running_mean",
    running_var: "running_var",
};

const DEPTHWISE: Names = Names {
    weight: "depthwise.weight",
    bias: "depthwise.bias",
    beta: "depthwise BatchNorm beta",
    running_mean: "depthwise BatchNorm running_mean",
    running_var: "depthwise BatchNorm running_var",
};

const POINTWISE: Names = Names {
    weight: "pointwise.weight",
    bias: "pointwise.bias",
    beta: "pointwise BatchNorm beta",
    running_mean: "pointwise BatchNorm running_mean",
    running_var: "pointwise BatchNorm running_var",
};

/// Folds `bn` into a convolution whose weight is laid out output channel first (every PyTorch
/// `Conv2d` weight, `[O, I/groups, KH, KW]`) and whose bias is `bias` (`None` for
/// `bias=False`). Returns the folded weight (same layout) and bias (`O` values); see the
/// [module documentation](self) for the formulas.
///
/// ```
/// use separable_runtime::batchnorm::{fold, BatchNorm};
///
/// let bn = BatchNorm { gamma: vec![2.0f64], beta: vec![1.0], running_mean: vec![0.5],
///                      running_var: vec![1.0], eps: 0.0 };
/// let (w, b) = fold(&[1.0, -1.0], Some(&[3.0]), &bn)?;
/// assert_eq!((w, b), (vec![2.0, -2.0], vec![6.0])); // (3 - 0.5) * 2 + 1
/// # Ok::<(), separable_runtime::Error>(())
/// ```
///
/// # Errors
/// [`Error::Length`] if `beta`, `running_mean`, `running_var` or `bias` is not as long as
/// `gamma`, or the weight's length is not a multiple of it; [`Error::NonPositiveVariance`] for a
/// channel whose `running_var + eps` is not positive.
pub fn fold<T: Element>(
    weight: &[T],
    bias: Option<&[T]>,
    bn: &BatchNorm<T>,
) -> Result<(Vec<T>, Vec<T>), Error> {
    fold_in("batchnorm::fold", &TENSORS, weight, bias, bn)
}

fn fold_in<T: Element>(
    context: &'static str,
    names: &Names,
    weight: &[T],
    bias: Option<&[T]>,
    bn: &BatchNorm<T>,
) -> Result<(Vec<T>, Vec<T>), Error> {
    let (scale, shift) = bn.affine(context, names)?;
    let c = scale.len();
    // Weights per output channel; a weight that does not split evenly is reported against the
    // next whole number of weights per channel.
    let per = if c == 0 {
        0
    } else {
        weight.len().div_ceil(c).max(1)
    };
    Error::check_len(context, names.weight, Dims::new([c, per]), weight.len())?;
    if let Some(b) = bias {
        Error::check_len(context, names.bias, Dims::new([c]), b.len())?;
    }
    let folded_weight = weight
        .iter()
        .enumerate()
        .map(|(i, &w)| T::from_f64(w.to_f64() * scale[i / per]))
        .collect();
    let folded_bias = (0..c)
        .map(|o| {
            let b = bias.map_or(0.0, |b| b[o].to_f64());
            // (b - mean) * scale + beta, with shift = beta - mean * scale.
            T::from_f64(b * scale[o] + shift[o])
        })
        .collect();
    Ok((folded_weight, folded_bias))
}

impl<T: Element> PytorchWeights<T> {
    /// Folds a BatchNorm after the depthwise stage (over its `C·M` channels) and one after the
    /// pointwise stage (over its `N` channels) into the weights and biases; `None` leaves that
    /// stage as it is. A folded stage always has a bias, so a layer with both stages folded is
    /// declared with `bias: both`. See the [module documentation](crate::batchnorm) for the
    /// formulas.
    ///
    /// # Errors
    /// As [`fold`], naming the stage's tensors.
    pub fn fold_batchnorm(
        &self,
        depthwise: Option<&BatchNorm<T>>,
        pointwise: Option<&BatchNorm<T>>,
    ) -> Result<PytorchWeights<T>, Error> {
        let context = "PytorchWeights::fold_batchnorm";
        let stage =
            |names: &Names, weight: &Vec<T>, bias: &Option<Vec<T>>, bn: Option<&BatchNorm<T>>| {
                match bn {
                    Some(bn) => fold_in(context, names, weight, bias.as_deref(), bn)
                        .map(|(w, b)| (w, Some(b))),
                    None => Ok((weight.clone(), bias.clone())),
                }
            };
        let (depthwise_weight, depthwise_bias) = stage(
            &DEPTHWISE,
            &self.depthwise_weight,
            &self.depthwise_bias,
            depthwise,
        )?;
        let (pointwise_weight, pointwise_bias) = stage(
            &POINTWISE,
            &self.pointwise_weight,
            &self.pointwise_bias,
            pointwise,
        )?;
        Ok(PytorchWeights {
            depthwise_weight,
            depthwise_bias,
            pointwise_weight,
            pointwise_bias,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn bn(c: usize) -> BatchNorm<f64> {
        BatchNorm {
            gamma: (0..c).map(|i| 0.5 + i as f64).collect(),
            beta: (0..c).map(|i| 0.25 * i as f64).collect(),
            running_mean: (0..c).map(|i| 1.0 - i as f64).collect(),
            running_var: (0..c).map(|i| 0.5 + 2.0 * i as f64).collect(),
            eps: 1e-3,
        }
    }

    /// BatchNorm applied after a convolution, straight from its definition.
    fn batchnorm(bn: &BatchNorm<f64>, o: usize, x: f64) -> f64 {
        (x - bn.running_mean[o]) / (bn.running_var[o] + bn.eps).sqrt() * bn.gamma[o] + bn.beta[o]
    }

    #[test]
    fn folding_commutes_with_the_convolution() {
        // A 1 x 1 convolution 3 -> 2 on one pixel, with a bias, then BatchNorm; against the
        // folded convolution.
        let bn = bn(2);
        let weight = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75];
        let bias = [0.1, -0.2];
        let x = [1.0, 2.0, -3.0];
        let (fw, fb) = fold(&weight, Some(&bias), &bn).unwrap();
        for o in 0..2 {
            let conv: f64 = (0..3).map(|i| weight[o * 3 + i] * x[i]).sum::<f64>() + bias[o];
            let folded: f64 = (0..3).map(|i| fw[o * 3 + i] * x[i]).sum::<f64>() + fb[o];
            let want = batchnorm(&bn, o, conv);
            assert!((folded - want).abs() < 1e-12, "{o}: {folded} vs {want}");
        }
        let (_, fb0) = fold(&weight, None, &bn).unwrap();
        for (o, b) in fb0.iter().enumerate() {
            assert!((b - batchnorm(&bn, o, 0.0)).abs() < 1e-12);
        }
    }

    #[test]
    fn scale_and_shift_define_the_map() {
        let bn = bn(3);
        let (scale, shift) = bn.scale_and_shift().unwrap();
        for o in 0..3 {
            let x = 0.7 * o as f64 - 0.3;
            assert!((x * scale[o] + shift[o] - batchnorm(&bn, o, x)).abs() < 1e-12);
        }
    }

    #[test]
    fn wrong_lengths_and_variances_are_errors() {
        let mut short = bn(3);
        short.running_var.pop();
        let e = fold(&[0.0; 6], None, &short).unwrap_err();
        assert_eq!(
            e.to_string(),
            "batchnorm::fold: `running_var` has 2 elements, expected 3 (shape [3])"
        );
        let e = fold(&[0.0; 7], None, &bn(3)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "batchnorm::fold: `weight` has 7 elements, expected 9 (shape [3, 3])"
        );
        let e = fold(&[0.0; 6], Some(&[0.0; 2]), &bn(3)).unwrap_err();
        assert!(matches!(e, Error::Length { tensor: "bias", .. }), "{e}");
        let mut negative = bn(2);
        negative.running_var[1] = -1.0;
        negative.eps = 0.5;
        let e = fold(&[0.0; 2], None, &negative).unwrap_err();
        assert_eq!(
            e.to_string(),
            "batchnorm::fold: channel 1 has `running_var + eps` = -0.5, which is not positive"
        );
        let mut nan = bn(1);
        nan.running_var[0] = f64::NAN;
        assert!(matches!(
            fold(&[1.0], None, &nan),
            Err(Error::NonPositiveVariance { channel: 0, .. })
        ));
        // No channels: only an empty weight folds.
        let empty = BatchNorm::<f32> {
            gamma: vec![],
            beta: vec![],
            running_mean: vec![],
            running_var: vec![],
            eps: 1e-5,
        };
        assert_eq!(fold(&[], None, &empty).unwrap(), (vec![], vec![]));
        assert!(fold(&[1.0], None, &empty).is_err());
    }

    #[test]
    fn both_stages_fold_and_name_their_tensors() {
        let raw = PytorchWeights {
            depthwise_weight: vec![1.0; 4 * 9],
            depthwise_bias: None,
            pointwise_weight: vec![1.0; 2 * 4],
            pointwise_bias: Some(vec![0.5, 0.5]),
        };
        let folded = raw.fold_batchnorm(Some(&bn(4)), Some(&bn(2))).unwrap();
        let (w, b) = fold(&raw.depthwise_weight, None, &bn(4)).unwrap();
        assert_eq!(folded.depthwise_weight, w);
        assert_eq!(folded.depthwise_bias, Some(b));
        let (w, b) = fold(&raw.pointwise_weight, Some(&[0.5, 0.5]), &bn(2)).unwrap();
        assert_eq!(folded.pointwise_weight, w);
        assert_eq!(folded.pointwise_bias, Some(b));
        assert_eq!(raw.fold_batchnorm(None, None).unwrap(), raw);
        let e = raw.fold_batchnorm(Some(&bn(4)), Some(&bn(3))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PytorchWeights::fold_batchnorm: `pointwise.weight` has 8 elements, expected 9 \
             (shape [3, 3])"
        );
    }
}

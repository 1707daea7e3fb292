//! Reading safetensors files through the `safetensors` crate.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use ::safetensors::tensor::{TensorInfo, TensorView};
use ::safetensors::{Dtype, SafeTensors};
use separable_shape::LayerSpec;

use super::{Ctx, TensorNames};
use crate::batchnorm::BatchNorm;
use crate::error::BiasName;
use crate::weights::{pytorch_depthwise_dims, pytorch_pointwise_dims};
use crate::{Dims, Element, Error, PytorchWeights};

/// A parsed safetensors file: the header checked, the tensors borrowed from the bytes.
///
/// Parsing reads only the JSON header (bounded by the format to 100 MB) and checks that the
/// tensors' offsets tile the data exactly; reading a tensor converts its elements from `F32`,
/// `F64`, `F16` or `BF16` (little-endian, as the format stores them) to `f32` or `f64`. A
/// malformed file is an [`Error::InvalidFile`], never a panic.
///
/// ```
/// use separable_runtime::import::SafetensorsFile;
///
/// // A file with one F32 tensor `x` of shape [2]: the header's length (u64, little-endian),
/// // the JSON header, then the data.
/// let header = br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
/// let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
/// bytes.extend_from_slice(header);
/// bytes.extend([1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()));
///
/// let file = SafetensorsFile::parse(&bytes)?;
/// assert_eq!(file.names(), ["x"]);
/// assert_eq!(file.shape("x"), Some(vec![2]));
/// assert_eq!(file.read::<f64>("x")?, [1.5, -2.0]);
/// assert!(SafetensorsFile::parse(&bytes[..bytes.len() - 1]).is_err()); // truncated
/// # Ok::<(), separable_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct SafetensorsFile<'a> {
    file: SafeTensors<'a>,
}

const FILE: &str = "SafetensorsFile";

impl<'a> SafetensorsFile<'a> {
    /// Parses a whole file held in memory (read with `std::fs::read`, memory-mapped, or
    /// `include_bytes!`).
    ///
    /// # Errors
    /// [`Error::InvalidFile`] if the bytes are not a safetensors file: shorter than the 8-byte
    /// header length, a header length beyond the file or above 100 MB, a header that is not
    /// UTF-8 JSON of the format's schema, or tensor offsets that do not cover the data exactly.
    /// When the offsets or sizes are at fault, the message names the first tensor in data order
    /// that is (its offsets overlap, leave a gap, disagree with its shape and dtype, or run past
    /// the end of a truncated file).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse_in(
            Ctx {
                item: FILE,
                function: "parse",
            },
            bytes,
        )
    }

    pub(crate) fn parse_in(ctx: Ctx, bytes: &'a [u8]) -> Result<Self, Error> {
        SafeTensors::deserialize(bytes)
            .map(|file| SafetensorsFile { file })
            .map_err(|e| Error::InvalidFile {
                item: ctx.item,
                function: ctx.function,
                reason: locate_fault(bytes).unwrap_or_else(|| e.to_string()),
            })
    }

    /// The tensors' names, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        let mut names = self.file.names();
        names.sort_unstable();
        names
    }

    /// The number of tensors.
    #[must_use]
    pub fn len(&self) -> usize {
        self.file.len()
    }

    /// Whether the file holds no tensors.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
    }

    /// Whether the file has a tensor named `key`.
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.file.tensor(key).is_ok()
    }

    /// The shape of tensor `key`, outermost dimension first, or `None` if there is none.
    #[must_use]
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.file.tensor(key).ok().map(|t| t.shape().to_vec())
    }

    /// The elements of tensor `key` in row-major order, whatever its shape, converted to `T`
    /// (`F64` to `f32` rounds to nearest; every other conversion is exact).
    ///
    /// # Errors
    /// [`Error::MissingTensor`] if there is no such tensor, [`Error::TensorDtype`] if its dtype
    /// is not `F32`, `F64`, `F16` or `BF16`.
    pub fn read<T: Element>(&self, key: &str) -> Result<Vec<T>, Error> {
        self.read_in(
            Ctx {
                item: FILE,
                function: "read",
            },
            key,
            None,
        )
    }

    /// [`SafetensorsFile::read`], checking that the tensor has exactly the shape `shape`.
    ///
    /// # Errors
    /// As [`SafetensorsFile::read`], and [`Error::TensorShape`] for another shape.
    pub fn read_shaped<T: Element>(&self, key: &str, shape: Dims) -> Result<Vec<T>, Error> {
        self.read_in(
            Ctx {
                item: FILE,
                function: "read_shaped",
            },
            key,
            Some(shape),
        )
    }

    /// The four tensors of a layer declared as `spec`, in PyTorch's layouts, named by `names`.
    ///
    /// The weights must have exactly the shapes `[C·M, 1, KH, KW]` and `[N, C·M, 1, 1]`. The
    /// biases follow `spec.bias`: a declared bias must be in the file (shape `[C·M]` or `[N]`),
    /// and a bias the layer does not declare must not be, since ignoring it would silently
    /// change the layer's results. Other tensors in the file are ignored.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] if `spec` has no valid shape; otherwise, for the first tensor at
    /// fault: [`Error::MissingTensor`], [`Error::TensorShape`], [`Error::TensorDtype`],
    /// [`Error::MissingBiasTensor`] or [`Error::UnexpectedBiasTensor`].
    pub fn pytorch_weights<T: Element>(
        &self,
        spec: &LayerSpec,
        names: &TensorNames<'_>,
    ) -> Result<PytorchWeights<T>, Error> {
        let ctx = Ctx {
            item: FILE,
            function: "pytorch_weights",
        };
        spec.shape().map_err(|error| Error::InvalidSpec {
            context: "SafetensorsFile::pytorch_weights",
            error,
        })?;
        self.pytorch_weights_in(ctx, spec, names)
    }

    /// [`SafetensorsFile::pytorch_weights`] for a spec known to be valid (a layer's `SPEC`).
    pub(crate) fn pytorch_weights_in<T: Element>(
        &self,
        ctx: Ctx,
        spec: &LayerSpec,
        names: &TensorNames<'_>,
    ) -> Result<PytorchWeights<T>, Error> {
        let cm = spec.input[2] * spec.multiplier;
        let n = spec.output_channels;
        let declared = BiasName(spec.bias);
        let depthwise_weight = self.read_in(
            ctx,
            &names.key(names.depthwise_weight),
            Some(pytorch_depthwise_dims(spec)),
        )?;
        let depthwise_bias = self.bias_in(
            ctx,
            names.key(names.depthwise_bias),
            spec.bias.depthwise(),
            cm,
            declared,
        )?;
        let pointwise_weight = self.read_in(
            ctx,
            &names.key(names.pointwise_weight),
            Some(pytorch_pointwise_dims(spec)),
        )?;
        let pointwise_bias = self.bias_in(
            ctx,
            names.key(names.pointwise_bias),
            spec.bias.pointwise(),
            n,
            declared,
        )?;
        Ok(PytorchWeights {
            depthwise_weight,
            depthwise_bias,
            pointwise_weight,
            pointwise_bias,
        })
    }

    /// A PyTorch `BatchNorm2d`'s parameters: `{prefix}weight` (gamma), `{prefix}bias` (beta),
    /// `{prefix}running_mean` and `{prefix}running_var`, one-dimensional and of one length.
    /// PyTorch does not store `eps` in the state dict; its default is `1e-5`
    /// ([`PYTORCH_EPS`](crate::batchnorm::PYTORCH_EPS)). `{prefix}num_batches_tracked` is
    /// ignored.
    ///
    /// # Errors
    /// [`Error::MissingTensor`], [`Error::TensorDtype`], or [`Error::TensorShape`] if a tensor
    /// is not one-dimensional or not as long as `{prefix}weight`.
    pub fn batchnorm<T: Element>(&self, prefix: &str, eps: f64) -> Result<BatchNorm<T>, Error> {
        let ctx = Ctx {
            item: FILE,
            function: "batchnorm",
        };
        let key = |name: &str| {
            let mut key = String::with_capacity(prefix.len() + name.len());
            key.push_str(prefix);
            key.push_str(name);
            key
        };
        let gamma_key = key("weight");
        let channels = match self.file.tensor(&gamma_key) {
            Ok(t) => t.shape().iter().product(),
            Err(_) => 0, // reported as missing below
        };
        let shape = Dims::new([channels]);
        Ok(BatchNorm {
            gamma: self.read_in(ctx, &gamma_key, Some(shape))?,
            beta: self.read_in(ctx, &key("bias"), Some(shape))?,
            running_mean: self.read_in(ctx, &key("running_mean"), Some(shape))?,
            running_var: self.read_in(ctx, &key("running_var"), Some(shape))?,
            eps,
        })
    }

    fn bias_in<T: Element>(
        &self,
        ctx: Ctx,
        key: String,
        declared_present: bool,
        len: usize,
        declared: BiasName,
    ) -> Result<Option<Vec<T>>, Error> {
        match (declared_present, self.contains(&key)) {
            (true, true) => self.read_in(ctx, &key, Some(Dims::new([len]))).map(Some),
            (false, false) => Ok(None),
            (true, false) => Err(Error::MissingBiasTensor {
                item: ctx.item,
                function: ctx.function,
                key,
                declared,
            }),
            (false, true) => Err(Error::UnexpectedBiasTensor {
                item: ctx.item,
                function: ctx.function,
                key,
                declared,
            }),
        }
    }

    pub(crate) fn read_in<T: Element>(
        &self,
        ctx: Ctx,
        key: &str,
        shape: Option<Dims>,
    ) -> Result<Vec<T>, Error> {
        let Ok(view) = self.file.tensor(key) else {
            return Err(Error::MissingTensor {
                item: ctx.item,
                function: ctx.function,
                key: key.to_string(),
            });
        };
        if let Some(expected) = shape
            && view.shape() != expected.as_slice()
        {
            return Err(Error::TensorShape {
                item: ctx.item,
                function: ctx.function,
                key: key.to_string(),
                expected,
                actual: view.shape().to_vec(),
            });
        }
        convert(&view).ok_or_else(|| Error::TensorDtype {
            item: ctx.item,
            function: ctx.function,
            key: key.to_string(),
            actual: view.dtype().to_string(),
        })
    }
}

/// A header as the format defines it: `__metadata__` (not read here) and the tensors by name.
#[derive(serde::Deserialize)]
struct Header {
    #[serde(rename = "__metadata__")]
    _metadata: Option<serde::de::IgnoredAny>,
    #[serde(flatten)]
    tensors: alloc::collections::BTreeMap<String, TensorInfo>,
}

/// Why a file whose header is JSON of the format's schema was rejected, naming the tensor at
/// fault: the `safetensors` parser reports offsets and sizes that do not tile the data without
/// saying which tensor's (`invalid shape, data type, or offset for tensor`, `incomplete
/// metadata, file not fully covered`). `None` if the header is not such JSON, or if this walk
/// finds nothing wrong (the parser's own message is then used).
///
/// The walk is the format's rule: sorted by offsets, each tensor starts where the previous one
/// ends (the first at 0) and spans exactly its elements' bytes, and the last one ends at the
/// end of the file.
fn locate_fault(bytes: &[u8]) -> Option<String> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(len)?)?;
    let data = bytes.len() - 8 - len;
    let Header { tensors, .. } = serde_json::from_slice(header).ok()?;
    let mut sorted: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
    sorted.sort_by_key(|&(name, info)| (info.data_offsets, name));
    let mut previous: Option<&str> = None;
    let mut at = 0;
    for (name, info) in sorted {
        let (start, end) = info.data_offsets;
        let (dtype, shape) = (info.dtype, &info.shape);
        if end < start {
            return Some(format!(
                "tensor `{name}` has data_offsets [{start}, {end}], which end before they start"
            ));
        }
        if start != at {
            let problem = if start < at {
                "overlaps"
            } else {
                "leaves a gap after"
            };
            return Some(match previous {
                Some(previous) => format!(
                    "tensor `{name}` starts at byte {start} of the data, but `{previous}` ends at \
                     {at}: it {problem} `{previous}`"
                ),
                None => format!(
                    "tensor `{name}` starts at byte {start} of the data, but the first tensor \
                     must start at 0"
                ),
            });
        }
        let bits = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize()));
        let Some(bits) = bits else {
            return Some(format!(
                "tensor `{name}` has shape {shape:?}, whose size in {dtype} overflows"
            ));
        };
        if bits % 8 != 0 || end - start != bits / 8 {
            return Some(format!(
                "tensor `{name}` of dtype {dtype} and shape {shape:?} needs {bits} bits, but its \
                 data_offsets [{start}, {end}] hold {} bytes",
                end - start
            ));
        }
        if end > data {
            return Some(format!(
                "tensor `{name}` ends at byte {end} of the data, but the file holds {data} bytes \
                 of data (truncated?)"
            ));
        }
        previous = Some(name);
        at = end;
    }
    (at != data).then(|| match previous {
        Some(last) => format!(
            "the last tensor, `{last}`, ends at byte {at} of the data, but the file holds {data} \
             bytes of data: {} bytes belong to no tensor",
            data - at
        ),
        None => format!("the header lists no tensors, but the file holds {data} bytes of data"),
    })
}

/// The elements of `view` as `T`, or `None` for a dtype that is not a float of 16 to 64 bits.
fn convert<T: Element>(view: &TensorView<'_>) -> Option<Vec<T>> {
    let data = view.data();
    let values = match view.dtype() {
        Dtype::F32 => map(data, |b| f64::from(f32::from_le_bytes(b))),
        Dtype::F64 => map(data, f64::from_le_bytes),
        Dtype::F16 => map(data, |b| half::f16::from_le_bytes(b).to_f64()),
        Dtype::BF16 => map(data, |b| half::bf16::from_le_bytes(b).to_f64()),
        _ => return None,
    };
    Some(values)
}

/// Decodes little-endian elements of `N` bytes. The parser has checked that `data` holds a
/// whole number of elements.
fn map<T: Element, const N: usize>(data: &[u8], decode: impl Fn([u8; N]) -> f64) -> Vec<T> {
    data.chunks_exact(N)
        .map(|chunk| {
            let mut bytes = [0; N];
            bytes.copy_from_slice(chunk);
            T::from_f64(decode(bytes))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data: small integers and halves
mod tests {
    use super::*;
    use alloc::borrow::Cow;
    use separable_shape::Bias;

    /// A tensor to serialize with the `safetensors` crate.
    struct Raw {
        dtype: Dtype,
        shape: Vec<usize>,
        data: Vec<u8>,
    }

    impl ::safetensors::View for &Raw {
        fn dtype(&self) -> Dtype {
            self.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(&self.data)
        }
        fn data_len(&self) -> usize {
            self.data.len()
        }
    }

    fn raw(dtype: Dtype, shape: &[usize], values: &[f64]) -> Raw {
        let data = match dtype {
            Dtype::F32 => values
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect(),
            Dtype::F64 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
            Dtype::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
                .collect(),
            Dtype::BF16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f64(v).to_le_bytes())
                .collect(),
            Dtype::I64 => values
                .iter()
                .flat_map(|&v| (v as i64).to_le_bytes())
                .collect(),
            other => panic!("no encoder for {other}"),
        };
        Raw {
            dtype,
            shape: shape.to_vec(),
            data,
        }
    }

    fn file(tensors: &[(&str, &Raw)]) -> Vec<u8> {
        ::safetensors::serialize(tensors.iter().map(|&(k, v)| (k, v)), None).unwrap()
    }

    /// 2 x 2 x 2 input, kernel 1 x 2, multiplier 1, 3 outputs.
    fn spec(bias: Bias) -> LayerSpec {
        LayerSpec::new([2, 2, 2], 3)
            .with_kernel([1, 2])
            .with_bias(bias)
    }

    #[test]
    fn every_float_dtype_converts() {
        // Values exact in every format (small integers and halves).
        let values = [0.5, -1.0, 2.0, -3.5, 6.0, 0.0];
        let tensors: Vec<(String, Raw)> = [Dtype::F32, Dtype::F64, Dtype::F16, Dtype::BF16]
            .iter()
            .map(|&d| (d.to_string(), raw(d, &[2, 3], &values)))
            .collect();
        let refs: Vec<(&str, &Raw)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let bytes = file(&refs);
        let f = SafetensorsFile::parse(&bytes).unwrap();
        assert_eq!(f.names(), ["BF16", "F16", "F32", "F64"]);
        for (name, _) in &tensors {
            assert_eq!(
                f.read::<f32>(name).unwrap(),
                values.map(|v| v as f32),
                "{name}"
            );
            assert_eq!(f.read::<f64>(name).unwrap(), values, "{name}");
            assert_eq!(
                f.read_shaped::<f64>(name, Dims::new([2, 3])).unwrap(),
                values
            );
        }
    }

    #[test]
    fn half_precision_rounding_is_the_formats() {
        // 0.1 is not exact in F16 or BF16: reading gives the stored value, not 0.1.
        let bytes = file(&[
            ("h", &raw(Dtype::F16, &[1], &[0.1])),
            ("b", &raw(Dtype::BF16, &[1], &[0.1])),
            ("d", &raw(Dtype::F64, &[1], &[0.1])),
        ]);
        let f = SafetensorsFile::parse(&bytes).unwrap();
        assert_eq!(f.read::<f64>("h").unwrap(), [0.099_975_585_937_5]);
        assert_eq!(f.read::<f64>("b").unwrap(), [0.100_097_656_25]);
        assert_eq!(f.read::<f32>("d").unwrap(), [0.1f32]);
    }

    #[test]
    fn pytorch_weights_follow_the_spec() {
        let dw = raw(Dtype::F32, &[2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let db = raw(Dtype::F16, &[2], &[0.5, -0.5]);
        let pw = raw(Dtype::BF16, &[3, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let pb = raw(Dtype::F64, &[3], &[7.0, 8.0, 9.0]);
        let steps = raw(Dtype::I64, &[], &[3.0]);
        let bytes = file(&[
            ("m.depthwise.weight", &dw),
            ("m.depthwise.bias", &db),
            ("m.pointwise.weight", &pw),
            ("m.pointwise.bias", &pb),
            ("m.num_batches_tracked", &steps),
        ]);
        let f = SafetensorsFile::parse(&bytes).unwrap();
        let names = TensorNames::pytorch("m.");
        let w = f.pytorch_weights::<f32>(&spec(Bias::Both), &names).unwrap();
        assert_eq!(w.depthwise_weight, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(w.depthwise_bias.as_deref(), Some(&[0.5, -0.5][..]));
        assert_eq!(w.pointwise_weight, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(w.pointwise_bias.as_deref(), Some(&[7.0, 8.0, 9.0][..]));

        let e = f
            .pytorch_weights::<f32>(&spec(Bias::Pointwise), &names)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "SafetensorsFile::pytorch_weights: the file has `m.depthwise.bias`, but the layer is \
             declared with `bias: pointwise`"
        );
        let e = f
            .pytorch_weights::<f32>(&spec(Bias::Both), &names.with_prefix("n."))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "SafetensorsFile::pytorch_weights: `n.depthwise.weight` is not in the file"
        );
        let e = f
            .pytorch_weights::<f32>(&spec(Bias::Both).with_kernel([2, 1]), &names)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "SafetensorsFile::pytorch_weights: `m.depthwise.weight` has shape [2, 1, 1, 2], \
             expected [2, 1, 2, 1]"
        );
        let e = f
            .read_shaped::<f32>("m.num_batches_tracked", Dims::new([]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "SafetensorsFile::read_shaped: `m.num_batches_tracked` has dtype I64, expected F32, \
             F64, F16 or BF16"
        );
        let e = f
            .pytorch_weights::<f32>(&spec(Bias::Both).with_kernel([0, 1]), &names)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidSpec { .. }), "{e}");
    }

    #[test]
    fn batchnorm_tensors_must_agree() {
        let ones = raw(Dtype::F32, &[3], &[1.0; 3]);
        let two = raw(Dtype::F32, &[2], &[1.0; 2]);
        let bytes = file(&[
            ("bn.weight", &ones),
            ("bn.bias", &ones),
            ("bn.running_mean", &two),
            ("bn.running_var", &ones),
        ]);
        let f = SafetensorsFile::parse(&bytes).unwrap();
        let e = f.batchnorm::<f32>("bn.", 1e-5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SafetensorsFile::batchnorm: `bn.running_mean` has shape [2], expected [3]"
        );
        let e = f.batchnorm::<f32>("nn.", 1e-5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SafetensorsFile::batchnorm: `nn.weight` is not in the file"
        );
    }

    #[test]
    fn corrupted_headers_never_panic() {
        let good = file(&[
            ("a", &raw(Dtype::F16, &[2, 3], &[1.0; 6])),
            ("b", &raw(Dtype::F32, &[3], &[2.0; 3])),
        ]);
        let header_end =
            8 + usize::try_from(u64::from_le_bytes(good[..8].try_into().unwrap())).unwrap();
        let mut parsed = 0;
        for i in 0..header_end {
            for byte in *b"0129[]{}\",: -e\xff" {
                let mut bytes = good.clone();
                bytes[i] = byte;
                if let Ok(f) = SafetensorsFile::parse(&bytes) {
                    parsed += 1;
                    for name in f.names() {
                        let _ = f.read::<f32>(name);
                        let _ = f.read_shaped::<f64>(name, Dims::new([3]));
                    }
                }
            }
        }
        // Some corruptions leave a valid file (a digit in a name, a space in the JSON).
        assert!(parsed > 0);
    }

    /// A file with a hand-written header (the length field kept consistent) and `data`.
    fn with_header(header: &str, data: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        bytes
    }

    #[test]
    fn offsets_that_do_not_tile_the_data_name_the_tensor() {
        let reason =
            |header: &str, data: usize| match SafetensorsFile::parse(&with_header(header, data))
                .unwrap_err()
            {
                Error::InvalidFile { reason, .. } => reason,
                other => panic!("{other:?}"),
            };
        let t = |name: &str, dtype: &str, shape: &str, start: usize, end: usize| {
            format!(
                r#""{name}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{start},{end}]}}"#
            )
        };
        let two = |a: String, b: String| format!("{{{a},{b}}}");
        assert_eq!(
            reason(
                &two(t("a", "F32", "[2]", 0, 8), t("b", "F32", "[3]", 8, 18)),
                18
            ),
            "tensor `b` of dtype F32 and shape [3] needs 96 bits, but its data_offsets [8, 18] \
             hold 10 bytes"
        );
        assert_eq!(
            reason(
                &two(t("a", "F32", "[2]", 0, 8), t("b", "F32", "[1]", 4, 8)),
                8
            ),
            "tensor `b` starts at byte 4 of the data, but `a` ends at 8: it overlaps `a`"
        );
        assert_eq!(
            reason(
                &two(t("a", "F32", "[1]", 0, 4), t("b", "F32", "[1]", 8, 12)),
                12
            ),
            "tensor `b` starts at byte 8 of the data, but `a` ends at 4: it leaves a gap after `a`"
        );
        assert_eq!(
            reason(&format!("{{{}}}", t("a", "F32", "[1]", 4, 8)), 8),
            "tensor `a` starts at byte 4 of the data, but the first tensor must start at 0"
        );
        assert_eq!(
            reason(&format!("{{{}}}", t("a", "F32", "[1]", 4, 0)), 4),
            "tensor `a` has data_offsets [4, 0], which end before they start"
        );
        assert_eq!(
            reason(
                &two(t("a", "F16", "[2]", 0, 4), t("b", "F64", "[2]", 4, 20)),
                12
            ),
            "tensor `b` ends at byte 20 of the data, but the file holds 12 bytes of data \
             (truncated?)"
        );
        assert_eq!(
            reason(&format!("{{{}}}", t("a", "U8", "[3]", 0, 3)), 5),
            "the last tensor, `a`, ends at byte 3 of the data, but the file holds 5 bytes of \
             data: 2 bytes belong to no tensor"
        );
        assert_eq!(
            reason("{}", 1),
            "the header lists no tensors, but the file holds 1 bytes of data"
        );
        assert_eq!(
            reason(&format!("{{{}}}", t("a", "F4", "[3]", 0, 1)), 1),
            "tensor `a` of dtype F4 and shape [3] needs 12 bits, but its data_offsets [0, 1] \
             hold 1 bytes"
        );
        let huge = format!("[{}, 2]", usize::MAX);
        assert_eq!(
            reason(&format!("{{{}}}", t("a", "F32", &huge, 0, 0)), 0),
            format!(
                "tensor `a` has shape [{}, 2], whose size in F32 overflows",
                usize::MAX
            )
        );
        // Headers that are not JSON of the schema keep the parser's message.
        assert!(reason("{\"a\":1}", 0).starts_with("invalid JSON in header"));
    }

    #[test]
    fn malformed_files_are_errors() {
        let good = file(&[("x", &raw(Dtype::F32, &[2], &[1.0, 2.0]))]);
        assert!(SafetensorsFile::parse(&good).is_ok());
        for cut in 0..good.len() {
            let e = SafetensorsFile::parse(&good[..cut]).unwrap_err();
            assert!(matches!(e, Error::InvalidFile { .. }), "{cut}: {e}");
        }
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(SafetensorsFile::parse(&huge).is_err());
        let mut garbage = good.clone();
        garbage[8] = b'[';
        assert!(SafetensorsFile::parse(&garbage).is_err());
        let mut extra = good;
        extra.push(0);
        assert!(SafetensorsFile::parse(&extra).is_err());
        assert!(SafetensorsFile::parse(&[]).is_err());
        let empty = file(&[]);
        assert!(SafetensorsFile::parse(&empty).unwrap().is_empty());
    }
}

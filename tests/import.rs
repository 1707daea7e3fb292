//! Weights from PyTorch, Keras and TFLite through each import path, against the frameworks'
//! own outputs.
//!
//! `tests/data/mobilenet_v1_025*.safetensors` and `tests/data/keras_tflite.safetensors` are
//! written by `scripts/export_pytorch.py` (see its docstring for what each tensor is); the
//! tests need no Python.

use std::fmt::Write as _;

use separable::batchnorm::{self, BatchNorm};
use separable::{
    Bias, Dims, Error, Layer, PytorchWeights, SafetensorsFile, Tensor, TensorData, TensorNames,
    separable_conv,
};

const RAW: &[u8] = include_bytes!("data/mobilenet_v1_025.safetensors");
const FOLDED: &[u8] = include_bytes!("data/mobilenet_v1_025_folded.safetensors");
const IO: &[u8] = include_bytes!("data/mobilenet_v1_025_io.safetensors");
const KERAS_TFLITE: &[u8] = include_bytes!("data/keras_tflite.safetensors");

/// The largest `|ours - framework|` accepted, as the issue asks of the MobileNet blocks.
const TOLERANCE: f64 = 1e-4;

// The 13 blocks of the MobileNet v1 0.25 body on a 32 x 32 x 8 input, with PyTorch's
// `padding=1` (at stride 2 this is not TensorFlow's `same`), BatchNorm folded into both stages.
separable_conv! { pub struct B0 { input: 32 x 32 x 8, output: 16, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B1 { input: 32 x 32 x 16, output: 32, stride: 2, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B2 { input: 16 x 16 x 32, output: 32, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B3 { input: 16 x 16 x 32, output: 64, stride: 2, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B4 { input: 8 x 8 x 64, output: 64, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B5 { input: 8 x 8 x 64, output: 128, stride: 2, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B6 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B7 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B8 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B9 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B10 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B11 { input: 4 x 4 x 128, output: 256, stride: 2, padding: 1, bias: both, activation: relu } }
separable_conv! { pub struct B12 { input: 2 x 2 x 256, output: 256, padding: 1, bias: both, activation: relu } }

/// Calls `$f::<Bi>(i)` for every block, in order, collecting the results.
macro_rules! each_block {
    ($f:ident) => {
        [
            $f::<B0>(0),
            $f::<B1>(1),
            $f::<B2>(2),
            $f::<B3>(3),
            $f::<B4>(4),
            $f::<B5>(5),
            $f::<B6>(6),
            $f::<B7>(7),
            $f::<B8>(8),
            $f::<B9>(9),
            $f::<B10>(10),
            $f::<B11>(11),
            $f::<B12>(12),
        ]
    };
}

/// The chain compiles only if each block's output is the next block's input.
#[allow(dead_code)]
fn chain(x: &Tensor<32, 32, 8>, b: &Blocks) -> Tensor<2, 2, 256> {
    let x = b.0.forward(x);
    let x = b.1.forward(&x);
    let x = b.2.forward(&x);
    let x = b.3.forward(&x);
    let x = b.4.forward(&x);
    let x = b.5.forward(&x);
    let x = b.6.forward(&x);
    let x = b.7.forward(&x);
    let x = b.8.forward(&x);
    let x = b.9.forward(&x);
    let x = b.10.forward(&x);
    let x = b.11.forward(&x);
    b.12.forward(&x)
}

type Blocks = (B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12);

fn ok<T>(r: Result<T, Error>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The error of a call that must fail (layers do not implement `Debug`, so no `unwrap_err`).
#[track_caller]
fn err<T>(r: Result<T, Error>) -> Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// A `[1, C, H, W]` tensor of the I/O file as HWC, checking its shape.
fn nchw_as_hwc(io: &SafetensorsFile<'_>, key: &str, [h, w, c]: [usize; 3]) -> Vec<f32> {
    let chw = ok(io.read_shaped::<f32>(key, Dims::new([1, c, h, w])), key);
    let mut hwc = vec![0.0; chw.len()];
    for (i, v) in chw.into_iter().enumerate() {
        let (ch, y, x) = (i / (h * w), i / w % h, i % w);
        hwc[(y * w + x) * c + ch] = v;
    }
    hwc
}

/// The largest `|got - want|`, failing on a NaN.
fn max_diff(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            let d = (f64::from(g) - f64::from(w)).abs();
            assert!(!d.is_nan(), "NaN: got {g}, want {w}");
            d
        })
        .fold(0.0, f64::max)
}

/// `0:1.2e-6 1:...` for a log line.
fn list(values: &[f64]) -> String {
    let mut s = String::new();
    for (i, v) in values.iter().enumerate() {
        let _ = write!(s, "{}{i}:{v:.1e}", if i == 0 { "" } else { " " });
    }
    s
}

/// Runs block `i` on PyTorch's input to it and returns the largest difference from PyTorch's
/// output.
fn run_block<L: Layer<Elem = f32>>(i: usize, layer: &L) -> f64 {
    let io = ok(SafetensorsFile::parse(IO), "io file");
    let input_key = if i == 0 {
        "input".to_owned()
    } else {
        format!("features.{}.output", i - 1)
    };
    let x = nchw_as_hwc(&io, &input_key, L::SHAPE.input);
    let want = nchw_as_hwc(&io, &format!("features.{i}.output"), L::SHAPE.output);
    let x = ok(L::Input::from_hwc(&x), "input");
    let y = layer.forward(&x);
    max_diff(y.as_slice(), &want)
}

fn folded_file_block<L: Layer<Elem = f32>>(i: usize) -> f64 {
    let layer: L = ok(
        L::from_safetensors(FOLDED, &format!("features.{i}.")),
        L::NAME,
    );
    run_block(i, &layer)
}

#[test]
fn folded_file_matches_pytorch_block_by_block() {
    let errors = each_block!(folded_file_block);
    println!(
        "max |ours - PyTorch| per block (folded file): {}",
        list(&errors)
    );
    for (i, &e) in errors.iter().enumerate() {
        assert!(
            e <= TOLERANCE,
            "block {i}: max |diff| {e:e} > {TOLERANCE:e}"
        );
    }
}

/// Reads block `i`'s raw weights (F16 convolutions without bias) and both `BatchNorm2d` layers from the
/// raw state dict and folds them.
fn fold_raw<L: Layer<Elem = f32>>(i: usize) -> PytorchWeights<f32> {
    let raw = ok(SafetensorsFile::parse(RAW), "raw file");
    let prefix = format!("features.{i}.");
    let conv = ok(
        raw.pytorch_weights::<f32>(
            &L::SPEC.with_bias(Bias::None),
            &TensorNames::pytorch(&prefix),
        ),
        "raw weights",
    );
    let bn = |stage: &str| -> BatchNorm<f32> {
        ok(
            raw.batchnorm(&format!("{prefix}{stage}_bn."), batchnorm::PYTORCH_EPS),
            stage,
        )
    };
    ok(
        conv.fold_batchnorm(Some(&bn("depthwise")), Some(&bn("pointwise"))),
        "fold",
    )
}

fn raw_file_block<L: Layer<Elem = f32>>(i: usize) -> (f64, f64) {
    let folded = fold_raw::<L>(i);
    // PyTorch's folding (in float64, rounded once, like ours) of the same parameters.
    let theirs = ok(
        ok(SafetensorsFile::parse(FOLDED), "folded file")
            .pytorch_weights::<f32>(&L::SPEC, &TensorNames::pytorch(&format!("features.{i}."))),
        "folded weights",
    );
    let weights = [
        max_diff(&folded.depthwise_weight, &theirs.depthwise_weight),
        max_diff(
            folded.depthwise_bias.as_deref().unwrap_or_default(),
            theirs.depthwise_bias.as_deref().unwrap_or_default(),
        ),
        max_diff(&folded.pointwise_weight, &theirs.pointwise_weight),
        max_diff(
            folded.pointwise_bias.as_deref().unwrap_or_default(),
            theirs.pointwise_bias.as_deref().unwrap_or_default(),
        ),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let layer: L = ok(L::from_pytorch_weights(&folded), L::NAME);
    (run_block(i, &layer), weights)
}

#[test]
fn batchnorm_folded_in_rust_matches_pytorch() {
    let results = each_block!(raw_file_block);
    let outputs: Vec<f64> = results.iter().map(|r| r.0).collect();
    let weights: Vec<f64> = results.iter().map(|r| r.1).collect();
    println!(
        "max |ours - PyTorch| per block (raw file folded in Rust): {}",
        list(&outputs)
    );
    println!(
        "max |folded weight - PyTorch's folded weight| per block: {}",
        list(&weights)
    );
    for (i, (&o, &w)) in outputs.iter().zip(&weights).enumerate() {
        assert!(
            o <= TOLERANCE,
            "block {i}: output max |diff| {o:e} > {TOLERANCE:e}"
        );
        // Both sides compute in float64 and round once to float32.
        assert!(w <= 1e-6, "block {i}: folded weights differ by {w:e}");
    }
}

#[test]
fn the_raw_file_has_f16_weights_and_unfolded_batchnorm() {
    // What makes the two tests above meaningful: the raw file's convolutions are F16 (so the
    // conversion runs on real data), and folding changes them.
    let raw = ok(SafetensorsFile::parse(RAW), "raw file");
    let folded = ok(SafetensorsFile::parse(FOLDED), "folded file");
    assert_eq!(raw.names().len(), 13 * 12);
    assert_eq!(folded.names().len(), 13 * 4);
    let key = "features.5.pointwise.weight";
    assert_eq!(raw.shape(key), Some(vec![128, 64, 1, 1]));
    let w = ok(raw.read::<f32>(key), key);
    let f = ok(folded.read::<f32>(key), key);
    assert!(max_diff(&w, &f) > 0.1, "folding should change the weights");
    // A file with the raw convolutions and no bias is rejected by a `bias: both` layer.
    let e = err(B0::from_safetensors(RAW, "features.0."));
    assert_eq!(
        e.to_string(),
        "B0::from_safetensors: `features.0.depthwise.bias` is not in the file, but the layer is \
         declared with `bias: both`"
    );
}

// --- Keras and TFLite ------------------------------------------------------------------------

separable_conv! {
    /// Keras `SeparableConv2D(5, (3, 2), strides=2, padding="same", depth_multiplier=2)`.
    pub struct KerasSeparable {
        input: 8 x 7 x 3, output: 5, kernel: 3 x 2, stride: 2, multiplier: 2,
        padding: same, bias: pointwise,
    }
}

separable_conv! {
    /// Keras `DepthwiseConv2D((2, 3), depth_multiplier=2, activation="relu")` then
    /// `Conv2D(4, 1)`, both with biases; also the TFLite model converted from them.
    pub struct KerasLayers {
        input: 5 x 6 x 3, output: 4, kernel: 2 x 3, multiplier: 2, bias: both,
        depthwise_activation: relu,
    }
}

fn tf_case<L: Layer<Elem = f32>>(file: &SafetensorsFile<'_>, case: &str, layer: &L) -> f64 {
    let [h, w, c] = L::SHAPE.input;
    let [oh, ow, n] = L::SHAPE.output;
    let x = ok(
        file.read_shaped::<f32>(&format!("{case}.input"), Dims::new([1, h, w, c])),
        case,
    );
    let want = ok(
        file.read_shaped::<f32>(&format!("{case}.output"), Dims::new([1, oh, ow, n])),
        case,
    );
    let y = layer.forward(&ok(L::Input::from_hwc(&x), case));
    max_diff(y.as_slice(), &want)
}

#[test]
fn keras_and_tflite_layouts_match_tensorflow() {
    let file = ok(SafetensorsFile::parse(KERAS_TFLITE), "keras_tflite file");
    let read = |key: &str, dims: Dims| ok(file.read_shaped::<f32>(key, dims), key);

    let sep = ok(
        KerasSeparable::from_keras(
            &read("keras_separable.depthwise_kernel", Dims::new([3, 2, 3, 2])),
            &read("keras_separable.pointwise_kernel", Dims::new([1, 1, 6, 5])),
            Some(&read("keras_separable.bias", Dims::new([5]))),
        ),
        "from_keras",
    );
    let e_sep = tf_case(&file, "keras_separable", &sep);

    let layers = ok(
        KerasLayers::from_keras_layers(
            &read("keras_layers.depthwise_kernel", Dims::new([2, 3, 3, 2])),
            Some(&read("keras_layers.depthwise_bias", Dims::new([6]))),
            &read("keras_layers.pointwise_kernel", Dims::new([1, 1, 6, 4])),
            Some(&read("keras_layers.pointwise_bias", Dims::new([4]))),
        ),
        "from_keras_layers",
    );
    let e_layers = tf_case(&file, "keras_layers", &layers);

    let tflite = ok(
        KerasLayers::from_tflite(
            &read("tflite.depthwise_weight", Dims::new([1, 2, 3, 6])),
            Some(&read("tflite.depthwise_bias", Dims::new([6]))),
            &read("tflite.pointwise_weight", Dims::new([4, 1, 1, 6])),
            Some(&read("tflite.pointwise_bias", Dims::new([4]))),
        ),
        "from_tflite",
    );
    let e_tflite = tf_case(&file, "tflite", &tflite);
    // The TFLite weights are the Keras ones in another layout: the layers are identical.
    assert_eq!(tflite.to_pytorch(), layers.to_pytorch());

    println!(
        "max |ours - TensorFlow|: SeparableConv2D {e_sep:.1e}, DepthwiseConv2D + Conv2D \
         {e_layers:.1e}, TFLite {e_tflite:.1e}"
    );
    for (what, e) in [
        ("keras_separable", e_sep),
        ("keras_layers", e_layers),
        ("tflite", e_tflite),
    ] {
        assert!(e <= 1e-5, "{what}: max |diff| {e:e}");
    }
}

#[test]
fn keras_and_tflite_errors_name_the_tensor() {
    let e = err(KerasSeparable::from_keras(&[0.0; 36], &[0.0; 30], None));
    assert_eq!(
        e.to_string(),
        "Layer::from_keras: `bias` is missing; the layer is declared with `bias: pointwise`"
    );
    let e = err(KerasSeparable::from_keras(
        &[0.0; 35],
        &[0.0; 30],
        Some(&[0.0; 5]),
    ));
    assert_eq!(
        e.to_string(),
        "Layer::from_keras: `depthwise_kernel` has 35 elements, expected 36 (shape [3, 2, 3, 2])"
    );
    let e = err(KerasLayers::from_keras_layers(
        &[0.0; 36],
        None,
        &[0.0; 24],
        Some(&[0.0; 4]),
    ));
    assert_eq!(
        e.to_string(),
        "Layer::from_keras_layers: `depthwise_bias` is missing; the layer is declared with \
         `bias: both`"
    );
    let e = err(KerasLayers::from_tflite(
        &[0.0; 36],
        Some(&[0.0; 6]),
        &[0.0; 25],
        Some(&[0.0; 4]),
    ));
    assert_eq!(
        e.to_string(),
        "Layer::from_tflite: `pointwise_weight` has 25 elements, expected 24 (shape [4, 1, 1, 6])"
    );
}

// --- ndarray batches -------------------------------------------------------------------------

#[cfg(feature = "ndarray")]
#[test]
fn batches_match_tensorflow_and_single_images() {
    use separable::ndarray::{Array4, Axis, concatenate};

    let file = ok(SafetensorsFile::parse(KERAS_TFLITE), "keras_tflite file");
    let read = |key: &str| ok(file.read::<f32>(key), key);
    let layer = ok(
        KerasSeparable::from_keras(
            &read("keras_separable.depthwise_kernel"),
            &read("keras_separable.pointwise_kernel"),
            Some(&read("keras_separable.bias")),
        ),
        "from_keras",
    );
    let x = Array4::from_shape_vec((1, 8, 7, 3), read("keras_separable.input")).unwrap();
    let want = Array4::from_shape_vec((1, 4, 4, 5), read("keras_separable.output")).unwrap();
    // The TensorFlow image, its negation and a ramp.
    let ramp = Array4::from_shape_fn((1, 8, 7, 3), |(_, h, w, c)| {
        (h * 21 + w * 3 + c) as f32 / 84.0
    });
    let batch = concatenate(Axis(0), &[x.view(), (-&x).view(), ramp.view()]).unwrap();
    let y = ok(layer.forward_batch(batch.view()), "forward_batch");
    assert_eq!(y.dim(), (3, 4, 4, 5));
    let e = max_diff(
        y.index_axis(Axis(0), 0).as_slice().unwrap(),
        want.as_slice().unwrap(),
    );
    assert!(e <= 1e-5, "batch image 0 vs TensorFlow: {e:e}");
    for (i, image) in batch.outer_iter().enumerate() {
        let single = layer.forward(&ok(Tensor::from_array(image), "image"));
        assert_eq!(
            y.index_axis(Axis(0), i).as_slice().unwrap(),
            single.as_slice(),
            "batch image {i} differs from forward"
        );
    }
    // The same batch stored NCHW, viewed as NHWC without a copy.
    let nchw = batch
        .view()
        .permuted_axes([0, 3, 1, 2])
        .as_standard_layout()
        .into_owned();
    let nhwc = nchw.view().permuted_axes([0, 2, 3, 1]);
    assert!(nhwc.as_slice().is_none());
    assert_eq!(ok(layer.forward_batch(nhwc), "strided batch"), y);
    // An empty batch, and a batch of the wrong image size.
    let empty = ok(
        layer.forward_batch(Array4::zeros((0, 8, 7, 3)).view()),
        "empty",
    );
    assert_eq!(empty.dim(), (0, 4, 4, 5));
    let e = err(layer.forward_batch(Array4::zeros((2, 7, 8, 3)).view()));
    assert_eq!(
        e.to_string(),
        "Layer::forward_batch: `input` has shape [2, 7, 8, 3], expected [2, 8, 7, 3]"
    );
}

// --- Errors and dtypes, with files written here ----------------------------------------------

/// A safetensors file, written by hand from the format's definition: the header's length as a
/// little-endian u64, the JSON header, then each tensor's bytes in order.
fn safetensors(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut offset = 0;
    for (i, (key, dtype, shape, data)) in tensors.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let end = offset + data.len();
        let _ = write!(
            header,
            r#"{sep}"{key}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{offset},{end}]}}"#
        );
        offset = end;
    }
    header.push('}');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for (.., data) in tensors {
        bytes.extend_from_slice(data);
    }
    bytes
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f64_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f64::from(v).to_le_bytes())
        .collect()
}

/// BF16 is the upper half of an f32: exact for values whose lower 16 bits are zero.
fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| {
            let bits = v.to_bits();
            assert_eq!(bits & 0xffff, 0, "{v} is not exact in BF16");
            u16::try_from(bits >> 16).unwrap().to_le_bytes()
        })
        .collect()
}

/// F16 of normal f32 values with at most 11 significant bits and exponents in -14..=15.
fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| {
            let bits = v.to_bits();
            let half: u16 = if v == 0.0 {
                u16::try_from(bits >> 16).unwrap() // keeps the sign
            } else {
                let exp = i32::try_from((bits >> 23) & 0xff).unwrap() - 127;
                assert!(
                    (-14..=15).contains(&exp) && bits.trailing_zeros() >= 13,
                    "{v} is not exact in F16"
                );
                let sign = u16::try_from(bits >> 31).unwrap() << 15;
                let exp16 = u16::try_from(exp + 15).unwrap() << 10;
                sign | exp16 | u16::try_from((bits >> 13) & 0x3ff).unwrap()
            };
            half.to_le_bytes()
        })
        .collect()
}

separable_conv! { pub struct Small { input: 4 x 4 x 2, output: 3, padding: same, bias: both } }
separable_conv! { pub struct SmallNoBias { input: 4 x 4 x 2, output: 3, padding: same } }
separable_conv! { pub struct SmallF64 { input: 4 x 4 x 2, output: 3, padding: same, bias: both, dtype: f64 } }

/// Values exact in F16 and BF16: multiples of 1/8 up to 2.
fn small_weights() -> [Vec<f32>; 4] {
    let v = |n: usize, k: usize| (0..n).map(|i| ((i * k) % 17) as f32 / 8.0 - 1.0).collect();
    [v(18, 5), v(2, 3), v(6, 7), v(3, 11)]
}

/// Writes values in one dtype.
type Encoder = fn(&[f32]) -> Vec<u8>;

fn small_file(dtype: &str, encode: Encoder) -> Vec<u8> {
    let [dw, db, pw, pb] = small_weights();
    safetensors(&[
        ("l.depthwise.weight", dtype, &[2, 1, 3, 3], encode(&dw)),
        ("l.depthwise.bias", dtype, &[2], encode(&db)),
        ("l.pointwise.weight", dtype, &[3, 2, 1, 1], encode(&pw)),
        ("l.pointwise.bias", dtype, &[3], encode(&pb)),
    ])
}

#[test]
fn every_float_dtype_loads_the_same_layer() {
    let [dw, db, pw, pb] = small_weights();
    let want = ok(
        Small::from_pytorch(&dw, Some(&db), &pw, Some(&pb)),
        "from_pytorch",
    );
    let x = Tensor::<4, 4, 2>::from_fn(|h, w, c| (h * 8 + w * 2 + c) as f32 / 16.0 - 1.0);
    let y = want.forward(&x);
    let encoders: [(&str, Encoder); 4] = [
        ("F32", f32_bytes),
        ("F64", f64_bytes),
        ("F16", f16_bytes),
        ("BF16", bf16_bytes),
    ];
    for (dtype, encode) in encoders {
        let bytes = small_file(dtype, encode);
        let layer = ok(Small::from_safetensors(&bytes, "l."), dtype);
        assert_eq!(layer.to_pytorch(), want.to_pytorch(), "{dtype}");
        assert_eq!(layer.forward(&x), y, "{dtype}");
        let wide = ok(SmallF64::from_safetensors(&bytes, "l."), dtype);
        let widened: Vec<f64> = dw.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(
            wide.to_pytorch().depthwise_weight,
            widened,
            "{dtype} as f64"
        );
    }
}

#[test]
fn half_precision_values_are_the_stored_ones() {
    // 0.1 is stored as the nearest F16 (0x2e66) and BF16 (0x3dcd); reading gives exactly those
    // values (IEEE 754 binary16 and bfloat16), not 0.1.
    let bytes = safetensors(&[
        ("h", "F16", &[1], 0x2e66u16.to_le_bytes().to_vec()),
        ("b", "BF16", &[1], 0x3dcdu16.to_le_bytes().to_vec()),
        ("n", "F16", &[1], 0xfc00u16.to_le_bytes().to_vec()), // -inf
    ]);
    let file = ok(SafetensorsFile::parse(&bytes), "file");
    assert_eq!(ok(file.read::<f64>("h"), "h"), [0.099_975_585_937_5]);
    assert_eq!(ok(file.read::<f64>("b"), "b"), [0.100_097_656_25]);
    assert_eq!(ok(file.read::<f32>("n"), "n"), [f32::NEG_INFINITY]);
}

#[test]
fn file_errors_name_the_key_and_the_problem() {
    let good = small_file("F32", f32_bytes);
    assert!(Small::from_safetensors(&good, "l.").is_ok());

    // Missing key (another prefix).
    let e = err(Small::from_safetensors(&good, "m."));
    assert_eq!(
        e.to_string(),
        "Small::from_safetensors: `m.depthwise.weight` is not in the file"
    );

    // Wrong shape: the right number of elements, transposed kernel.
    let [dw, db, pw, pb] = small_weights();
    let transposed = safetensors(&[
        ("l.depthwise.weight", "F32", &[2, 1, 3, 3], f32_bytes(&dw)),
        ("l.depthwise.bias", "F32", &[2], f32_bytes(&db)),
        ("l.pointwise.weight", "F32", &[2, 3, 1, 1], f32_bytes(&pw)),
        ("l.pointwise.bias", "F32", &[3], f32_bytes(&pb)),
    ]);
    let e = err(Small::from_safetensors(&transposed, "l."));
    assert_eq!(
        e.to_string(),
        "Small::from_safetensors: `l.pointwise.weight` has shape [2, 3, 1, 1], expected [3, 2, 1, 1]"
    );

    // Wrong dtype.
    let ints = safetensors(&[
        ("l.depthwise.weight", "I32", &[2, 1, 3, 3], vec![0; 72]),
        ("l.depthwise.bias", "F32", &[2], f32_bytes(&db)),
    ]);
    let e = err(Small::from_safetensors(&ints, "l."));
    assert_eq!(
        e.to_string(),
        "Small::from_safetensors: `l.depthwise.weight` has dtype I32, expected F32, F64, F16 or BF16"
    );

    // An unexpected bias: the file has both, the layer declares none.
    let e = err(SmallNoBias::from_safetensors(&good, "l."));
    assert_eq!(
        e.to_string(),
        "SmallNoBias::from_safetensors: the file has `l.depthwise.bias`, but the layer is declared \
         with `bias: none`"
    );
    assert!(matches!(e, Error::UnexpectedBiasTensor { ref key, .. } if key == "l.depthwise.bias"));

    // Configurable names: the same file read with other names.
    let names = TensorNames {
        prefix: "l.",
        depthwise_weight: "depthwise.weight",
        depthwise_bias: "dw_bias",
        pointwise_weight: "pointwise.weight",
        pointwise_bias: "pointwise.bias",
    };
    let e = err(Small::from_safetensors_with(&good, &names));
    assert_eq!(
        e.to_string(),
        "Small::from_safetensors_with: `l.dw_bias` is not in the file, but the layer is declared \
         with `bias: both`"
    );
}

#[test]
fn malformed_files_are_errors_not_panics() {
    let good = small_file("F32", f32_bytes);
    let invalid = |bytes: &[u8], what: &str| -> String {
        match Small::from_safetensors(bytes, "l.") {
            Err(e @ Error::InvalidFile { .. }) => e.to_string(),
            Err(e) => panic!("{what}: expected InvalidFile, got {e:?}"),
            Ok(_) => panic!("{what}: expected InvalidFile, got a layer"),
        }
    };
    // Truncated anywhere: in the length, the header or the data.
    for cut in 0..good.len() {
        invalid(&good[..cut], &format!("cut at {cut}"));
    }
    let e = invalid(&good[..good.len() - 1], "last byte missing");
    assert!(
        e.starts_with("Small::from_safetensors: not a valid safetensors file: "),
        "{e}"
    );
    // The README's example: the last 4 of the data's 116 bytes missing.
    assert_eq!(
        invalid(&good[..good.len() - 4], "last value missing"),
        "Small::from_safetensors: not a valid safetensors file: tensor `l.pointwise.bias` ends \
         at byte 116 of the data, but the file holds 112 bytes of data (truncated?)"
    );
    // A header that is not JSON.
    let mut garbage = good.clone();
    for b in &mut garbage[8..20] {
        *b = b'#';
    }
    let e = invalid(&garbage, "garbage header");
    assert!(e.contains("invalid JSON in header"), "{e}");
    // Not UTF-8.
    let mut latin1 = good.clone();
    latin1[9] = 0xff;
    invalid(&latin1, "non-UTF-8 header");
    // Header lengths beyond the file, and beyond any file.
    for len in [good.len() as u64, 100_000_001, u64::MAX] {
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&len.to_le_bytes());
        let e = invalid(&huge, &format!("header length {len}"));
        assert!(e.contains("header"), "{e}");
    }
    // Offsets that overlap, or leave bytes over.
    let mut extra = good.clone();
    extra.push(0);
    invalid(&extra, "trailing byte");
    let overlapping = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (overlapping.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(overlapping);
    bytes.extend_from_slice(&[0; 8]);
    invalid(&bytes, "overlapping offsets");
    // A shape whose element count overflows.
    let overflow = safetensors(&[("a", "F32", &[usize::MAX, 2], vec![])]);
    invalid(&overflow, "overflowing shape");
    assert!(SafetensorsFile::parse(&[]).is_err());
}

#[test]
fn the_trait_is_enough_to_load_and_run_a_layer() {
    // Generic code sees the tensor types through `TensorData`.
    fn load_and_run<L: Layer<Elem = f32>>(bytes: &[u8], x: &[f32]) -> Result<Vec<f32>, Error> {
        let layer = L::from_safetensors(bytes, "l.")?;
        let y = layer.forward(&L::Input::from_hwc(x)?);
        Ok(y.as_slice().to_vec())
    }
    let bytes = small_file("F32", f32_bytes);
    let x: Vec<f32> = (0..32).map(|i| i as f32 / 32.0).collect();
    let y = ok(load_and_run::<Small>(&bytes, &x), "load_and_run");
    let [dw, db, pw, pb] = small_weights();
    let direct = ok(
        Small::from_pytorch(&dw, Some(&db), &pw, Some(&pb)),
        "from_pytorch",
    )
    .forward(&ok(Tensor::from_hwc(&x), "x"));
    assert_eq!(y, direct.as_slice());
    assert!(load_and_run::<Small>(&bytes, &x[1..]).is_err());
    assert_eq!(
        <<Small as Layer>::Output as TensorData<f32>>::SHAPE,
        [4, 4, 3]
    );
}

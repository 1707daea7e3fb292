//! Every loader under malformed data: property tests that feed thousands of generated inputs to
//! the tensor constructors (`from_hwc`, `from_chw`, the `ndarray` conversions), the slice
//! loaders (`from_pytorch`, `from_keras`, `from_keras_layers`, `from_tflite`) and the
//! safetensors paths (`SafetensorsFile`, `from_safetensors*`), and check that
//!
//! - no call panics: each runs under `std::panic::catch_unwind`, and a panic fails the case;
//! - wrong data is an `Err` whose message names the function, the tensor or key at fault and
//!   the problem, and valid data is `Ok` with exactly the values given (decoded here from the
//!   bytes, independently of the loader);
//! - weights with NaN and infinities load, and every dispatch path (`forward`, `forward_into`,
//!   and `forward_into_with`, `depthwise_into_with`, `pointwise_into_with` on each `Isa` this
//!   CPU supports) gives the reference kernels' NaN and infinities at the same places.
//!
//! `tests/robustness.rs` checks the same constructors on a fixed list of lengths and the IEEE
//! classes against a model; `tests/import.rs` checks hand-written files against the frameworks.
//! This file generates the inputs instead: random shapes, dtypes, offsets, headers and
//! corruptions, many per run.
//!
//! The runs are reproducible: the seed is fixed unless `PROPTEST_RNG_SEED` is set, and
//! `PROPTEST_CASES` overrides every test's number of cases. A failure prints the smallest
//! failing input that proptest's shrinking found. Each test prints how many inputs it tried and
//! how many were accepted (`cargo test --test malformed -- --nocapture`).

#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // encoding test floats by hand

use std::cell::Cell;
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestCaseResult, TestRunner};
use separable::ndarray::{Array3, ArrayView3, Axis, ShapeBuilder, s};
use separable::{
    Activation, Element, Error, Isa, Layer, PytorchWeights, SafetensorsFile, Tensor, TensorData,
    TensorNames, reference, separable_conv,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

separable_conv! {
    /// Both biases, a depth multiplier and a non-square kernel; tiny, in channel planes.
    struct Both { input: 5 x 4 x 3, output: 4, kernel: 3 x 2, multiplier: 2, padding: same, bias: both }
}

separable_conv! {
    /// `f64`, a pointwise bias only, stride 2 with PyTorch-style padding.
    struct Pointwise64 { input: 6 x 6 x 2, output: 3, stride: 2, padding: 1, bias: pointwise, dtype: f64 }
}

separable_conv! {
    /// No bias, no padding.
    struct Plain { input: 3 x 5 x 4, output: 2, kernel: 1 x 3 }
}

separable_conv! {
    /// Strips: interior runs through the row microkernel, border pixels through their loop.
    struct Strip { input: 20 x 20 x 40, output: 24, padding: same, bias: both, activation: relu6 }
}

separable_conv! {
    /// Strips in `f64`, a 5 x 5 window, a depth multiplier and stride 2.
    struct StripF64 {
        input: 12 x 12 x 10, output: 20, kernel: 5, multiplier: 2, stride: 2, padding: same,
        bias: both, dtype: f64,
    }
}

// ---------------------------------------------------------------------------------------------
// Running cases
// ---------------------------------------------------------------------------------------------

/// The seed of every run unless `PROPTEST_RNG_SEED` is set.
const SEED: u64 = 0x3a1f_0ddb_17e5_5eed;

/// How many inputs a test tried, and how many of them a loader accepted.
#[derive(Default)]
struct Tally {
    tried: Cell<u64>,
    accepted: Cell<u64>,
}

impl Tally {
    fn tried(&self, accepted: bool) {
        self.tried.set(self.tried.get() + 1);
        if accepted {
            self.accepted.set(self.accepted.get() + 1);
        }
    }
}

/// Runs `test` on `cases` generated values (or `PROPTEST_CASES`), then prints the tally; fails
/// with proptest's report (the shrunk input) if a case failed.
fn run<S>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value, &Tally) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Debug,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let mut config = Config::with_cases(cases);
    config.failure_persistence = None;
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    let tally = Tally::default();
    let result = TestRunner::new(config).run(&strategy, |value| test(value, &tally));
    let (tried, accepted) = (tally.tried.get(), tally.accepted.get());
    println!(
        "{name}: {cases} cases, {tried} inputs tried, {accepted} accepted, {} rejected",
        tried - accepted
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Calls `f`, turning a panic into a failed case.
fn guard<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked: {message}"))
    })
}

/// The error of a call that must fail, counted; its message must contain every one of `words`.
fn rejected<X>(
    tally: &Tally,
    what: &str,
    result: Result<X, Error>,
    words: &[&str],
) -> Result<Error, TestCaseError> {
    tally.tried(result.is_ok());
    let Err(e) = result else {
        return Err(TestCaseError::fail(format!("{what}: accepted")));
    };
    let message = e.to_string();
    for word in words {
        prop_assert!(
            message.contains(word),
            "{what}: the message does not contain {word:?}: {message}"
        );
    }
    Ok(e)
}

/// The value of a call that must succeed, counted.
fn accepted<X>(tally: &Tally, what: &str, result: Result<X, Error>) -> Result<X, TestCaseError> {
    tally.tried(result.is_ok());
    result.map_err(|e| TestCaseError::fail(format!("{what}: rejected: {e}")))
}

/// `a` and `b` are the same float: equal bits, or both NaN.
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_same<T: Element>(what: &str, got: &[T], want: &[f64]) -> TestCaseResult {
    prop_assert_eq!(got.len(), want.len(), "{}: length", what);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        prop_assert!(same(g.to_f64(), w), "{what}[{i}]: got {g:?}, want {w:?}");
    }
    Ok(())
}

/// `SplitMix64`: values for a case from one generated seed, so that shrinking works on the
/// structure of an input (lengths, presence, dtypes) and its values stay reproducible.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % n as u64).unwrap_or(0)
    }

    /// Uniform in `[-1, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// Mostly in `[-1, 1)`; one in `special` is NaN, an infinity, a signed zero or a
    /// subnormal.
    fn value(&mut self, special: usize) -> f64 {
        if special > 0 && self.below(special) == 0 {
            [
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
                0.0,
                f64::MIN_POSITIVE / 8.0,
            ][self.below(6)]
        } else {
            self.unit()
        }
    }

    fn values<T: Element>(&mut self, len: usize, special: usize) -> Vec<T> {
        (0..len).map(|_| T::from_f64(self.value(special))).collect()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64().to_le_bytes()[0]).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Tensors: from_hwc, from_chw, from_array
// ---------------------------------------------------------------------------------------------

/// Lengths around `len`: the right one often, anything up to three times it otherwise.
fn length_near(len: usize) -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(len), 3 => 0..=3 * len + 2]
}

fn check_tensor_slices<const H: usize, const W: usize, const C: usize, T: Element>(
    name: &str,
    cases: u32,
) {
    let len = H * W * C;
    run(
        name,
        cases,
        (length_near(len), any::<u64>()),
        |(n, seed), tally| {
            let data: Vec<T> = Rng(seed).values(n, 8);
            let want: Vec<f64> = data.iter().map(|v| v.to_f64()).collect();
            let hwc = guard("from_hwc", || Tensor::<H, W, C, T>::from_hwc(&data))?;
            let chw = guard("from_chw", || Tensor::<H, W, C, T>::from_chw(&data))?;
            let via_trait = guard("TensorData::from_hwc", || {
                <Tensor<H, W, C, T> as TensorData<T>>::from_hwc(&data)
            })?;
            if n == len {
                let hwc = accepted(tally, "from_hwc", hwc)?;
                assert_same("from_hwc", hwc.as_slice(), &want)?;
                let chw = accepted(tally, "from_chw", chw)?;
                assert_same("from_chw", &chw.to_chw(), &want)?;
                for (i, &v) in want.iter().enumerate() {
                    let (c, h, w) = (i / (H * W), i / W % H, i % W);
                    prop_assert!(same(chw[(h, w, c)].to_f64(), v), "from_chw ({h}, {w}, {c})");
                }
                accepted(tally, "TensorData::from_hwc", via_trait)?;
            } else {
                for (function, result) in [
                    ("from_hwc", hwc),
                    ("from_chw", chw),
                    ("from_hwc", via_trait),
                ] {
                    let context = format!("Tensor::{function}: `data`");
                    let words = [
                        context.as_str(),
                        &format!("has {n} elements, expected {len}"),
                    ];
                    let e = rejected(tally, function, result, &words)?;
                    prop_assert!(
                        matches!(e, Error::Length { expected, actual, .. } if expected == len && actual == n),
                        "{e:?}"
                    );
                }
            }
            Ok(())
        },
    );
}

#[test]
fn tensor_slices_of_any_length() {
    check_tensor_slices::<5, 4, 3, f32>("Tensor<5, 4, 3>::from_hwc/from_chw", 600);
    check_tensor_slices::<1, 7, 2, f64>("Tensor<1, 7, 2, f64>::from_hwc/from_chw", 600);
    check_tensor_slices::<1, 1, 1, f32>("Tensor<1, 1, 1>::from_hwc/from_chw", 300);
}

/// An `ndarray` array of shape `(h, w, c)` in one of five memory layouts, element `(i, j, k)`
/// taken from `values` in row-major order (so every layout holds the same logical array).
fn array_in_layout(dims: (usize, usize, usize), layout: u8, values: &[f64]) -> Array3<f64> {
    let (h, w, c) = dims;
    let logical = |i: usize, j: usize, k: usize| values[(i * w + j) * c + k];
    match layout {
        // Row-major.
        0 => Array3::from_shape_fn((h, w, c), |(i, j, k)| logical(i, j, k)),
        // Column-major.
        1 => Array3::from_shape_fn((h, w, c).f(), |(i, j, k)| logical(i, j, k)),
        // Channels first, permuted to (h, w, c): not contiguous in (h, w, c) order.
        2 => {
            Array3::from_shape_fn((c, h, w), |(k, i, j)| logical(i, j, k)).permuted_axes([1, 2, 0])
        }
        // Every other row of an array twice as high.
        3 => {
            let tall = Array3::from_shape_fn((2 * h, w, c), |(i, j, k)| {
                if i % 2 == 0 {
                    logical(i / 2, j, k)
                } else {
                    f64::NAN
                }
            });
            tall.slice(s![..;2, .., ..]).to_owned()
        }
        // Rows stored bottom up (a negative stride once inverted).
        _ => {
            let mut a = Array3::from_shape_fn((h, w, c), |(i, j, k)| logical(h - 1 - i, j, k));
            a.invert_axis(Axis(0));
            a
        }
    }
}

#[test]
fn arrays_of_any_shape_and_layout() {
    const H: usize = 3;
    const W: usize = 4;
    const C: usize = 2;
    let dim = |d: usize| prop_oneof![2 => Just(d), 1 => 0..=2 * d + 1];
    let strategy = ((dim(H), dim(W), dim(C)), 0u8..5, any::<u64>());
    run(
        "Tensor::from_array",
        1500,
        strategy,
        |(dims, layout, seed), tally| {
            let (h, w, c) = dims;
            let values: Vec<f64> = Rng(seed).values(h * w * c, 8);
            let array = array_in_layout(dims, layout, &values);
            let view: ArrayView3<'_, f64> = array.view();
            let from_view = guard("from_array", || Tensor::<H, W, C, f64>::from_array(view))?;
            let from_owned = guard("try_from", || Tensor::<H, W, C, f64>::try_from(&array))?;
            if (h, w, c) == (H, W, C) {
                for (what, result) in [("from_array", from_view), ("try_from", from_owned)] {
                    let t = accepted(tally, what, result)?;
                    for ((i, j, k), &v) in array.indexed_iter() {
                        prop_assert!(same(t[(i, j, k)], v), "{what} ({i}, {j}, {k})");
                    }
                    let back = t.to_array();
                    prop_assert_eq!(back.dim(), array.dim());
                    for (&a, &b) in back.iter().zip(array.iter()) {
                        prop_assert!(same(a, b), "to_array: {a} vs {b}");
                    }
                }
            } else {
                let words = [
                    "Tensor::from_array: `array` has shape",
                    &format!("[{h}, {w}, {c}], expected [{H}, {W}, {C}]"),
                ];
                rejected(tally, "from_array", from_view, &words)?;
                rejected(tally, "try_from", from_owned, &words)?;
            }
            Ok(())
        },
    );
}

#[test]
fn strided_views_load_like_contiguous_ones() {
    // A view with a stride of two rows (not an owned copy) must read the right elements.
    let strategy = any::<u64>();
    run(
        "Tensor::from_array (strided)",
        200,
        strategy,
        |seed, tally| {
            let tall = Array3::from_shape_fn((6, 4, 2), |(i, j, k)| {
                (i * 100 + j * 10 + k) as f64 + f64::from(u32::try_from(seed % 7).unwrap_or(0))
            });
            let view = tall.slice(s![1..;2, .., ..]);
            let t = accepted(
                tally,
                "from_array",
                guard("from_array", || Tensor::<3, 4, 2, f64>::from_array(view))?,
            )?;
            for ((i, j, k), &v) in view.indexed_iter() {
                prop_assert_eq!(t[(i, j, k)], v);
            }
            Ok(())
        },
    );
}

#[test]
fn batches_of_any_shape() {
    let dim = |d: usize| prop_oneof![2 => Just(d), 1 => 0..=2 * d + 1];
    let strategy = (
        (0usize..4, dim(5), dim(4), dim(3)),
        any::<bool>(),
        any::<u64>(),
    );
    run(
        "Layer::forward_batch",
        300,
        strategy,
        |(dims, nchw, seed), tally| {
            let (n, h, w, c) = dims;
            let mut rng = Rng(seed);
            let layer = Both::from_pytorch(
                &rng.values(36, 0),
                Some(&rng.values(6, 0)),
                &rng.values(24, 0),
                Some(&rng.values(4, 0)),
            )
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let values: Vec<f32> = rng.values(n * h * w * c, 8);
            // The same logical NHWC batch, stored as NHWC or as NCHW viewed through a permutation.
            let batch = if nchw {
                separable::ndarray::Array4::from_shape_fn((n, c, h, w), |(i, k, y, x)| {
                    values[((i * h + y) * w + x) * c + k]
                })
                .permuted_axes([0, 2, 3, 1])
            } else {
                separable::ndarray::Array4::from_shape_vec((n, h, w, c), values.clone())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
            };
            let result = guard("forward_batch", || layer.forward_batch(batch.view()))?;
            if (h, w, c) == (5, 4, 3) {
                let y = accepted(tally, "forward_batch", result)?;
                prop_assert_eq!(y.dim(), (n, 5, 4, 4));
                for i in 0..n {
                    let image = Tensor::<5, 4, 3>::from_hwc(&values[i * 60..(i + 1) * 60])
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let want = layer.forward(&image);
                    let got: Vec<f32> = y.index_axis(Axis(0), i).iter().copied().collect();
                    let want: Vec<f64> = want.as_slice().iter().map(|&v| f64::from(v)).collect();
                    assert_same("forward_batch", &got, &want)?;
                }
            } else {
                let words = [
                    "Layer::forward_batch: `input` has shape",
                    &format!("[{n}, {h}, {w}, {c}], expected [{n}, 5, 4, 3]"),
                ];
                rejected(tally, "forward_batch", result, &words)?;
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Slice loaders: from_pytorch, from_keras, from_keras_layers, from_tflite
// ---------------------------------------------------------------------------------------------

/// A layer's sizes, from its `SPEC`.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    kh: usize,
    kw: usize,
    cm: usize,
    n: usize,
    depthwise_bias: bool,
    pointwise_bias: bool,
}

impl Sizes {
    fn of<L: Layer>() -> Sizes {
        let spec = L::SPEC;
        Sizes {
            kh: spec.kernel[0],
            kw: spec.kernel[1],
            cm: spec.input[2] * spec.multiplier,
            n: spec.output_channels,
            depthwise_bias: spec.bias.depthwise(),
            pointwise_bias: spec.bias.pointwise(),
        }
    }

    fn taps(self) -> usize {
        self.kh * self.kw
    }

    /// The four tensors' lengths, in argument order: dw weight, dw bias, pw weight, pw bias.
    fn lens(self) -> [usize; 4] {
        [self.taps() * self.cm, self.cm, self.cm * self.n, self.n]
    }

    fn declared(self) -> [bool; 4] {
        [true, self.depthwise_bias, true, self.pointwise_bias]
    }
}

/// The weight loaders that take slices.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    Pytorch,
    Keras,
    KerasLayers,
    Tflite,
}

impl Api {
    /// The names errors give the four arguments, in argument order.
    fn names(self) -> [&'static str; 4] {
        match self {
            Api::Pytorch => [
                "depthwise.weight",
                "depthwise.bias",
                "pointwise.weight",
                "pointwise.bias",
            ],
            Api::Keras => [
                "depthwise_kernel",
                "depthwise_bias",
                "pointwise_kernel",
                "bias",
            ],
            Api::KerasLayers => [
                "depthwise_kernel",
                "depthwise_bias",
                "pointwise_kernel",
                "pointwise_bias",
            ],
            Api::Tflite => [
                "depthwise_weight",
                "depthwise_bias",
                "pointwise_weight",
                "pointwise_bias",
            ],
        }
    }

    fn context<L: Layer>(self) -> String {
        match self {
            Api::Pytorch => format!("{}::from_pytorch", L::NAME),
            Api::Keras => "Layer::from_keras".into(),
            Api::KerasLayers => "Layer::from_keras_layers".into(),
            Api::Tflite => "Layer::from_tflite".into(),
        }
    }

    fn call<L: Layer>(self, t: &[Option<Vec<L::Elem>>; 4]) -> Result<L, Error> {
        let [dw, db, pw, pb] = t.each_ref().map(Option::as_deref);
        let (dw, pw) = (dw.unwrap_or_default(), pw.unwrap_or_default());
        match self {
            Api::Pytorch => L::from_pytorch(dw, db, pw, pb),
            Api::Keras => L::from_keras(dw, pw, pb),
            Api::KerasLayers => L::from_keras_layers(dw, db, pw, pb),
            Api::Tflite => L::from_tflite(dw, db, pw, pb),
        }
    }

    /// The PyTorch weights that the four arguments (all of the right length) stand for, by
    /// each framework's documented layout.
    fn to_pytorch(self, s: Sizes, t: &[Option<Vec<f64>>; 4]) -> [Option<Vec<f64>>; 4] {
        let (taps, cm, n) = (s.taps(), s.cm, s.n);
        let [dw, db, pw, pb] = t.clone();
        let (dw, pw) = (dw.unwrap_or_default(), pw.unwrap_or_default());
        let (dw, pw) = match self {
            Api::Pytorch => (dw, pw),
            // Keras (KH, KW, C, M) and TFLite [1, KH, KW, C·M] are [tap][c·M + m]; PyTorch
            // [C·M, 1, KH, KW] is [c·M + m][tap].
            Api::Keras | Api::KerasLayers | Api::Tflite => {
                let dw = (0..cm * taps)
                    .map(|i| dw[(i % taps) * cm + i / taps])
                    .collect();
                // Keras (1, 1, C·M, N) is [k][n]; PyTorch and TFLite are [n][k].
                let pw = if self == Api::Tflite {
                    pw
                } else {
                    (0..n * cm).map(|i| pw[(i % cm) * n + i / cm]).collect()
                };
                (dw, pw)
            }
        };
        [Some(dw), db, Some(pw), pb]
    }
}

/// How one argument of a generated call departs from what the layer expects.
#[derive(Clone, Copy, Debug)]
enum Arg {
    /// The right length (and, for a bias, present exactly when declared).
    Right,
    /// This many elements.
    Length(usize),
    /// A bias present when the layer does not declare it, or absent when it does.
    Flipped,
}

fn arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        6 => Just(Arg::Right),
        3 => (0usize..64).prop_map(Arg::Length),
        1 => Just(Arg::Flipped),
    ]
}

/// What a loader must say about one argument.
#[derive(Debug, PartialEq)]
enum Fault {
    Length,
    Missing,
    Unexpected,
}

fn check_slice_loader<L: Layer>(api: Api, cases: u32) {
    let s = Sizes::of::<L>();
    let name = format!("{}::{api:?}", L::NAME);
    let strategy = ([arg(), arg(), arg(), arg()], any::<u64>());
    run(&name, cases, strategy, |(args, seed), tally| {
        let mut rng = Rng(seed);
        let names = api.names();
        let declared = s.declared();
        let mut faults: [Option<Fault>; 4] = [None, None, None, None];
        let mut given: [Option<Vec<f64>>; 4] = [None, None, None, None];
        for i in 0..4 {
            let weight = i % 2 == 0;
            // `from_keras` has no depthwise bias argument: always absent.
            let fixed_absent = api == Api::Keras && i == 1;
            let present = if weight {
                true
            } else if fixed_absent {
                false
            } else {
                declared[i] != matches!(args[i], Arg::Flipped)
            };
            if !present {
                if declared[i] {
                    faults[i] = Some(Fault::Missing);
                }
                continue;
            }
            let len = match args[i] {
                Arg::Length(n) => n,
                _ => s.lens()[i],
            };
            given[i] = Some((0..len).map(|_| rng.value(16)).collect());
            faults[i] = if !declared[i] {
                Some(Fault::Unexpected)
            } else if len != s.lens()[i] {
                Some(Fault::Length)
            } else {
                None
            };
        }
        let typed: [Option<Vec<L::Elem>>; 4] = given.each_ref().map(|t| {
            t.as_ref()
                .map(|v| v.iter().map(|&x| L::Elem::from_f64(x)).collect())
        });
        let result = guard(&name, || api.call::<L>(&typed))?;
        if faults.iter().all(Option::is_none) {
            let layer = accepted(tally, &name, result)?;
            let want = api.to_pytorch(s, &given);
            let PytorchWeights {
                depthwise_weight,
                depthwise_bias,
                pointwise_weight,
                pointwise_bias,
            } = guard("to_pytorch", || layer.to_pytorch())?;
            let got = [
                Some(depthwise_weight),
                depthwise_bias,
                Some(pointwise_weight),
                pointwise_bias,
            ];
            for i in 0..4 {
                let want = want[i].as_ref().map(|v| {
                    v.iter()
                        .map(|&x| L::Elem::from_f64(x).to_f64())
                        .collect::<Vec<_>>()
                });
                prop_assert_eq!(got[i].is_some(), want.is_some(), "{}", names[i]);
                if let (Some(got), Some(want)) = (&got[i], &want) {
                    assert_same(names[i], got, want)?;
                }
            }
            check_forward(&layer, &want, &mut rng)?;
        } else {
            let context = api.context::<L>();
            let e = rejected(tally, &name, result, &[&context])?;
            let message = e.to_string();
            // The error names one of the arguments at fault, with that argument's problem;
            // `from_pytorch` reports the first in argument order.
            let (tensor, fault) = match &e {
                Error::Length { tensor, .. } => (*tensor, Fault::Length),
                Error::MissingBias { tensor, .. } => (*tensor, Fault::Missing),
                Error::UnexpectedBias { tensor, .. } => (*tensor, Fault::Unexpected),
                other => return Err(TestCaseError::fail(format!("unexpected error {other:?}"))),
            };
            let index = names.iter().position(|&n| n == tensor);
            prop_assert!(index.is_some(), "{message}: no such argument");
            let index = index.unwrap_or_default();
            prop_assert_eq!(faults[index].as_ref(), Some(&fault), "{}", message);
            prop_assert!(message.contains(&format!("`{tensor}`")), "{message}");
            if api == Api::Pytorch {
                let first = faults.iter().position(Option::is_some);
                prop_assert_eq!(first, Some(index), "{}", message);
            }
        }
        Ok(())
    });
}

/// Runs `layer` on a random input and compares it with the reference kernels on the PyTorch
/// weights it was loaded from, when they are finite (non-finite weights are the subject of
/// `nan_and_infinities_load_and_propagate_alike_on_every_path`).
fn check_forward<L: Layer>(
    layer: &L,
    weights: &[Option<Vec<f64>>; 4],
    rng: &mut Rng,
) -> TestCaseResult {
    if weights
        .iter()
        .flatten()
        .flatten()
        .any(|v| v.is_nan() || v.abs() > 1.0)
    {
        return Ok(());
    }
    let x: Vec<L::Elem> = rng.values(L::SHAPE.input_len, 0);
    let t = |i: usize| -> Option<Vec<L::Elem>> {
        weights[i]
            .as_ref()
            .map(|v| v.iter().map(|&w| L::Elem::from_f64(w)).collect())
    };
    let (dw, db, pw, pb) = (
        t(0).unwrap_or_default(),
        t(1),
        t(2).unwrap_or_default(),
        t(3),
    );
    let want = reference::forward(
        &L::SPEC,
        &x,
        &dw,
        db.as_deref(),
        &pw,
        pb.as_deref(),
        [L::DEPTHWISE_ACTIVATION, L::POINTWISE_ACTIVATION],
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let input = L::Input::from_hwc(&x).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = guard("forward", || layer.forward(&input))?;
    for (i, (&g, &w)) in got.as_slice().iter().zip(&want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        prop_assert!(
            (g - w).abs() <= tolerance::<L::Elem>() * (1.0 + w.abs()),
            "forward[{i}]: {g} vs reference {w}"
        );
    }
    Ok(())
}

/// Rounding allowed between two summation orders of the small layers here.
fn tolerance<T: Element>() -> f64 {
    if T::NAME == "f32" { 1e-4 } else { 1e-12 }
}

#[test]
fn slice_loaders_reject_wrong_lengths_and_biases() {
    for api in [Api::Pytorch, Api::Keras, Api::KerasLayers, Api::Tflite] {
        check_slice_loader::<Both>(api, 300);
        check_slice_loader::<Pointwise64>(api, 300);
        check_slice_loader::<Plain>(api, 300);
    }
}

// ---------------------------------------------------------------------------------------------
// Safetensors files, written here from the format's definition
// ---------------------------------------------------------------------------------------------

/// Every dtype name of the format with its size in bits, the float ones first.
const DTYPES: [(&str, usize); 21] = [
    ("F32", 32),
    ("F64", 64),
    ("F16", 16),
    ("BF16", 16),
    ("BOOL", 8),
    ("U8", 8),
    ("I8", 8),
    ("I16", 16),
    ("U16", 16),
    ("I32", 32),
    ("U32", 32),
    ("I64", 64),
    ("U64", 64),
    ("F8_E4M3", 8),
    ("F8_E5M2", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("C64", 64),
    ("F4", 4),
    ("F6_E2M3", 6),
];
/// `DTYPES[..FLOATS]` are the dtypes the loaders convert.
const FLOATS: usize = 4;
/// `DTYPES[..WHOLE_BYTES]` have whole-byte elements.
const WHOLE_BYTES: usize = 19;

/// One tensor of a file: its key, dtype (an index into `DTYPES`), shape and bytes.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    dtype: usize,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Entry {
    fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements, decoded here from the format's definition of each float dtype.
    fn decode(&self) -> Vec<f64> {
        let le = |b: &[u8]| {
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
        };
        match DTYPES[self.dtype].0 {
            "F32" => self
                .bytes
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_bits(u32::try_from(le(b)).unwrap_or(0))))
                .collect(),
            "F64" => self
                .bytes
                .chunks_exact(8)
                .map(|b| f64::from_bits(le(b)))
                .collect(),
            // bfloat16 is the upper half of an IEEE binary32.
            "BF16" => self
                .bytes
                .chunks_exact(2)
                .map(|b| f64::from(f32::from_bits(u32::try_from(le(b) << 16).unwrap_or(0))))
                .collect(),
            // IEEE binary16: 1 sign bit, 5 exponent bits (bias 15), 10 fraction bits.
            "F16" => self
                .bytes
                .chunks_exact(2)
                .map(|b| {
                    let bits = le(b);
                    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
                    let exponent = i32::try_from((bits >> 10) & 0x1f).unwrap_or(0);
                    let fraction = (bits & 0x3ff) as f64;
                    sign * match exponent {
                        0 => fraction * 2f64.powi(-24),
                        31 if fraction == 0.0 => f64::INFINITY,
                        31 => f64::NAN,
                        e => (1024.0 + fraction) * 2f64.powi(e - 25),
                    }
                })
                .collect(),
            other => panic!("{other} is not a float dtype"),
        }
    }

    /// The tensor's info in the header, at `offset` in the data.
    fn info(&self, offset: usize) -> Value {
        json!({
            "dtype": DTYPES[self.dtype].0,
            "shape": self.shape,
            "data_offsets": [offset, offset + self.bytes.len()],
        })
    }
}

/// `values` encoded in float dtype `dtype` (rounding to nearest), for tensors meant to load.
fn encode(dtype: usize, values: &[f64]) -> Vec<u8> {
    match DTYPES[dtype].0 {
        "F32" => values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        "F64" => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        // Truncating an f32 to its upper half is exact for these values' purposes: the bytes,
        // not the values, are what the loader is checked against.
        "BF16" => values
            .iter()
            .flat_map(|&v| {
                let [.., a, b] = (v as f32).to_bits().to_le_bytes();
                [a, b]
            })
            .collect(),
        "F16" => values
            .iter()
            .flat_map(|&v| f16_bits(v).to_le_bytes())
            .collect(),
        other => panic!("{other} is not a float dtype"),
    }
}

/// An IEEE binary16 near `v` (truncating the fraction; exactness does not matter here, since
/// loaders are checked against the decoded bytes): NaN, infinities and overflow included.
fn f16_bits(v: f64) -> u16 {
    let sign = if v.is_sign_negative() { 0x8000 } else { 0 };
    let a = v.abs();
    let magnitude = if a.is_nan() {
        0x7e00
    } else if a >= 65520.0 {
        0x7c00
    } else if a < 2f64.powi(-24) {
        0
    } else if a < 2f64.powi(-14) {
        (a / 2f64.powi(-24)) as u16
    } else {
        let e = a.log2().floor().clamp(-14.0, 15.0);
        let fraction = ((a / 2f64.powf(e) - 1.0) * 1024.0).clamp(0.0, 1023.0) as u16;
        ((e as i32 + 15) as u16) << 10 | fraction
    };
    sign | magnitude
}

/// A whole file: the header's length (u64, little-endian), the JSON header, then each tensor's
/// bytes in `entries`' order. `pad` spaces end the header, as writers pad it to 8 bytes.
fn file(entries: &[Entry], metadata: Option<Value>, pad: usize) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if let Some(metadata) = metadata {
        header.insert("__metadata__".into(), metadata);
    }
    let mut offset = 0;
    for e in entries {
        header.insert(e.key.clone(), e.info(offset));
        offset += e.bytes.len();
    }
    assemble(&Value::Object(header), pad, entries)
}

fn assemble(header: &Value, pad: usize, entries: &[Entry]) -> Vec<u8> {
    let mut text = header.to_string();
    text.extend(std::iter::repeat_n(' ', pad));
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    for e in entries {
        bytes.extend_from_slice(&e.bytes);
    }
    bytes
}

/// Shapes of up to four dimensions of up to four elements each.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..5, 0..=4)
}

/// Tensor keys: dots, digits, capitals, spaces, quotes, backslashes and non-ASCII letters.
fn key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._ \"\\\\é中-]{0,10}"
}

#[test]
fn valid_files_of_any_shapes_and_dtypes_load_exactly() {
    let tensor = (key(), 0..WHOLE_BYTES, shape(), any::<u64>());
    let strategy = (
        prop::collection::vec(tensor, 0..6),
        prop::option::of(prop::collection::btree_map(
            "[a-z]{1,4}",
            "[a-z0-9]{0,4}",
            0..3,
        )),
        0usize..9,
    );
    run(
        "SafetensorsFile (valid files)",
        800,
        strategy,
        |(tensors, metadata, pad), tally| {
            let mut entries: Vec<Entry> = Vec::new();
            for (key, dtype, shape, seed) in tensors {
                if key == "__metadata__" || entries.iter().any(|e| e.key == key) {
                    continue;
                }
                let elements: usize = shape.iter().product();
                let bytes = Rng(seed).bytes(elements * DTYPES[dtype].1 / 8);
                entries.push(Entry {
                    key,
                    dtype,
                    shape,
                    bytes,
                });
            }
            let metadata = metadata.map(|m| json!(m));
            let bytes = file(&entries, metadata, pad);
            let f = accepted(
                tally,
                "parse",
                guard("parse", || SafetensorsFile::parse(&bytes))?,
            )?;
            let mut keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
            keys.sort_unstable();
            prop_assert_eq!(f.names(), keys);
            prop_assert_eq!(f.len(), entries.len());
            for e in &entries {
                prop_assert!(f.contains(&e.key));
                prop_assert_eq!(f.shape(&e.key), Some(e.shape.clone()));
                let wide = guard("read", || f.read::<f64>(&e.key))?;
                let narrow = guard("read", || f.read::<f32>(&e.key))?;
                let other_shape: Vec<usize> = match e.shape.len() {
                    4 => e.shape.iter().map(|d| d + 1).collect(),
                    _ => e.shape.iter().copied().chain([1]).collect(),
                };
                let dims = |shape: &[usize]| match *shape {
                    [] => separable::Dims::new([]),
                    [a] => separable::Dims::new([a]),
                    [a, b] => separable::Dims::new([a, b]),
                    [a, b, c] => separable::Dims::new([a, b, c]),
                    [a, b, c, d, ..] => separable::Dims::new([a, b, c, d]),
                };
                let shaped = guard("read_shaped", || {
                    f.read_shaped::<f64>(&e.key, dims(&e.shape))
                })?;
                let misshaped = guard("read_shaped", || {
                    f.read_shaped::<f64>(&e.key, dims(&other_shape))
                })?;
                let quoted = format!("`{}`", e.key);
                if e.dtype < FLOATS {
                    let want = e.decode();
                    assert_same(&e.key, &accepted(tally, "read::<f64>", wide)?, &want)?;
                    let want32: Vec<f64> = want.iter().map(|&v| f64::from(v as f32)).collect();
                    assert_same(&e.key, &accepted(tally, "read::<f32>", narrow)?, &want32)?;
                    assert_same(&e.key, &accepted(tally, "read_shaped", shaped)?, &want)?;
                    rejected(
                        tally,
                        "read_shaped",
                        misshaped,
                        &[&quoted, "has shape", "expected"],
                    )?;
                } else {
                    let words = [
                        quoted.as_str(),
                        DTYPES[e.dtype].0,
                        "expected F32, F64, F16 or BF16",
                    ];
                    for result in [wide, shaped] {
                        rejected(tally, "read", result, &words)?;
                    }
                    rejected(tally, "read::<f32>", narrow, &words)?;
                }
            }
            let missing = guard("read", || f.read::<f32>("no such tensor"))?;
            rejected(
                tally,
                "read",
                missing,
                &["`no such tensor` is not in the file"],
            )?;
            Ok(())
        },
    );
}

/// A layer's tensors in a file: the four keys (biases only where declared), each in a float
/// dtype, plus unrelated tensors, in a random order.
#[derive(Clone, Debug)]
struct LayerFile {
    prefix: String,
    /// Weights and declared biases, in the order dw weight, dw bias, pw weight, pw bias.
    tensors: Vec<Entry>,
    extras: Vec<Entry>,
    /// The order of all tensors in the data.
    order_seed: u64,
}

impl LayerFile {
    fn new<L: Layer>(prefix: String, dtypes: [usize; 4], seed: u64, extras: usize) -> LayerFile {
        let s = Sizes::of::<L>();
        let mut rng = Rng(seed);
        let names = Api::Pytorch.names();
        let shapes = [
            vec![s.cm, 1, s.kh, s.kw],
            vec![s.cm],
            vec![s.n, s.cm, 1, 1],
            vec![s.n],
        ];
        let mut tensors = Vec::new();
        for i in 0..4 {
            if s.declared()[i] {
                let values: Vec<f64> = (0..s.lens()[i]).map(|_| rng.value(24)).collect();
                tensors.push(Entry {
                    key: format!("{prefix}{}", names[i]),
                    dtype: dtypes[i] % FLOATS,
                    shape: shapes[i].clone(),
                    bytes: encode(dtypes[i] % FLOATS, &values),
                });
            }
        }
        // Tensors a state dict holds beside the layer's: other modules, BatchNorm counters.
        let extras = (0..extras)
            .map(|i| {
                let dtype = rng.below(WHOLE_BYTES);
                let shape = vec![rng.below(4), 2];
                let bytes = rng.bytes(shape[0] * 2 * DTYPES[dtype].1 / 8);
                let key = match i % 3 {
                    0 => format!("{prefix}num_batches_tracked"),
                    1 => format!("other.{prefix}depthwise.bias"),
                    _ => format!("{prefix}depthwise.weight.extra{i}"),
                };
                Entry {
                    key,
                    dtype,
                    shape,
                    bytes,
                }
            })
            .collect();
        LayerFile {
            prefix,
            tensors,
            extras,
            order_seed: rng.next_u64(),
        }
    }

    /// Every tensor in data order.
    fn entries(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self.tensors.iter().chain(&self.extras).cloned().collect();
        let mut rng = Rng(self.order_seed);
        for i in (1..all.len()).rev() {
            all.swap(i, rng.below(i + 1));
        }
        let mut seen = std::collections::BTreeSet::new();
        all.retain(|e| seen.insert(e.key.clone()));
        all
    }

    fn bytes(&self) -> Vec<u8> {
        file(&self.entries(), None, 0)
    }

    /// The weights the file holds, as PyTorch tensors in the layer's element type.
    fn weights<T: Element>(&self, s: Sizes) -> [Option<Vec<f64>>; 4] {
        let names = Api::Pytorch.names();
        let mut out = [None, None, None, None];
        for (i, slot) in out.iter_mut().enumerate() {
            if s.declared()[i] {
                let key = format!("{}{}", self.prefix, names[i]);
                *slot = self
                    .tensors
                    .iter()
                    .find(|e| e.key == key && e.dtype < FLOATS)
                    .map(|e| {
                        e.decode()
                            .iter()
                            .map(|&v| T::from_f64(v).to_f64())
                            .collect()
                    });
            }
        }
        out
    }
}

/// One change to a layer's tensors that makes the file wrong for the layer.
#[derive(Clone, Debug)]
enum Change {
    /// None: the file must load.
    Keep,
    /// Remove the `i`-th tensor.
    Drop(usize),
    /// Misspell the `i`-th tensor's key.
    Rename(usize),
    /// Give the `i`-th tensor another shape (and as many elements).
    Reshape(usize, Vec<usize>),
    /// Store the `i`-th tensor in a dtype that is not a float (an index into `DTYPES`).
    Retype(usize, usize),
    /// Add the bias of stage `i` (0 depthwise, 1 pointwise), if the layer does not declare it.
    AddBias(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => Just(Change::Keep),
        1 => (0usize..4).prop_map(Change::Drop),
        1 => (0usize..4).prop_map(Change::Rename),
        2 => (0usize..4, prop::collection::vec(1usize..5, 0..=4))
            .prop_map(|(i, s)| Change::Reshape(i, s)),
        2 => (0usize..4, FLOATS..WHOLE_BYTES).prop_map(|(i, d)| Change::Retype(i, d)),
        1 => (0usize..2).prop_map(Change::AddBias),
    ]
}

/// What loading must report for a changed file: `None` to load, else the key at fault and a
/// part of the message.
fn apply_change<L: Layer>(
    file: &mut LayerFile,
    change: &Change,
    seed: u64,
) -> Option<(String, &'static str)> {
    let s = Sizes::of::<L>();
    let mut rng = Rng(seed);
    let count = file.tensors.len();
    let is_bias = |key: &str| key.ends_with("bias");
    match change {
        Change::Keep => None,
        Change::Drop(i) | Change::Rename(i) => {
            let e = &mut file.tensors[i % count];
            let key = e.key.clone();
            if matches!(change, Change::Drop(_)) {
                file.tensors.remove(i % count);
            } else {
                e.key = format!("{key}_");
            }
            let problem = if is_bias(&key) {
                "is not in the file, but the layer is declared with"
            } else {
                "is not in the file"
            };
            Some((key, problem))
        }
        Change::Reshape(i, shape) => {
            let e = &mut file.tensors[i % count];
            let mut shape = shape.clone();
            if shape == e.shape {
                shape.push(1);
                if shape.len() > 4 {
                    shape = vec![e.elements() + 1];
                }
            }
            let values: Vec<f64> = (0..shape.iter().product()).map(|_| rng.unit()).collect();
            e.bytes = encode(e.dtype, &values);
            e.shape = shape;
            Some((e.key.clone(), "has shape"))
        }
        Change::Retype(i, dtype) => {
            let e = &mut file.tensors[i % count];
            e.dtype = *dtype;
            e.bytes = rng.bytes(e.elements() * DTYPES[*dtype].1 / 8);
            Some((e.key.clone(), "expected F32, F64, F16 or BF16"))
        }
        Change::AddBias(stage) => {
            let (declared, len, name) = if *stage == 0 {
                (s.depthwise_bias, s.cm, "depthwise.bias")
            } else {
                (s.pointwise_bias, s.n, "pointwise.bias")
            };
            if declared {
                return None;
            }
            let key = format!("{}{name}", file.prefix);
            let values: Vec<f64> = (0..len).map(|_| rng.unit()).collect();
            file.tensors.push(Entry {
                key: key.clone(),
                dtype: 0,
                shape: vec![len],
                bytes: encode(0, &values),
            });
            Some((key, "the file has"))
        }
    }
}

/// What a safetensors path gives: the weights it loaded, or why not.
type Loaded<T> = Result<PytorchWeights<T>, Error>;

/// Loads `bytes` through every safetensors path of `L`; all must agree with `want`.
fn check_layer_load<L: Layer>(
    tally: &Tally,
    bytes: &[u8],
    prefix: &str,
    want: Option<&[Option<Vec<f64>>; 4]>,
    fault: Option<&(String, &'static str)>,
) -> TestCaseResult {
    let names = TensorNames::pytorch(prefix);
    let file = guard("parse", || SafetensorsFile::parse(bytes))?;
    let file = accepted(tally, "parse", file)?;
    let results: [(&str, Loaded<L::Elem>); 4] = [
        (
            "from_safetensors",
            guard("from_safetensors", || L::from_safetensors(bytes, prefix))?
                .map(|l| l.to_pytorch()),
        ),
        (
            "from_safetensors_with",
            guard("from_safetensors_with", || {
                L::from_safetensors_with(bytes, &names)
            })?
            .map(|l| l.to_pytorch()),
        ),
        (
            "from_safetensors_file",
            guard("from_safetensors_file", || {
                L::from_safetensors_file(&file, &names)
            })?
            .map(|l| l.to_pytorch()),
        ),
        (
            "pytorch_weights",
            guard("pytorch_weights", || {
                file.pytorch_weights::<L::Elem>(&L::SPEC, &names)
            })?,
        ),
    ];
    for (function, result) in results {
        match (fault, want) {
            (Some((key, problem)), _) => {
                let quoted = format!("`{key}`");
                rejected(tally, function, result, &[function, &quoted, problem])?;
            }
            (None, Some(want)) => {
                let w = accepted(tally, function, result)?;
                let got = [
                    Some(w.depthwise_weight),
                    w.depthwise_bias,
                    Some(w.pointwise_weight),
                    w.pointwise_bias,
                ];
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    prop_assert_eq!(g.is_some(), w.is_some(), "{} tensor {}", function, i);
                    if let (Some(g), Some(w)) = (g, w) {
                        assert_same(function, g, w)?;
                    }
                }
            }
            (None, None) => {
                accepted(tally, function, result)?;
            }
        }
    }
    Ok(())
}

fn check_layer_files<L: Layer>(cases: u32) {
    let name = format!("{}::from_safetensors (changed tensors)", L::NAME);
    let strategy = (
        "[a-z0-9.]{0,6}",
        [0..FLOATS, 0..FLOATS, 0..FLOATS, 0..FLOATS],
        any::<u64>(),
        0usize..4,
        change(),
    );
    run(
        &name,
        cases,
        strategy,
        |(prefix, dtypes, seed, extras, change), tally| {
            let mut file = LayerFile::new::<L>(prefix.clone(), dtypes, seed, extras);
            let fault = apply_change::<L>(&mut file, &change, seed);
            let want = file.weights::<L::Elem>(Sizes::of::<L>());
            let bytes = file.bytes();
            check_layer_load::<L>(tally, &bytes, &prefix, Some(&want), fault.as_ref())
        },
    );
}

#[test]
fn layer_files_load_exactly_or_name_the_tensor_at_fault() {
    check_layer_files::<Both>(500);
    check_layer_files::<Pointwise64>(400);
    check_layer_files::<Plain>(400);
}

// ---------------------------------------------------------------------------------------------
// Corrupted files
// ---------------------------------------------------------------------------------------------

/// One corruption of a valid file's bytes or header.
#[derive(Clone, Debug)]
enum Corruption {
    /// The header length field set to this value.
    HeaderLength(u64),
    /// Bytes appended after the data.
    Trailing(Vec<u8>),
    /// One header byte replaced by a byte that cannot occur alone in UTF-8.
    NotUtf8(usize, u8),
    /// The header replaced by these bytes (the length field kept consistent).
    Garbage(Vec<u8>),
    /// A JSON edit of the header that leaves it invalid for the format.
    Json(JsonEdit),
    /// The data offsets of tensor `i` changed.
    Offsets(usize, OffsetEdit),
    /// The shape of tensor `i` in the header changed, its offsets kept.
    Shape(usize, Vec<usize>),
    /// The dtype of tensor `i` in the header changed, its offsets kept.
    Dtype(usize, usize),
    /// One header byte replaced by any byte.
    Flip(usize, u8),
}

#[derive(Clone, Debug)]
enum JsonEdit {
    /// The whole header replaced by a JSON value that is not an object.
    NotAnObject(u8),
    /// A field of tensor `i` replaced by an invalid value, or removed.
    Field(usize, &'static str, u8),
    /// A valid addition: an unknown field in a tensor's info, or string metadata.
    Harmless(usize, bool),
    /// Metadata that is not a map of strings.
    BadMetadata(u8),
}

#[derive(Clone, Debug)]
enum OffsetEdit {
    Shift(usize),
    Grow(usize),
    Shrink(usize),
    Reverse,
    SameAs(usize),
    Beyond(usize),
    Huge(u8),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    let header_length = prop_oneof![
        Just(u64::MAX),
        Just(1u64 << 63),
        Just(100_000_001u64),
        Just(100_000_000u64),
        0u64..16,
        any::<u64>(),
        // Near the right value; `HeaderLength(0)`-relative values are resolved in `corrupt`.
        (1u64..64).prop_map(|d| d | (1 << 62)),
        (1u64..64).prop_map(|d| d | (1 << 61)),
    ];
    let field = prop::sample::select(vec!["dtype", "shape", "data_offsets", "*"]);
    let json_edit = prop_oneof![
        (0u8..6).prop_map(JsonEdit::NotAnObject),
        (0usize..8, field, 0u8..8).prop_map(|(i, f, v)| JsonEdit::Field(i, f, v)),
        (0usize..8, any::<bool>()).prop_map(|(i, m)| JsonEdit::Harmless(i, m)),
        (0u8..4).prop_map(JsonEdit::BadMetadata),
    ];
    let offset_edit = prop_oneof![
        (1usize..64).prop_map(OffsetEdit::Shift),
        (1usize..64).prop_map(OffsetEdit::Grow),
        (1usize..64).prop_map(OffsetEdit::Shrink),
        Just(OffsetEdit::Reverse),
        (0usize..8).prop_map(OffsetEdit::SameAs),
        (0usize..64).prop_map(OffsetEdit::Beyond),
        (0u8..3).prop_map(OffsetEdit::Huge),
    ];
    prop_oneof![
        2 => header_length.prop_map(Corruption::HeaderLength),
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(Corruption::Trailing),
        1 => (any::<usize>(), 0x80u8..=0xff).prop_map(|(p, b)| Corruption::NotUtf8(p, b)),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Corruption::Garbage),
        3 => json_edit.prop_map(Corruption::Json),
        3 => (0usize..8, offset_edit).prop_map(|(i, e)| Corruption::Offsets(i, e)),
        2 => (0usize..8, prop::collection::vec(0usize..40, 0..=5))
            .prop_map(|(i, s)| Corruption::Shape(i, s)),
        2 => (0usize..8, 0..DTYPES.len()).prop_map(|(i, d)| Corruption::Dtype(i, d)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Corruption::Flip(p, b)),
    ]
}

/// What must come of a corrupted file.
#[derive(Debug)]
enum Outcome {
    /// Not a safetensors file; the message contains these words (a key where one is at fault).
    Invalid(Vec<String>),
    /// Parses; loading the layer reports this key with this problem.
    Wrong(String, &'static str),
    /// Parses and loads.
    Fine,
    /// Anything but a panic; if it parses and loading fails, the error names a key.
    Unknown,
}

/// The header of `entries` as a JSON object, with their offsets in this order.
fn header_of(entries: &[Entry]) -> serde_json::Map<String, Value> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for e in entries {
        header.insert(e.key.clone(), e.info(offset));
        offset += e.bytes.len();
    }
    header
}

/// The keys `Both` reads from the files of `corrupted_files_are_errors_that_say_where`.
const LAYER_KEYS: [&str; 4] = [
    "l.depthwise.weight",
    "l.depthwise.bias",
    "l.pointwise.weight",
    "l.pointwise.bias",
];

/// The corrupted bytes of the file of `entries`, and what loading them must give.
#[allow(clippy::too_many_lines)] // one arm per corruption, each with its expectation
fn corrupt(entries: &[Entry], corruption: &Corruption) -> (Vec<u8>, Outcome) {
    let good = file(entries, None, 0);
    let header_len = usize::try_from(u64::from_le_bytes(good[..8].try_into().unwrap_or_default()))
        .unwrap_or_default();
    let mut header = header_of(entries);
    let count = entries.len();
    let invalid =
        |words: &[&str]| Outcome::Invalid(words.iter().map(ToString::to_string).collect());
    let data_len: usize = entries.iter().map(|e| e.bytes.len()).sum();
    let starts: Vec<usize> = entries
        .iter()
        .scan(0, |at, e| {
            let start = *at;
            *at += e.bytes.len();
            Some(start)
        })
        .collect();
    match corruption {
        Corruption::HeaderLength(v) => {
            // Values with bit 62 or 61 set stand for the right length plus or minus the rest.
            let v = match *v {
                v if v >> 62 == 1 && v & (1 << 61) == 0 => header_len as u64 + (v & 63),
                v if v >> 61 == 1 && v >> 62 == 0 => (header_len as u64).saturating_sub(v & 63),
                v => v,
            };
            let mut bytes = good.clone();
            bytes[..8].copy_from_slice(&v.to_le_bytes());
            let outcome = if v == header_len as u64 {
                Outcome::Fine
            } else {
                invalid(&[])
            };
            (bytes, outcome)
        }
        Corruption::Trailing(extra) => {
            let mut bytes = good;
            bytes.extend_from_slice(extra);
            // The message names the last tensor (of several empty ones at the end, any).
            (bytes, invalid(&["belong to no tensor", "`"]))
        }
        Corruption::NotUtf8(position, byte) => {
            let mut bytes = good;
            bytes[8 + position % header_len] = *byte;
            (bytes, invalid(&["invalid UTF-8 in header"]))
        }
        Corruption::Garbage(text) => {
            let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(text);
            bytes.extend_from_slice(&good[8 + header_len..]);
            (bytes, invalid(&[]))
        }
        Corruption::Json(edit) => {
            let (value, outcome) = match edit {
                JsonEdit::NotAnObject(kind) => {
                    let keys: Vec<&String> = header.keys().collect();
                    let value = match kind {
                        0 => json!(keys),
                        1 => json!("F32"),
                        2 => json!(42),
                        3 => Value::Null,
                        4 => json!(true),
                        _ => json!([header]),
                    };
                    (value, invalid(&[]))
                }
                JsonEdit::Field(i, field, v) => {
                    let key = entries[i % count].key.clone();
                    let info = header.get_mut(&key).and_then(Value::as_object_mut);
                    let bad = [
                        json!("F17"),
                        json!("f32"),
                        json!(-1),
                        json!(2.5),
                        json!([[1]]),
                        json!([1, 2, 3]),
                        json!(["0", "4"]),
                        json!(1e30),
                    ][usize::from(*v)]
                    .clone();
                    if let Some(info) = info {
                        match *field {
                            "*" => {
                                header.insert(key.clone(), bad);
                            }
                            f if *v == 7 => {
                                info.remove(f);
                            }
                            f => {
                                info.insert(f.to_string(), bad);
                            }
                        }
                    }
                    // `data_offsets: [1, 2, 3]` or `shape: [1, 2, 3]` (wrong but well formed)
                    // may still parse or fail on sizes: both must not panic.
                    let outcome = if *v == 5 {
                        Outcome::Unknown
                    } else {
                        invalid(&[])
                    };
                    (Value::Object(header), outcome)
                }
                JsonEdit::Harmless(i, metadata) => {
                    if *metadata {
                        header.insert("__metadata__".into(), json!({"format": "pt", "x": ""}));
                    } else if let Some(info) = header
                        .get_mut(&entries[i % count].key)
                        .and_then(Value::as_object_mut)
                    {
                        info.insert("comment".into(), json!({"any": [1, "thing"]}));
                    }
                    (Value::Object(header), Outcome::Fine)
                }
                JsonEdit::BadMetadata(kind) => {
                    let value = [
                        json!({"format": 1}),
                        json!([]),
                        json!("pt"),
                        json!({"a": null}),
                    ][usize::from(*kind)]
                    .clone();
                    header.insert("__metadata__".into(), value);
                    (Value::Object(header), invalid(&["invalid JSON in header"]))
                }
            };
            (assemble(&value, 0, entries), outcome)
        }
        Corruption::Offsets(i, edit) => {
            let i = i % count;
            let e = &entries[i];
            let (start, end) = (starts[i], starts[i] + e.bytes.len());
            let offsets: (u64, u64) = match edit {
                OffsetEdit::Shift(d) => ((start + d) as u64, (end + d) as u64),
                OffsetEdit::Grow(d) => (start as u64, (end + d) as u64),
                OffsetEdit::Shrink(d) => (start as u64, end.saturating_sub(*d).max(start) as u64),
                OffsetEdit::Reverse => (end as u64, start as u64),
                OffsetEdit::SameAs(j) => {
                    let j = j % count;
                    (
                        starts[j] as u64,
                        (starts[j] + entries[j].bytes.len()) as u64,
                    )
                }
                OffsetEdit::Beyond(d) => {
                    ((data_len + d) as u64, (data_len + d + e.bytes.len()) as u64)
                }
                OffsetEdit::Huge(kind) => match kind {
                    0 => (u64::MAX - 1, u64::MAX),
                    1 => (0, u64::MAX),
                    _ => (u64::MAX, 0),
                },
            };
            if let Some(info) = header.get_mut(&e.key).and_then(Value::as_object_mut) {
                info.insert("data_offsets".into(), json!([offsets.0, offsets.1]));
            }
            let unchanged = offsets == (start as u64, end as u64);
            // Zero-size tensors can move among themselves without breaking the tiling.
            let outcome = if unchanged {
                Outcome::Fine
            } else if e.bytes.is_empty() || entries.iter().any(|e| e.bytes.is_empty()) {
                Outcome::Unknown
            } else {
                // The walk blames the first tensor out of place, which may be a neighbour.
                Outcome::Invalid(vec!["`".into()])
            };
            (assemble(&Value::Object(header), 0, entries), outcome)
        }
        Corruption::Shape(i, shape) => {
            let e = &entries[i % count];
            if let Some(info) = header.get_mut(&e.key).and_then(Value::as_object_mut) {
                info.insert("shape".into(), json!(shape));
            }
            let elements = shape.iter().product::<usize>();
            let outcome = if elements * DTYPES[e.dtype].1 != e.bytes.len() * 8 {
                Outcome::Invalid(vec![format!("`{}`", e.key), "needs".into()])
            } else if *shape == e.shape || !LAYER_KEYS.contains(&e.key.as_str()) {
                Outcome::Fine
            } else {
                Outcome::Wrong(e.key.clone(), "has shape")
            };
            (assemble(&Value::Object(header), 0, entries), outcome)
        }
        Corruption::Dtype(i, dtype) => {
            let e = &entries[i % count];
            if let Some(info) = header.get_mut(&e.key).and_then(Value::as_object_mut) {
                info.insert("dtype".into(), json!(DTYPES[*dtype].0));
            }
            let outcome = if e.elements() * DTYPES[*dtype].1 != e.bytes.len() * 8 {
                Outcome::Invalid(vec![format!("`{}`", e.key), "needs".into()])
            } else if *dtype < FLOATS || !LAYER_KEYS.contains(&e.key.as_str()) {
                Outcome::Fine
            } else {
                Outcome::Wrong(e.key.clone(), "expected F32, F64, F16 or BF16")
            };
            (assemble(&Value::Object(header), 0, entries), outcome)
        }
        Corruption::Flip(position, byte) => {
            let mut bytes = good;
            let at = 8 + position % header_len;
            let outcome = if bytes[at] == *byte {
                Outcome::Fine
            } else {
                Outcome::Unknown
            };
            bytes[at] = *byte;
            (bytes, outcome)
        }
    }
}

#[test]
fn corrupted_files_are_errors_that_say_where() {
    let strategy = (
        [0..FLOATS, 0..FLOATS, 0..FLOATS, 0..FLOATS],
        any::<u64>(),
        0usize..3,
        corruption(),
    );
    run(
        "Both::from_safetensors (corrupted files)",
        4000,
        strategy,
        |(dtypes, seed, extras, corruption), tally| {
            let layer = LayerFile::new::<Both>("l.".into(), dtypes, seed, extras);
            let entries = layer.entries();
            let (bytes, outcome) = corrupt(&entries, &corruption);
            let parsed = guard("parse", || SafetensorsFile::parse(&bytes))?;
            let loaded = guard("from_safetensors", || Both::from_safetensors(&bytes, "l."))?;
            match outcome {
                Outcome::Invalid(words) => {
                    let mut words: Vec<&str> = words.iter().map(String::as_str).collect();
                    words.push("not a valid safetensors file");
                    let e = rejected(tally, "parse", parsed, &words)?;
                    prop_assert!(matches!(e, Error::InvalidFile { .. }), "{e:?}");
                    words.push("Both::from_safetensors");
                    rejected(tally, "from_safetensors", loaded, &words)?;
                }
                Outcome::Wrong(key, problem) => {
                    accepted(tally, "parse", parsed)?;
                    let quoted = format!("`{key}`");
                    rejected(tally, "from_safetensors", loaded, &[&quoted, problem])?;
                }
                Outcome::Fine => {
                    accepted(tally, "parse", parsed)?;
                    accepted(tally, "from_safetensors", loaded)?;
                }
                Outcome::Unknown => {
                    tally.tried(parsed.is_ok());
                    if let Ok(f) = &parsed {
                        for name in f.names() {
                            let _ = guard("read", || f.read::<f32>(name))?;
                        }
                    }
                    tally.tried(loaded.is_ok());
                    if let Err(e) = loaded {
                        let message = e.to_string();
                        prop_assert!(message.starts_with("Both::from_safetensors: "), "{message}");
                        prop_assert!(
                            matches!(e, Error::InvalidFile { .. }) || message.contains('`'),
                            "names no key: {message}"
                        );
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn truncated_files_are_errors_at_every_length() {
    let strategy = (
        [0..FLOATS, 0..FLOATS, 0..FLOATS, 0..FLOATS],
        any::<u64>(),
        0usize..3,
    );
    run(
        "Both::from_safetensors (truncated files)",
        12,
        strategy,
        |(dtypes, seed, extras), tally| {
            let layer = LayerFile::new::<Both>("l.".into(), dtypes, seed, extras);
            let entries = layer.entries();
            let bytes = file(&entries, None, 0);
            let data_start = bytes.len() - entries.iter().map(|e| e.bytes.len()).sum::<usize>();
            let ends: Vec<(usize, &str)> = entries
                .iter()
                .scan(data_start, |at, e| {
                    *at += e.bytes.len();
                    Some((*at, e.key.as_str()))
                })
                .collect();
            for cut in 0..bytes.len() {
                let mut words = vec!["not a valid safetensors file".to_string()];
                // Cut in the data: the message names the first tensor that ends beyond the cut.
                if cut >= data_start
                    && let Some((_, key)) = ends.iter().find(|(end, _)| *end > cut)
                {
                    words.push(format!("`{key}`"));
                    words.push("truncated".into());
                }
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                let parsed = guard("parse", || SafetensorsFile::parse(&bytes[..cut]))?;
                rejected(tally, "parse", parsed, &words)?;
                let loaded = guard("from_safetensors", || {
                    Both::from_safetensors(&bytes[..cut], "l.")
                })?;
                rejected(tally, "from_safetensors", loaded, &words)?;
            }
            accepted(tally, "parse", SafetensorsFile::parse(&bytes))?;
            Ok(())
        },
    );
}

#[test]
fn tensors_at_any_byte_offset_load() {
    // The format does not align tensors: a U8 tensor of odd length puts the next tensor's data
    // at an odd offset, which must load the same as an aligned one.
    let strategy = (
        0usize..8,
        0..FLOATS,
        prop::collection::vec(0usize..4, 1..=3),
        any::<u64>(),
    );
    run(
        "SafetensorsFile (unaligned tensors)",
        400,
        strategy,
        |(skew, dtype, shape, seed), tally| {
            let mut rng = Rng(seed);
            let pad = Entry {
                key: "a".into(),
                dtype: 5,
                shape: vec![skew],
                bytes: rng.bytes(skew),
            };
            let elements: usize = shape.iter().product();
            let values: Vec<f64> = (0..elements).map(|_| rng.value(4)).collect();
            let bytes = encode(dtype, &values);
            let x = Entry {
                key: "b".into(),
                dtype,
                shape,
                bytes,
            };
            let want = x.decode();
            let file = file(&[pad, x], None, 0);
            let f = accepted(
                tally,
                "parse",
                guard("parse", || SafetensorsFile::parse(&file))?,
            )?;
            let got = accepted(tally, "read", guard("read", || f.read::<f64>("b"))?)?;
            assert_same("b", &got, &want)
        },
    );
}

// ---------------------------------------------------------------------------------------------
// NaN and infinities in weights
// ---------------------------------------------------------------------------------------------

/// What IEEE arithmetic makes of a value: NaN, +inf, -inf or finite.
fn class(v: f64) -> i8 {
    if v.is_nan() {
        0
    } else if v == f64::INFINITY {
        1
    } else if v == f64::NEG_INFINITY {
        -1
    } else {
        2
    }
}

/// `got` has `want`'s class everywhere and its finite values within the tolerance.
fn assert_like<T: Element>(what: &str, got: &[T], want: &[T]) -> TestCaseResult {
    prop_assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        prop_assert_eq!(
            class(g),
            class(w),
            "{}[{}]: {} vs reference {}",
            what,
            i,
            g,
            w
        );
        if w.is_finite() {
            prop_assert!(
                (g - w).abs() <= tolerance::<T>() * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs reference {w}"
            );
        }
    }
    Ok(())
}

fn check_non_finite<L: Layer>(cases: u32) {
    let name = format!("{}: NaN and infinities", L::NAME);
    let strategy = (
        [0..FLOATS, 0..FLOATS, 0..FLOATS, 0..FLOATS],
        any::<u64>(),
        0usize..3,
    );
    run(
        &name,
        cases,
        strategy,
        |(dtypes, seed, input_specials), tally| {
            let s = Sizes::of::<L>();
            let file = LayerFile::new::<L>("m.".into(), dtypes, seed, 0);
            let w = file.weights::<L::Elem>(s);
            let layer = guard("from_safetensors", || {
                L::from_safetensors(&file.bytes(), "m.")
            })?;
            let layer = accepted(tally, "from_safetensors", layer)?;
            let typed = |i: usize| -> Option<Vec<L::Elem>> {
                w[i].as_ref()
                    .map(|v| v.iter().map(|&x| L::Elem::from_f64(x)).collect())
            };
            let (dw, db, pw, pb) = (
                typed(0).unwrap_or_default(),
                typed(1),
                typed(2).unwrap_or_default(),
                typed(3),
            );
            let mut rng = Rng(seed ^ 0x5eed);
            // Inputs: finite, or with one value in 64 (or 8) non-finite as well.
            let special = [0, 64, 8][input_specials];
            let x: Vec<L::Elem> = rng.values(L::SHAPE.input_len, special);
            let fail = |e: Error| TestCaseError::fail(e.to_string());
            let [dact, pact] = [L::DEPTHWISE_ACTIVATION, L::POINTWISE_ACTIVATION];
            let want_dw =
                reference::depthwise(&L::SPEC, &x, &dw, db.as_deref(), dact).map_err(fail)?;
            let want_pw =
                reference::pointwise(&L::SPEC, &want_dw, &pw, pb.as_deref(), pact).map_err(fail)?;
            let want = reference::forward(
                &L::SPEC,
                &x,
                &dw,
                db.as_deref(),
                &pw,
                pb.as_deref(),
                [dact, pact],
            )
            .map_err(fail)?;
            let input = L::Input::from_hwc(&x).map_err(fail)?;
            let depthwise = L::Depthwise::from_hwc(&want_dw).map_err(fail)?;
            let nan = L::Elem::from_f64(f64::NAN);
            let filled = |len: usize| vec![nan; len];
            assert_like(
                "forward",
                guard("forward", || layer.forward(&input))?.as_slice(),
                &want,
            )?;
            let mut out = L::Output::from_hwc(&filled(want.len())).map_err(fail)?;
            guard("forward_into", || layer.forward_into(&input, &mut out))?;
            assert_like("forward_into", out.as_slice(), &want)?;
            assert_like(
                "depthwise",
                guard("depthwise", || layer.depthwise(&input))?.as_slice(),
                &want_dw,
            )?;
            for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
                if !isa.is_supported() {
                    continue;
                }
                let mut out = L::Output::from_hwc(&filled(want.len())).map_err(fail)?;
                guard("forward_into_with", || {
                    layer.forward_into_with(isa, &input, &mut out);
                })?;
                assert_like(
                    &format!("forward_into_with({isa:?})"),
                    out.as_slice(),
                    &want,
                )?;
                let mut d = L::Depthwise::from_hwc(&filled(want_dw.len())).map_err(fail)?;
                guard("depthwise_into_with", || {
                    layer.depthwise_into_with(isa, &input, &mut d);
                })?;
                assert_like(
                    &format!("depthwise_into_with({isa:?})"),
                    d.as_slice(),
                    &want_dw,
                )?;
                let mut p = L::Output::from_hwc(&filled(want_pw.len())).map_err(fail)?;
                guard("pointwise_into_with", || {
                    layer.pointwise_into_with(isa, &depthwise, &mut p);
                })?;
                assert_like(
                    &format!("pointwise_into_with({isa:?})"),
                    p.as_slice(),
                    &want_pw,
                )?;
                tally.tried(true);
            }
            Ok(())
        },
    );
}

#[test]
fn nan_and_infinities_load_and_propagate_alike_on_every_path() {
    check_non_finite::<Both>(200);
    check_non_finite::<Pointwise64>(200);
    check_non_finite::<Plain>(100);
    check_non_finite::<Strip>(40);
    check_non_finite::<StripF64>(40);
}

/// A NaN or infinite depthwise weight reaches exactly the outputs whose window covers an input
/// pixel with that tap; windows that cover it only through padding stay finite, because taps on
/// padding are skipped, not multiplied by zero (`NaN * 0` and `inf * 0` would be NaN).
fn check_padding_taps<L: Layer>() {
    let s = Sizes::of::<L>();
    let shape = L::SHAPE;
    let [h, w, _] = shape.input;
    let [oh, ow, cm] = shape.depthwise;
    let (pad_h, pad_w) = (shape.rows.pad_before, shape.cols.pad_before);
    let [sh, sw] = L::SPEC.stride;
    let specials: &[f64] = if L::DEPTHWISE_ACTIVATION == Activation::None {
        &[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
    } else {
        &[f64::NAN] // ReLU and ReLU6 turn infinities into finite values
    };
    let t = |v: f64, len: usize| vec![L::Elem::from_f64(v); len];
    for &bad in specials {
        // Channel 0, tap (0, 0): it reads input pixel (y * sh - pad_h, x * sw - pad_w).
        let mut dw = t(0.5, s.lens()[0]);
        dw[0] = L::Elem::from_f64(bad);
        let db = s.depthwise_bias.then(|| t(0.1, s.cm));
        let pb = s.pointwise_bias.then(|| t(0.0, s.n));
        let layer = L::from_pytorch(&dw, db.as_deref(), &t(0.25, s.cm * s.n), pb.as_deref())
            .unwrap_or_else(|e| panic!("{e}"));
        let x = L::Input::from_hwc(&t(1.0, shape.input_len)).unwrap_or_else(|e| panic!("{e}"));
        let mut pixels_on_padding = 0;
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            if !isa.is_supported() {
                continue;
            }
            let mut d = L::Depthwise::from_hwc(&t(f64::NAN, shape.depthwise_len))
                .unwrap_or_else(|e| panic!("{e}"));
            layer.depthwise_into_with(isa, &x, &mut d);
            for y in 0..oh {
                for x in 0..ow {
                    let row = (y * sh).checked_sub(pad_h).filter(|&r| r < h);
                    let col = (x * sw).checked_sub(pad_w).filter(|&c| c < w);
                    let inside = row.is_some() && col.is_some();
                    pixels_on_padding += usize::from(!inside);
                    for k in 0..cm {
                        let v = d.as_slice()[(y * ow + x) * cm + k].to_f64();
                        if k == 0 && inside {
                            assert_eq!(
                                class(v),
                                class(bad),
                                "{} {isa:?} {bad}: ({y}, {x})",
                                L::NAME
                            );
                        } else {
                            assert!(
                                v.is_finite(),
                                "{} {isa:?} {bad}: ({y}, {x}, {k}) = {v}",
                                L::NAME
                            );
                        }
                    }
                }
            }
        }
        assert!(
            pixels_on_padding > 0,
            "{}: the tap never meets padding",
            L::NAME
        );
    }
}

#[test]
fn taps_on_padding_are_skipped() {
    check_padding_taps::<Both>();
    check_padding_taps::<Pointwise64>();
    check_padding_taps::<Strip>();
    check_padding_taps::<StripF64>();
}

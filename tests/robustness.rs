//! The runtime under hostile data: constructors that must return `Err` and never panic, NaN and
//! infinities that must propagate as IEEE 754 says on every dispatch path, outputs pre-filled
//! with NaN or a sentinel so that a cell no kernel writes is caught, bit-identical results run to
//! run and with any thread count, and MobileNet v1 layers in small thread stacks.
//!
//! The IEEE checks compare each output's class (NaN, +inf, -inf, finite) with a model of the
//! layer evaluated in `f64` in this file (`Model`): which outputs are NaN or infinite does
//! not depend on the order in which the terms are summed (`x + NaN`, `inf + -inf` and `inf * 0`
//! are NaN whatever else is in the sum), so every instruction set must reproduce the model's
//! pattern exactly; finite values must match it within the tolerance of `common::tolerance`.
//! Taps that fall on padding are not computed (the README: a window that holds only padding
//! outputs the bias), so an infinite weight does not turn padding into NaN.
//!
//! `cargo test --workspace --all-features` also runs the `rayon` checks: the parallel forward
//! in child processes whose `rayon` pool has 1, 2 and 3 threads (`RAYON_NUM_THREADS`; this crate
//! has no `rayon` dependency of its own to build pools with) must give the same bits.

mod common;

use std::fmt::Write as _;

use separable::{Activation, Bias, Element, Error, Isa, Layer, Tensor, separable_conv};

use common::{Buf, Layout, TestLayer, position, tolerance, widen};

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

separable_conv! {
    /// Tiny, computed in channel planes (6 depthwise channels).
    struct Tiny { input: 5 x 5 x 3, output: 4, padding: same, multiplier: 2, bias: both }
}

separable_conv! {
    /// Tiny in channel planes, ReLU6 after both stages.
    struct Tiny6 { input: 5 x 5 x 3, output: 4, padding: same, activation: relu6 }
}

separable_conv! {
    /// Tiny and unrolled: 9 channels are too wide for channel planes.
    struct Wide { input: 5 x 5 x 9, output: 4, padding: same, bias: both }
}

separable_conv! {
    /// Strips: 400 output positions, interior runs through the row microkernel, border loops.
    struct Strip { input: 20 x 20 x 40, output: 24, padding: same, bias: both }
}

separable_conv! {
    /// Strips at stride 2 with ReLU6.
    struct Strip6 { input: 20 x 20 x 40, output: 24, stride: 2, padding: same, activation: relu6 }
}

separable_conv! {
    /// Strips in `f64`, with a depth multiplier and a 5 x 5 window.
    struct StripF64 {
        input: 12 x 12 x 10, output: 20, kernel: 5, multiplier: 2, padding: same, bias: both,
        dtype: f64,
    }
}

separable_conv! {
    /// Two strips of rows and two blocks of 160 channels.
    struct Blocks { input: 6 x 26 x 320, output: 18, padding: same, bias: pointwise }
}

separable_conv! {
    /// No biases at all: the constructors' `bias: none` case.
    struct NoBias { input: 4 x 4 x 2, output: 3, kernel: 2 x 3 }
}

separable_conv! {
    /// Six strips of 16 rows: enough work to spread over threads.
    struct Par { input: 96 x 16 x 64, output: 48, padding: same, bias: both, activation: relu6 }
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// `SplitMix64`: deterministic test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`, never exactly zero (so `inf * x` is never NaN by accident).
    fn nonzero(&mut self) -> f64 {
        loop {
            let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let v = 2.0 * unit - 1.0;
            if v.abs() > 1e-3 {
                return v;
            }
        }
    }

    fn values<T: Element>(&mut self, len: usize) -> Vec<T> {
        (0..len).map(|_| T::from_f64(self.nonzero())).collect()
    }
}

/// A layer's four PyTorch tensors, with exactly the biases it declares.
#[derive(Clone)]
struct Weights<T> {
    dw: Vec<T>,
    dw_bias: Option<Vec<T>>,
    pw: Vec<T>,
    pw_bias: Option<Vec<T>>,
}

impl<T: Element> Weights<T> {
    fn random<L: Layer<Elem = T>>(rng: &mut Rng) -> Self {
        let s = L::SHAPE;
        Weights {
            dw: rng.values(L::SPEC.kernel[0] * L::SPEC.kernel[1] * s.depthwise[2]),
            dw_bias: L::SPEC.bias.depthwise().then(|| rng.values(s.depthwise[2])),
            pw: rng.values(s.output[2] * s.depthwise[2]),
            pw_bias: L::SPEC.bias.pointwise().then(|| rng.values(s.output[2])),
        }
    }

    fn load<L: Layer<Elem = T>>(&self) -> L {
        L::from_pytorch(
            &self.dw,
            self.dw_bias.as_deref(),
            &self.pw,
            self.pw_bias.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{}: from_pytorch: {e}", L::NAME))
    }
}

// ---------------------------------------------------------------------------------------------
// The f64 model
// ---------------------------------------------------------------------------------------------

/// The layer as the README defines it, evaluated in `f64` with plain loops.
struct Model {
    spec: separable::LayerSpec,
    shape: separable::LayerShape,
    activations: [Activation; 2],
    weights: Weights<f64>,
}

fn activate(activation: Activation, v: f64) -> f64 {
    // `relu` is max(x, 0) and `relu6` min(max(x, 0), 6), and a NaN stays NaN.
    match activation {
        Activation::None => v,
        Activation::Relu => {
            if v < 0.0 {
                0.0
            } else {
                v
            }
        }
        Activation::Relu6 => {
            #[allow(clippy::manual_clamp)] // the definition, comparison by comparison
            if v < 0.0 {
                0.0
            } else if v > 6.0 {
                6.0
            } else {
                v
            }
        }
    }
}

impl Model {
    fn of<L: Layer>(weights: &Weights<L::Elem>) -> Model {
        let wide = |v: &[L::Elem]| widen(v);
        Model {
            spec: L::SPEC,
            shape: L::SHAPE,
            activations: [L::DEPTHWISE_ACTIVATION, L::POINTWISE_ACTIVATION],
            weights: Weights {
                dw: wide(&weights.dw),
                dw_bias: weights.dw_bias.as_deref().map(wide),
                pw: wide(&weights.pw),
                pw_bias: weights.pw_bias.as_deref().map(wide),
            },
        }
    }

    /// The depthwise stage: only taps inside the input are summed.
    fn depthwise(&self, x: &[f64]) -> Expected {
        let [h, w, c] = self.shape.input;
        let [oh, ow, cm] = self.shape.depthwise;
        let [kh, kw] = self.spec.kernel;
        let m = self.spec.multiplier;
        let mut out = Expected::default();
        for oy in 0..oh {
            for ox in 0..ow {
                for k in 0..cm {
                    let bias = self.weights.dw_bias.as_ref().map_or(0.0, |b| b[k]);
                    let (mut acc, mut scale) = (bias, bias.abs());
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * self.spec.stride[0] + ky * self.spec.dilation[0])
                                .checked_sub(self.shape.rows.pad_before)
                                .filter(|&iy| iy < h);
                            let ix = (ox * self.spec.stride[1] + kx * self.spec.dilation[1])
                                .checked_sub(self.shape.cols.pad_before)
                                .filter(|&ix| ix < w);
                            if let (Some(iy), Some(ix)) = (iy, ix) {
                                let term = x[(iy * w + ix) * c + k / m]
                                    * self.weights.dw[(k * kh + ky) * kw + kx];
                                acc += term;
                                scale += term.abs();
                            }
                        }
                    }
                    out.values.push(activate(self.activations[0], acc));
                    out.scale.push(scale);
                }
            }
        }
        out
    }

    /// The pointwise stage on depthwise values `y` known to within `y.scale` times the rounding
    /// of one sum.
    fn pointwise(&self, y: &Expected) -> Expected {
        let cm = self.shape.depthwise[2];
        let n = self.shape.output[2];
        let mut out = Expected::default();
        for (pixel, scales) in y.values.chunks_exact(cm).zip(y.scale.chunks_exact(cm)) {
            for o in 0..n {
                let bias = self.weights.pw_bias.as_ref().map_or(0.0, |b| b[o]);
                let (mut acc, mut scale) = (bias, bias.abs());
                for (k, (&v, &s)) in pixel.iter().zip(scales).enumerate() {
                    let w = self.weights.pw[o * cm + k];
                    acc += v * w;
                    scale += (s * w).abs();
                }
                out.values.push(activate(self.activations[1], acc));
                out.scale.push(scale);
            }
        }
        out
    }
}

/// Expected values, and for each the sum of the magnitudes of the terms that made it (the
/// scale of the rounding error any summation order can have).
#[derive(Default)]
struct Expected {
    values: Vec<f64>,
    scale: Vec<f64>,
}

impl Expected {
    /// Values given exactly (a kernel's own output fed to the next stage).
    fn exact(values: Vec<f64>) -> Expected {
        let scale = values.iter().map(|v| v.abs()).collect();
        Expected { values, scale }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------------------------

/// What IEEE arithmetic makes of a value, independent of rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Finite,
    PosInf,
    NegInf,
    NaN,
}

fn class(v: f64) -> Class {
    if v.is_nan() {
        Class::NaN
    } else if v == f64::INFINITY {
        Class::PosInf
    } else if v == f64::NEG_INFINITY {
        Class::NegInf
    } else {
        Class::Finite
    }
}

/// How many values of each class, for messages and for checking that a scenario reaches what it
/// is about.
fn census(values: &[f64]) -> [usize; 4] {
    let mut counts = [0; 4];
    for &v in values {
        counts[class(v) as usize] += 1;
    }
    counts
}

/// Asserts that `got` has the model's class everywhere, and its finite values within
/// `common::tolerance` of the model, relative to the magnitude of the terms summed (at least 1).
#[track_caller]
fn assert_matches<T: Element>(what: &str, dims: [usize; 3], got: &[T], expected: &Expected) {
    let want = &expected.values;
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = tolerance::<T>();
    for (i, ((&g, &w), &scale)) in got.iter().zip(want).zip(&expected.scale).enumerate() {
        let g = g.to_f64();
        let (h, x, c) = position(i, dims);
        assert_eq!(
            class(g),
            class(w),
            "{what}: (h {h}, w {x}, c {c}) is {g:e}, IEEE says {w:e} ({:?}); got {:?}, want {:?} \
             (finite, +inf, -inf, NaN)",
            class(w),
            census(&widen(got)),
            census(want),
        );
        if class(w) == Class::Finite {
            assert!(
                (g - w).abs() <= tol * scale.max(1.0),
                "{what}: (h {h}, w {x}, c {c}) is {g:e}, expected {w:e} (terms of magnitude {scale:e})"
            );
        }
    }
}

/// The instruction sets this CPU runs.
fn isas() -> Vec<Isa> {
    let all = [Isa::Portable, Isa::Avx2, Isa::Avx512];
    all.into_iter().filter(|isa| isa.is_supported()).collect()
}

/// Runs every entry point of `layer` on `x` (HWC) and compares each with the model: `forward`,
/// `depthwise`, `forward_into`, `forward_slices`, and per instruction set `forward_into_with`,
/// `depthwise_into_with` and `pointwise_into_with` (the last on the layer's own depthwise
/// output). Outputs start filled with `prefill`, so a cell no kernel writes keeps it.
fn check_all_paths<L: TestLayer>(
    what: &str,
    layer: &L,
    model: &Model,
    x: &[L::Elem],
    prefill: f64,
) -> [Vec<f64>; 2] {
    let (dw_dims, out_dims) = (L::SHAPE.depthwise, L::SHAPE.output);
    let want_dw = model.depthwise(&widen(x));
    let want_y = model.pointwise(&want_dw);
    let input = L::Input::from_hwc_slice(x);
    let fill = || L::Elem::from_f64(prefill);

    assert_matches(
        &format!("{what}: forward"),
        out_dims,
        layer.forward(&input).hwc(),
        &want_y,
    );
    assert_matches(
        &format!("{what}: depthwise"),
        dw_dims,
        layer.depthwise(&input).hwc(),
        &want_dw,
    );
    let mut out = L::Output::filled_with(fill());
    layer.forward_into(&input, &mut out);
    assert_matches(
        &format!("{what}: forward_into"),
        out_dims,
        out.hwc(),
        &want_y,
    );
    let mut out = vec![fill(); L::SHAPE.output_len];
    layer
        .forward_slices(x, &mut out)
        .unwrap_or_else(|e| panic!("{what}: forward_slices: {e}"));
    assert_matches(&format!("{what}: forward_slices"), out_dims, &out, &want_y);

    for isa in isas() {
        let mut out = L::Output::filled_with(fill());
        layer.forward_into_with(isa, &input, &mut out);
        assert_matches(
            &format!("{what}: forward_into_with({isa:?})"),
            out_dims,
            out.hwc(),
            &want_y,
        );

        let mut dw = L::Depthwise::filled_with(fill());
        layer.depthwise_into_with(isa, &input, &mut dw);
        assert_matches(
            &format!("{what}: depthwise_into_with({isa:?})"),
            dw_dims,
            dw.hwc(),
            &want_dw,
        );

        let mut out = L::Output::filled_with(fill());
        layer.pointwise_into_with(isa, &dw, &mut out);
        let want = model.pointwise(&Expected::exact(widen(dw.hwc())));
        assert_matches(
            &format!("{what}: pointwise_into_with({isa:?})"),
            out_dims,
            out.hwc(),
            &want,
        );
    }
    [want_dw.values, want_y.values]
}

// ---------------------------------------------------------------------------------------------
// (a) Constructors return `Err` on user data of the wrong size, never panic
// ---------------------------------------------------------------------------------------------

/// Lengths around `len`: empty, one, one short, one long, double.
fn wrong_lengths(len: usize) -> Vec<usize> {
    let mut lengths = vec![0, 1, len.saturating_sub(1), len + 1, 2 * len + 1];
    lengths.retain(|&l| l != len);
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

#[track_caller]
fn assert_length_error<X>(
    result: Result<X, Error>,
    context: &str,
    tensor: &str,
    expected: usize,
    actual: usize,
) {
    match result {
        Err(Error::Length {
            context: c,
            tensor: t,
            expected: e,
            actual: a,
            shape,
        }) => {
            assert_eq!((c, t, e, a), (context, tensor, expected, actual));
            assert_eq!(shape.elements(), Some(expected), "{context}: {shape:?}");
        }
        Err(other) => {
            panic!("{context}: `{tensor}` of {actual}: expected a length error, got {other:?}")
        }
        Ok(_) => {
            panic!("{context}: `{tensor}` of {actual} elements (expected {expected}) was accepted")
        }
    }
}

/// `from_hwc` and `from_chw` on every wrong length, and the right one.
fn check_tensor_lengths<const H: usize, const W: usize, const C: usize, T: Element>() {
    let len = H * W * C;
    for bad in wrong_lengths(len) {
        let data = vec![T::from_f64(1.0); bad];
        assert_length_error(
            Tensor::<H, W, C, T>::from_hwc(&data),
            "Tensor::from_hwc",
            "data",
            len,
            bad,
        );
        assert_length_error(
            Tensor::<H, W, C, T>::from_chw(&data),
            "Tensor::from_chw",
            "data",
            len,
            bad,
        );
    }
    // The right length: HWC is copied as is, CHW transposed.
    let data: Vec<T> = (0..len).map(|i| T::from_f64(i as f64)).collect();
    let hwc = Tensor::<H, W, C, T>::from_hwc(&data).expect("right length");
    assert_eq!(hwc.as_slice(), &data[..]);
    let chw = Tensor::<H, W, C, T>::from_chw(&data).expect("right length");
    for h in 0..H {
        for w in 0..W {
            for c in 0..C {
                assert_eq!(chw[(h, w, c)], data[(c * H + h) * W + w]);
            }
        }
    }
}

#[test]
fn tensor_constructors_reject_wrong_lengths() {
    check_tensor_lengths::<5, 5, 3, f32>();
    check_tensor_lengths::<1, 1, 1, f32>();
    check_tensor_lengths::<20, 20, 40, f64>();
    check_tensor_lengths::<112, 112, 32, f32>();
    // Empty tensors: only the empty slice fits.
    check_tensor_lengths::<0, 5, 3, f32>();
    check_tensor_lengths::<4, 0, 1, f64>();
    check_tensor_lengths::<3, 2, 0, f32>();
}

#[cfg(feature = "ndarray")]
#[test]
fn from_array_rejects_wrong_shapes_in_any_layout() {
    use separable::ndarray::{Array3, ShapeBuilder, s};

    type T = Tensor<4, 5, 3>;
    let expected: [usize; 3] = [4, 5, 3];
    let mut shapes = Vec::new();
    for axis in 0..3 {
        for delta in [-4isize, -1, 1, 7] {
            let mut shape = expected;
            shape[axis] = shape[axis].saturating_add_signed(delta);
            shapes.push(shape);
        }
    }
    shapes.extend([[3, 5, 4], [5, 4, 3], [0, 0, 0], [60, 1, 1], [1, 1, 60]]);
    for shape in shapes {
        let array = Array3::<f32>::zeros((shape[0], shape[1], shape[2]));
        // Row-major, column-major, and a strided view of a larger array of that shape.
        let fortran = Array3::<f32>::zeros((shape[0], shape[1], shape[2]).f());
        let big = Array3::<f32>::zeros((shape[0] * 2, shape[1] + 1, shape[2] * 3));
        let strided = big.slice(s![..;2, ..shape[1], ..;3]);
        for (layout, view) in [
            ("C", array.view()),
            ("F", fortran.view()),
            ("strided", strided),
        ] {
            assert_eq!(view.dim(), (shape[0], shape[1], shape[2]));
            match T::from_array(view) {
                Err(Error::Shape {
                    context,
                    tensor,
                    expected: e,
                    actual,
                }) => {
                    assert_eq!((context, tensor), ("Tensor::from_array", "array"));
                    assert_eq!(e.as_slice(), &expected[..]);
                    assert_eq!(actual.as_slice(), &shape[..], "{layout}");
                }
                other => {
                    panic!("shape {shape:?} ({layout}): expected a shape error, got {other:?}")
                }
            }
        }
    }
    // The right shape in a permuted (CHW seen as HWC) and a reversed layout reads each element.
    let chw = Array3::<f32>::from_shape_fn((3, 4, 5), |(c, h, w)| (c * 100 + h * 10 + w) as f32);
    let t = T::from_array(chw.view().permuted_axes([1, 2, 0])).expect("right shape");
    let mut reversed =
        Array3::<f32>::from_shape_fn((4, 5, 3), |(h, w, c)| (h * 100 + w * 10 + c) as f32);
    reversed.invert_axis(separable::ndarray::Axis(1));
    let r = T::from_array(reversed.view()).expect("right shape");
    for h in 0..4 {
        for w in 0..5 {
            for c in 0..3 {
                assert_eq!(t[(h, w, c)], (c * 100 + h * 10 + w) as f32);
                assert_eq!(r[(h, w, c)], (h * 100 + (4 - w) * 10 + c) as f32);
            }
        }
    }
}

/// What `from_pytorch` must say about one argument, or `None` if it is fine.
fn expected_problem(
    tensor: &'static str,
    declared: Option<bool>,
    given: Option<usize>,
    len: usize,
) -> Option<(&'static str, Option<(usize, usize)>)> {
    match (declared, given) {
        // A weight (always given) or a declared bias given: its length must match.
        (None | Some(true), Some(g)) if g != len => Some((tensor, Some((len, g)))),
        (Some(true), None) | (Some(false), Some(_)) => Some((tensor, None)),
        _ => None,
    }
}

/// `from_pytorch` over wrong lengths of each tensor and every presence of each bias: the first
/// tensor in argument order that is wrong is reported, with the right variant.
fn check_from_pytorch<L: Layer<Elem = f32>>() {
    let s = L::SHAPE;
    let (cm, n) = (s.depthwise[2], s.output[2]);
    let dw_len = L::SPEC.kernel[0] * L::SPEC.kernel[1] * cm;
    let pw_len = n * cm;
    let context = format!("{}::from_pytorch", L::NAME);
    let (dw_declared, pw_declared) = (L::SPEC.bias.depthwise(), L::SPEC.bias.pointwise());
    let lengths = |len: usize| {
        let mut all = wrong_lengths(len);
        all.push(len);
        all
    };
    let biases = |len: usize| {
        let mut all: Vec<Option<usize>> = vec![None, Some(len)];
        all.extend(wrong_lengths(len).into_iter().map(Some));
        all
    };
    let mut cases = 0;
    let mut accepted = 0;
    for dw in lengths(dw_len) {
        for dwb in biases(cm) {
            for pw in lengths(pw_len) {
                for pwb in biases(n) {
                    let buf = |len: usize| vec![0.5f32; len];
                    let (dw_v, pw_v) = (buf(dw), buf(pw));
                    let (dwb_v, pwb_v) = (dwb.map(buf), pwb.map(buf));
                    let result = L::from_pytorch(&dw_v, dwb_v.as_deref(), &pw_v, pwb_v.as_deref());
                    let expected = expected_problem("depthwise.weight", None, Some(dw), dw_len)
                        .or_else(|| expected_problem("depthwise.bias", Some(dw_declared), dwb, cm))
                        .or_else(|| expected_problem("pointwise.weight", None, Some(pw), pw_len))
                        .or_else(|| expected_problem("pointwise.bias", Some(pw_declared), pwb, n));
                    let case =
                        format!("{context}(dw {dw}, dw bias {dwb:?}, pw {pw}, pw bias {pwb:?})");
                    cases += 1;
                    match (expected, result) {
                        (None, Ok(_)) => accepted += 1,
                        (None, Err(e)) => panic!("{case}: rejected: {e}"),
                        (Some(_), Ok(_)) => panic!("{case}: accepted"),
                        (Some((tensor, Some((want, given)))), result) => {
                            assert_length_error(result, &context, tensor, want, given);
                        }
                        (Some((tensor, None)), Err(e)) => {
                            let given = matches!(
                                (tensor, dwb, pwb),
                                ("depthwise.bias", Some(_), _) | ("pointwise.bias", _, Some(_))
                            );
                            let ok = match &e {
                                Error::UnexpectedBias {
                                    context: c,
                                    tensor: t,
                                    declared,
                                } => {
                                    given
                                        && *c == context
                                        && *t == tensor
                                        && declared.0 == L::SPEC.bias
                                }
                                Error::MissingBias {
                                    context: c,
                                    tensor: t,
                                    declared,
                                } => {
                                    !given
                                        && *c == context
                                        && *t == tensor
                                        && declared.0 == L::SPEC.bias
                                }
                                _ => false,
                            };
                            assert!(
                                ok,
                                "{case}: expected a bias error for `{tensor}`, got {e:?}"
                            );
                        }
                    }
                }
            }
        }
    }
    // One combination in every `lengths x biases` product is right.
    assert_eq!(
        accepted, 1,
        "{context}: {accepted} of {cases} combinations accepted"
    );
}

/// `forward_slices` over wrong lengths of the input and of the output: the first wrong buffer in
/// argument order is reported, and the output is left untouched.
fn check_forward_slices<L: Layer<Elem = f32>>() {
    let layer = L::zeroed();
    let context = format!("{}::forward_slices", L::NAME);
    let (in_len, out_len) = (L::SHAPE.input_len, L::SHAPE.output_len);
    let sentinel = -3.5f32;
    let lengths = |len: usize| {
        let mut all = wrong_lengths(len);
        all.push(len);
        all
    };
    let (inputs, outputs) = (lengths(in_len), lengths(out_len));
    for &i in &inputs {
        for &o in &outputs {
            let input = vec![1.0f32; i];
            let mut output = vec![sentinel; o];
            let result = layer.forward_slices(&input, &mut output);
            if i != in_len {
                assert_length_error(result, &context, "input", in_len, i);
            } else if o != out_len {
                assert_length_error(result, &context, "output", out_len, o);
            } else {
                assert!(result.is_ok(), "{context}: rejected the right lengths");
                // Zero weights and biases: every output is 0.
                assert!(
                    output.iter().all(|&v| v == 0.0),
                    "{context}: output not written"
                );
                continue;
            }
            assert!(
                output.iter().all(|&v| v == sentinel),
                "{context}(input {i}, output {o}): the output was written before the error"
            );
        }
    }
}

#[test]
fn forward_slices_rejects_every_wrong_length() {
    check_forward_slices::<NoBias>();
    check_forward_slices::<Blocks>();
    check_forward_slices::<Tiny>();
    check_forward_slices::<Strip>();
}

#[test]
fn from_pytorch_rejects_every_wrong_length_and_bias() {
    assert_eq!(NoBias::SPEC.bias, Bias::None);
    assert_eq!(Blocks::SPEC.bias, Bias::Pointwise);
    assert_eq!(Strip::SPEC.bias, Bias::Both);
    check_from_pytorch::<NoBias>();
    check_from_pytorch::<Blocks>();
    check_from_pytorch::<Tiny>();
    check_from_pytorch::<Strip>();
}

// ---------------------------------------------------------------------------------------------
// (b) NaN and infinities propagate as IEEE 754 says, on every dispatch path
// ---------------------------------------------------------------------------------------------

/// Where a scenario puts its non-finite values, relative to a layer's shapes.
struct Scenario {
    name: &'static str,
    /// Changes the input (HWC) and the weights.
    apply: fn(&Model, &mut [f64], &mut Weights<f64>),
    /// What the model's depthwise and final outputs must contain (counts of finite, +inf,
    /// -inf and NaN values, see [`census`]), so that the scenario reaches what it is about.
    expect: fn(dw: [usize; 4], y: [usize; 4], layer: Geometry) -> bool,
}

/// What of a layer's geometry decides which outputs a scenario can reach.
#[derive(Clone, Copy)]
struct Geometry {
    /// The layer pads its input (taps can fall outside it).
    padded: bool,
    /// The input is under 8 x 8: windows overlap so much that no output sees one infinity alone.
    small: bool,
}

/// Index of `(h, w, c)` in an HWC tensor of `dims`.
fn at(dims: [usize; 3], h: usize, w: usize, c: usize) -> usize {
    (h * dims[1] + w) * dims[2] + c
}

/// Pixels for NaNs: the first and the last, and on inputs large enough to keep finite outputs
/// in between, one on the top border and one inside.
fn spots(dims: [usize; 3]) -> Vec<(usize, usize, usize)> {
    let [h, w, c] = dims;
    let mut spots = vec![(0, 0, 0), (h - 1, w - 1, c - 1)];
    if h >= 8 && w >= 8 {
        spots.extend([(0, w / 2, c / 2), (h / 2, w / 2, c - 1)]);
    }
    spots
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "NaN inputs reach exactly the windows that cover them",
        apply: |m, x, _| {
            for (h, w, c) in spots(m.shape.input) {
                x[at(m.shape.input, h, w, c)] = f64::NAN;
            }
        },
        expect: |[f, _, _, nan], [yf, _, _, ynan], _| f > 0 && nan > 0 && yf > 0 && ynan > 0,
    },
    Scenario {
        name: "+inf and -inf inputs: infinite where one reaches, NaN where both meet",
        apply: |m, x, wts| {
            let [h, w, c] = m.shape.input;
            // Neighbours in input channel 0, whose depthwise weights are made positive: windows
            // that cover both sum +inf and -inf.
            let taps = m.spec.kernel[0] * m.spec.kernel[1];
            for v in &mut wts.dw[..m.spec.multiplier * taps] {
                *v = v.abs();
            }
            x[at(m.shape.input, h / 2, w / 2, 0)] = f64::INFINITY;
            x[at(m.shape.input, h / 2, w / 2 + 1, 0)] = f64::NEG_INFINITY;
            x[at(m.shape.input, 0, 0, c - 1)] = f64::INFINITY;
        },
        expect: |[f, pos, neg, nan], [yf, _, _, ynan], g| {
            f > 0 && (g.small || (pos > 0 && neg > 0)) && nan > 0 && yf > 0 && ynan > 0
        },
    },
    Scenario {
        name: "inf * 0: an infinite value under a zero weight is NaN, in both stages",
        apply: |m, x, wts| {
            let [h, w, _] = m.shape.input;
            let [kh, kw] = m.spec.kernel;
            x[at(m.shape.input, h / 2, w / 2, 0)] = f64::INFINITY;
            // Channel 0's centre tap is zero: where it lands on the infinity, NaN; the other
            // taps that reach it give ±inf.
            wts.dw[(kh / 2) * kw + kw / 2] = 0.0;
            // Output 0 reads channel 0 with weight zero: NaN wherever that channel is ±inf,
            // while the other outputs are ±inf there.
            wts.pw[0] = 0.0;
        },
        expect: |[f, pos, neg, nan], [yf, ypos, yneg, ynan], _| {
            f > 0 && pos + neg > 0 && nan > 0 && yf > 0 && ypos + yneg > 0 && ynan > 0
        },
    },
    Scenario {
        name: "an infinite depthwise weight: ±inf, NaN on zero inputs, padding untouched",
        apply: |m, x, wts| {
            let w = m.shape.input[1];
            // Channel 0's first tap is +inf; row 1 of input channel 0 is zero (inf * 0 = NaN).
            wts.dw[0] = f64::INFINITY;
            for ix in 0..w {
                x[at(m.shape.input, 1, ix, 0)] = 0.0;
            }
        },
        expect: |[f, pos, neg, nan], [yf, ypos, yneg, ynan], g| {
            f > 0 && pos + neg > 0 && nan > 0 && ynan > 0 && ypos + yneg > 0 && (yf > 0) == g.padded
        },
    },
    Scenario {
        name: "a NaN depthwise weight: NaN wherever its tap is inside the input",
        apply: |m, _, wts| {
            let [kh, kw] = m.spec.kernel;
            let cm = m.shape.depthwise[2];
            wts.dw[((cm - 1) * kh + kh - 1) * kw + kw - 1] = f64::NAN;
        },
        expect: |[f, pos, neg, nan], [yf, ypos, yneg, ynan], g| {
            f > 0
                && pos + neg == 0
                && nan > 0
                && ypos + yneg == 0
                && ynan > 0
                && (yf > 0) == g.padded
        },
    },
    Scenario {
        name: "infinite pointwise weights: ±inf, and NaN from a channel that is exactly zero",
        apply: |m, _, wts| {
            let cm = m.shape.depthwise[2];
            let taps = m.spec.kernel[0] * m.spec.kernel[1];
            // Depthwise channel cm-1 is exactly zero (zero weights and bias), and output 1
            // reads it with weight +inf: NaN everywhere.
            for v in &mut wts.dw[(cm - 1) * taps..cm * taps] {
                *v = 0.0;
            }
            if let Some(b) = &mut wts.dw_bias {
                b[cm - 1] = 0.0;
            }
            wts.pw[cm + cm - 1] = f64::INFINITY;
            // Output 0 reads channel 0 with weight -inf: ±inf by the sign of that channel.
            wts.pw[0] = f64::NEG_INFINITY;
        },
        expect: |[f, pos, neg, nan], [yf, ypos, yneg, ynan], _| {
            f > 0 && pos + neg + nan == 0 && yf > 0 && ypos + yneg > 0 && ynan > 0
        },
    },
    Scenario {
        name: "infinite and NaN biases",
        apply: |m, _, wts| {
            let cm = m.shape.depthwise[2];
            if let Some(b) = &mut wts.dw_bias {
                b[0] = f64::INFINITY;
                b[cm - 1] = f64::NEG_INFINITY;
            }
            if let Some(b) = &mut wts.pw_bias {
                let last = b.len() - 1;
                b[last] = f64::NAN;
            }
        },
        expect: |[f, pos, neg, nan], [yf, _, _, ynan], _| {
            f > 0 && pos > 0 && neg > 0 && nan == 0 && yf == 0 && ynan > 0
        },
    },
];

/// Every scenario on layer `L`, every path, every instruction set.
fn check_ieee<L: TestLayer>(seed: u64) {
    let mut rng = Rng(seed);
    let weights = Weights::<L::Elem>::random::<L>(&mut rng);
    let x: Vec<L::Elem> = rng.values(L::SHAPE.input_len);
    let base = Model::of::<L>(&weights);
    let narrow = |v: &[f64]| -> Vec<L::Elem> { v.iter().map(|&v| L::Elem::from_f64(v)).collect() };
    let mut ran = 0;
    for scenario in SCENARIOS {
        let has_dw_bias = weights.dw_bias.is_some();
        let has_pw_bias = weights.pw_bias.is_some();
        if scenario.name.contains("biases") && !(has_dw_bias && has_pw_bias) {
            continue;
        }
        let mut x_wide = widen(&x);
        let mut w_wide = base.weights.clone();
        (scenario.apply)(&base, &mut x_wide, &mut w_wide);
        let wts = Weights {
            dw: narrow(&w_wide.dw),
            dw_bias: w_wide.dw_bias.as_deref().map(narrow),
            pw: narrow(&w_wide.pw),
            pw_bias: w_wide.pw_bias.as_deref().map(narrow),
        };
        let layer: L = wts.load();
        let model = Model::of::<L>(&wts);
        let what = format!(
            "{} ({}): {}",
            L::NAME,
            Layout::of::<L>().describe(),
            scenario.name
        );
        // A finite sentinel, so that an output the model says is NaN cannot pass unwritten.
        let [dw, y] = check_all_paths(&what, &layer, &model, &narrow(&x_wide), -7.5e30);
        let geometry = Geometry {
            padded: L::SHAPE.rows.pad_before + L::SHAPE.cols.pad_before > 0,
            small: L::SHAPE.input[0] < 8 || L::SHAPE.input[1] < 8,
        };
        assert!(
            (scenario.expect)(census(&dw), census(&y), geometry),
            "{what}: the scenario does not reach what it is about: depthwise {:?}, output {:?} \
             (finite, +inf, -inf, NaN)",
            census(&dw),
            census(&y)
        );
        ran += 1;
    }
    assert!(
        ran >= SCENARIOS.len() - 1,
        "{}: only {ran} scenarios ran",
        L::NAME
    );
}

#[test]
fn nan_and_infinities_propagate_as_ieee_says_tiny() {
    assert_eq!(Layout::of::<Tiny>(), Layout::Planar);
    assert_eq!(Layout::of::<Tiny6>(), Layout::Planar);
    assert_eq!(Layout::of::<NoBias>(), Layout::Planar);
    assert_eq!(Layout::of::<Wide>(), Layout::Unrolled);
    check_ieee::<Tiny>(1);
    check_ieee::<NoBias>(2);
    check_ieee::<Wide>(3);
}

#[test]
fn nan_and_infinities_propagate_as_ieee_says_strips() {
    assert!(matches!(Layout::of::<Strip>(), Layout::Strips { .. }));
    assert!(matches!(Layout::of::<StripF64>(), Layout::Strips { .. }));
    check_ieee::<Strip>(3);
    check_ieee::<StripF64>(4);
    let blocks = Layout::of::<Blocks>();
    assert_eq!(
        (blocks.strips(), blocks.channel_blocks()),
        (2, 2),
        "{blocks:?}"
    );
    check_ieee::<Blocks>(5);
}

/// ReLU6 turns +inf into 6 and -inf into 0 (finite), and keeps NaN.
#[test]
fn relu6_clips_infinities_and_keeps_nan() {
    fn check<L: TestLayer>(seed: u64) {
        assert_eq!(L::DEPTHWISE_ACTIVATION, Activation::Relu6);
        let mut rng = Rng(seed);
        let weights = Weights::<L::Elem>::random::<L>(&mut rng);
        let layer: L = weights.load();
        let model = Model::of::<L>(&weights);
        let mut x: Vec<L::Elem> = rng.values(L::SHAPE.input_len);
        let dims = L::SHAPE.input;
        let [h, w, c] = dims;
        x[at(dims, h / 2, w / 2, 0)] = L::Elem::from_f64(f64::INFINITY);
        x[at(dims, 0, w - 1, c - 1)] = L::Elem::from_f64(f64::NEG_INFINITY);
        x[at(dims, h - 1, 0, 1)] = L::Elem::from_f64(f64::NAN);
        let what = format!("{} ({})", L::NAME, Layout::of::<L>().describe());
        let [dw, y] = check_all_paths(&what, &layer, &model, &x, -7.5e30);
        let [finite, pos, neg, nan] = census(&dw);
        assert_eq!((pos, neg), (0, 0), "{what}: ReLU6 leaves no infinity");
        assert!(nan > 0 && finite > 0, "{what}: {:?}", census(&dw));
        assert!(dw.contains(&6.0), "{what}: no +inf clipped to 6");
        assert!(
            census(&y)[3] > 0,
            "{what}: the NaN does not reach the output"
        );
    }
    check::<Tiny6>(6);
    check::<Strip6>(7);
}

// ---------------------------------------------------------------------------------------------
// (c) Outputs pre-filled with NaN: every cell is written, on every path
// ---------------------------------------------------------------------------------------------

fn check_prefilled<L: TestLayer>(seed: u64) {
    let mut rng = Rng(seed);
    let weights = Weights::<L::Elem>::random::<L>(&mut rng);
    let layer: L = weights.load();
    let model = Model::of::<L>(&weights);
    let x: Vec<L::Elem> = rng.values(L::SHAPE.input_len);
    let what = format!(
        "{} ({}), NaN-prefilled",
        L::NAME,
        Layout::of::<L>().describe()
    );
    let [dw, y] = check_all_paths(&what, &layer, &model, &x, f64::NAN);
    assert_eq!(
        census(&dw)[0],
        dw.len(),
        "{what}: clean data gives finite values"
    );
    assert_eq!(
        census(&y)[0],
        y.len(),
        "{what}: clean data gives finite values"
    );
}

#[test]
fn outputs_prefilled_with_nan_are_overwritten_on_every_path() {
    check_prefilled::<Tiny>(11);
    check_prefilled::<Tiny6>(12);
    check_prefilled::<NoBias>(13);
    check_prefilled::<Strip>(14);
    check_prefilled::<Strip6>(15);
    check_prefilled::<StripF64>(16);
    check_prefilled::<Blocks>(17);
}

// ---------------------------------------------------------------------------------------------
// (d) Bit-identical output, run to run and with any thread count
// ---------------------------------------------------------------------------------------------

/// The bits of every value, FNV-1a hashed: equal digests mean identical outputs.
fn digest<T: Element>(values: &[T]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325, |h, v| {
        // `to_f64` is exact, so equal bits in `T` give equal bits in `f64` (NaN payloads too).
        (h ^ v.to_f64().to_bits()).wrapping_mul(0x0100_0000_01b3)
    })
}

fn bits<T: Element>(values: &[T]) -> Vec<u64> {
    values.iter().map(|v| v.to_f64().to_bits()).collect()
}

/// `Par` with its weights and input, as every determinism test builds it.
fn par_setup() -> (Par, Tensor<96, 16, 64>) {
    let mut rng = Rng(21);
    let layer: Par = Weights::random::<Par>(&mut rng).load();
    let x = Tensor::from_hwc(&rng.values::<f32>(Par::SHAPE.input_len)).expect("right length");
    (layer, x)
}

#[test]
fn output_is_bit_identical_run_to_run_and_sequential_or_parallel() {
    let layout = Layout::of::<Par>();
    assert!(layout.strips() >= 4, "{layout:?}");
    let (layer, x) = par_setup();
    let first = bits(layer.forward(&x).as_slice());
    for run in 0..3 {
        assert!(
            bits(layer.forward(&x).as_slice()) == first,
            "forward, run {run}"
        );
        let mut out = Tensor::filled(f32::NAN);
        layer.forward_into(&x, &mut out);
        assert!(bits(out.as_slice()) == first, "forward_into, run {run}");
        let mut out = Tensor::filled(f32::NAN);
        layer.forward_into_parallel(&x, &mut out);
        assert!(
            bits(out.as_slice()) == first,
            "forward_into_parallel, run {run}"
        );
    }
    // Each instruction set is deterministic too, and a second layer loaded from the same weights
    // computes the same bits.
    let mut rng = Rng(21);
    let again: Par = Weights::random::<Par>(&mut rng).load();
    for isa in isas() {
        let mut a = Tensor::filled(f32::NAN);
        let mut b = Tensor::filled(f32::NAN);
        layer.forward_into_with(isa, &x, &mut a);
        again.forward_into_with(isa, &x, &mut b);
        assert!(
            bits(a.as_slice()) == bits(b.as_slice()),
            "{isa:?}: two runs differ"
        );
    }
    // The f64 strips and the unrolled layer as well.
    let mut rng = Rng(22);
    let f64_layer: StripF64 = Weights::random::<StripF64>(&mut rng).load();
    let x64 = Tensor::from_hwc(&rng.values::<f64>(StripF64::SHAPE.input_len)).expect("length");
    let mut par = Tensor::filled(f64::NAN);
    f64_layer.forward_into_parallel(&x64, &mut par);
    assert!(
        bits(f64_layer.forward(&x64).as_slice()) == bits(par.as_slice()),
        "StripF64"
    );
    let tiny: Tiny = Weights::random::<Tiny>(&mut rng).load();
    let xt = Tensor::from_hwc(&rng.values::<f32>(Tiny::SHAPE.input_len)).expect("length");
    let mut par = Tensor::filled(f32::NAN);
    tiny.forward_into_parallel(&xt, &mut par);
    assert!(
        bits(tiny.forward(&xt).as_slice()) == bits(par.as_slice()),
        "Tiny"
    );
}

/// Prints the digest of `Par`'s parallel output (read by the test below, which runs this one in
/// child processes with different `rayon` pools) after checking it against `forward_into`.
#[test]
fn parallel_output_digest() {
    let (layer, x) = par_setup();
    let mut sequential = Tensor::filled(f32::NAN);
    layer.forward_into(&x, &mut sequential);
    let mut parallel = Tensor::filled(f32::NAN);
    layer.forward_into_parallel(&x, &mut parallel);
    let d = digest(parallel.as_slice());
    assert_eq!(
        d,
        digest(sequential.as_slice()),
        "parallel and sequential outputs differ"
    );
    println!("parallel output digest: {d:016x}");
}

/// `forward_into_parallel` in child processes whose `rayon` pool has 1, 2 and 3 threads gives
/// the bits `forward_into` gives here.
#[cfg(feature = "rayon")]
#[test]
fn parallel_output_is_bit_identical_with_any_thread_count() {
    let (layer, x) = par_setup();
    let mut sequential = Tensor::filled(f32::NAN);
    layer.forward_into(&x, &mut sequential);
    let want = format!(
        "parallel output digest: {:016x}",
        digest(sequential.as_slice())
    );
    let exe = std::env::current_exe().expect("the test binary's path");
    for threads in [1, 2, 3] {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "parallel_output_digest",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("RAYON_NUM_THREADS", threads.to_string())
            .output()
            .expect("running the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{threads} threads: the child failed\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.lines().any(|line| line.ends_with(&want)),
            "{threads} threads: expected `{want}` in\n{stdout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (e) Stack: MobileNet v1 layers in small thread stacks
// ---------------------------------------------------------------------------------------------

/// The depthwise-separable layers of MobileNet v1 (224 x 224 input, width 1.0), each shape once.
mod mobilenet {
    use separable::separable_conv;

    separable_conv! { pub(crate) struct B1 { input: 112 x 112 x 32, output: 64, padding: same, bias: both, activation: relu } }
    separable_conv! { pub(crate) struct B2 { input: 112 x 112 x 64, output: 128, stride: 2, padding: same, bias: both, activation: relu } }
    separable_conv! { pub(crate) struct B3 { input: 56 x 56 x 128, output: 128, padding: same, bias: both, activation: relu } }
    separable_conv! { pub(crate) struct B4 { input: 56 x 56 x 128, output: 256, stride: 2, padding: same, bias: both, activation: relu } }
    separable_conv! { pub(crate) struct B5 { input: 28 x 28 x 256, output: 256, padding: same, bias: both, activation: relu } }
    separable_conv! { pub(crate) struct B6 { input: 28 x 28 x 256, output: 512, stride: 2, padding: same, bias: both, activation: relu } }
    separable_conv! { pub(crate) struct B7 { input: 14 x 14 x 512, output: 512, padding: same, bias: both, activation: relu } }
    separable_conv! { pub(crate) struct B12 { input: 14 x 14 x 512, output: 1024, stride: 2, padding: same, bias: both, activation: relu } }
    separable_conv! { pub(crate) struct B13 { input: 7 x 7 x 1024, output: 1024, padding: same, bias: both, activation: relu } }
}

/// Stack size for `forward` (it allocates its output).
const FORWARD_STACK: usize = 2 << 20;
/// Stack size for `forward_into` with tensors the caller allocated.
const FORWARD_INTO_STACK: usize = 256 << 10;

/// Builds `L` (weights scaled so that activations stay near 1), runs `forward` in a thread with
/// a 2 MiB stack and `forward_into` (into a NaN-prefilled tensor allocated here) in one with a
/// 256 KiB stack, and checks that both give the same bits, all finite.
fn check_stack<L: TestLayer<Elem = f32> + Sync>(seed: u64) -> String
where
    L::Input: Sync,
    L::Output: Send,
{
    let mut rng = Rng(seed);
    let mut weights = Weights::<f32>::random::<L>(&mut rng);
    let fan_in = |v: &mut Vec<f32>, n: usize| {
        let scale = 1.0 / (n as f32).sqrt();
        for w in v {
            *w *= scale;
        }
    };
    fan_in(&mut weights.dw, L::SPEC.kernel[0] * L::SPEC.kernel[1]);
    fan_in(&mut weights.pw, L::SHAPE.depthwise[2]);
    let layer: L = weights.load();
    let input = L::Input::from_hwc_slice(&rng.values(L::SHAPE.input_len));
    let mut into = L::Output::filled_with(f32::NAN);
    let name = L::NAME;
    // Both threads at once: two layers' worth of work in the time of one.
    let output = std::thread::scope(|scope| {
        let forward = std::thread::Builder::new()
            .name(format!("{name} forward, 2 MiB stack"))
            .stack_size(FORWARD_STACK)
            .spawn_scoped(scope, || layer.forward(&input))
            .expect("spawning a thread");
        std::thread::Builder::new()
            .name(format!("{name} forward_into, 256 KiB stack"))
            .stack_size(FORWARD_INTO_STACK)
            .spawn_scoped(scope, || layer.forward_into(&input, &mut into))
            .expect("spawning a thread")
            .join()
            .expect("forward_into finished");
        forward.join().expect("forward finished")
    });
    let got = widen(output.hwc());
    assert_eq!(census(&got)[0], got.len(), "{name}: {:?}", census(&got));
    assert!(
        bits(output.hwc()) == bits(into.hwc()),
        "{name}: forward and forward_into differ"
    );
    let s = L::SHAPE;
    format!("{name}: {:?} -> {:?}", s.input, s.output)
}

#[test]
fn every_mobilenet_v1_layer_runs_in_small_stacks() {
    use mobilenet::{B1, B2, B3, B4, B5, B6, B7, B12, B13};
    let mut log = String::new();
    for line in [
        check_stack::<B1>(31),
        check_stack::<B2>(32),
        check_stack::<B3>(33),
        check_stack::<B4>(34),
        check_stack::<B5>(35),
        check_stack::<B6>(36),
        check_stack::<B7>(37),
        check_stack::<B12>(38),
        check_stack::<B13>(39),
    ] {
        writeln!(log, "{line}: forward in 2 MiB, forward_into in 256 KiB").expect("a String");
    }
    print!("{log}");
}

//! Generated layers against vectors computed by PyTorch and TensorFlow.
//!
//! `tests/data/pytorch_vectors.json` and `tests/data/tensorflow_vectors.json` hold one case per
//! layer (see `scripts/make_vectors.py`): the layer's declaration, its input and weights, and the
//! framework's depthwise and final outputs. Every case is declared below with
//! `separable_conv!`; each test checks that the declaration is the case's (so a wrong key fails
//! rather than testing another layer), loads the weights with `from_pytorch`, and compares
//! `depthwise`, `forward`, `forward_into` (into an output pre-filled with NaN, so a position the
//! kernel never writes fails) and `pointwise` on the depthwise result.
//!
//! Tolerance: `|got - want| <= 1e-5 * max(1, |want|)` for `f32`, `1e-12` for `f64`.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use separable::{Activation, Bias, Element, LayerSpec, Padding, separable_conv};
use serde::Deserialize;

use common::{Buf, Errors, Layout, TestLayer, assert_close, elems};

/// The two vector files, by short name.
const FILES: [(&str, &str); 2] = [
    ("pytorch", include_str!("data/pytorch_vectors.json")),
    ("tensorflow", include_str!("data/tensorflow_vectors.json")),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    generator: String,
    script: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonPadding {
    Word(String),
    Explicit([usize; 2]),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    dtype: String,
    input: [usize; 3],
    output: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    multiplier: usize,
    padding: JsonPadding,
    bias: String,
    depthwise_activation: String,
    pointwise_activation: String,
    x: Vec<f64>,
    dw_weight: Vec<f64>,
    dw_bias: Option<Vec<f64>>,
    pw_weight: Vec<f64>,
    pw_bias: Option<Vec<f64>>,
    y_depthwise: Vec<f64>,
    y: Vec<f64>,
}

impl Case {
    /// The case's declaration as a runtime spec.
    fn spec(&self) -> LayerSpec {
        let padding = match &self.padding {
            JsonPadding::Word(w) if w == "valid" => Padding::Valid,
            JsonPadding::Word(w) if w == "same" => Padding::Same,
            JsonPadding::Word(w) => panic!("{}: unknown padding {w:?}", self.name),
            &JsonPadding::Explicit([height, width]) => Padding::Explicit { height, width },
        };
        let bias = match self.bias.as_str() {
            "none" => Bias::None,
            "pointwise" => Bias::Pointwise,
            "both" => Bias::Both,
            other => panic!("{}: unknown bias {other:?}", self.name),
        };
        LayerSpec {
            input: self.input,
            output_channels: self.output,
            kernel: self.kernel,
            stride: self.stride,
            dilation: self.dilation,
            multiplier: self.multiplier,
            padding,
            bias,
        }
    }

    fn activation(&self, word: &str) -> Activation {
        match word {
            "none" => Activation::None,
            "relu" => Activation::Relu,
            "relu6" => Activation::Relu6,
            other => panic!("{}: unknown activation {other:?}", self.name),
        }
    }
}

/// Every case of both files, keyed by file and case name; parsed once per test binary.
fn cases() -> &'static BTreeMap<(&'static str, String), Case> {
    static CASES: OnceLock<BTreeMap<(&'static str, String), Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let mut all = BTreeMap::new();
        for (file, text) in FILES {
            let parsed: VectorFile = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("tests/data/{file}_vectors.json: {e}"));
            assert!(
                parsed.script == "scripts/make_vectors.py" && !parsed.generator.is_empty(),
                "{file}: unexpected header"
            );
            for case in parsed.cases {
                let key = (file, case.name.clone());
                assert!(
                    all.insert(key, case).is_none(),
                    "{file}: duplicate case name"
                );
            }
        }
        all
    })
}

/// Runs case `name` of `file` on layer `L`; returns the largest errors over all comparisons.
fn run<L: TestLayer>(file: &'static str, name: &str) -> Errors {
    let case = cases()
        .get(&(file, name.to_owned()))
        .unwrap_or_else(|| panic!("{file}: no case named {name} in the JSON"));

    // The declaration must be the case's, or this would test some other layer.
    assert_eq!(
        L::SPEC,
        case.spec(),
        "{name}: declared spec differs from the JSON's"
    );
    assert_eq!(
        L::DEPTHWISE_ACTIVATION,
        case.activation(&case.depthwise_activation),
        "{name}: declared depthwise activation differs from the JSON's"
    );
    assert_eq!(
        L::POINTWISE_ACTIVATION,
        case.activation(&case.pointwise_activation),
        "{name}: declared pointwise activation differs from the JSON's"
    );
    assert_eq!(
        <L::Elem as Element>::NAME,
        case.dtype,
        "{name}: declared dtype differs from the JSON's"
    );
    assert_eq!(L::SHAPE.depthwise, <L::Depthwise as Buf<L::Elem>>::DIMS);
    assert_eq!(L::SHAPE.output, <L::Output as Buf<L::Elem>>::DIMS);

    // The JSON stores values of the case's dtype, so converting loses nothing. serde_json
    // (without its `float_roundtrip` feature) may parse a decimal one f64 ulp off, which the
    // rounding to f32 removes; the check allows that much and no more.
    let exact = |what: &str, values: &[f64]| -> Vec<L::Elem> {
        let converted = elems::<L::Elem>(values);
        for (i, (c, &v)) in converted.iter().zip(values).enumerate() {
            assert!(
                (c.to_f64() - v).abs() <= v.abs() * f64::EPSILON,
                "{name}: {what}[{i}] = {v:e} is not a {}",
                case.dtype
            );
        }
        converted
    };
    let x = exact("x", &case.x);
    let dw = exact("dw_weight", &case.dw_weight);
    let dw_bias = case.dw_bias.as_deref().map(|b| exact("dw_bias", b));
    let pw = exact("pw_weight", &case.pw_weight);
    let pw_bias = case.pw_bias.as_deref().map(|b| exact("pw_bias", b));

    let layer = L::from_pytorch(&dw, dw_bias.as_deref(), &pw, pw_bias.as_deref())
        .unwrap_or_else(|e| panic!("{name}: from_pytorch: {e}"));
    let input = L::Input::from_hwc_slice(&x);
    let dw_dims = L::SHAPE.depthwise;
    let out_dims = L::SHAPE.output;

    let depthwise = layer.depthwise(&input);
    let mut errors = assert_close(
        name,
        "depthwise",
        dw_dims,
        depthwise.hwc(),
        &case.y_depthwise,
    );
    let y = layer.forward(&input);
    errors = errors.max(assert_close(name, "forward", out_dims, y.hwc(), &case.y));
    let mut into = L::Output::filled_with(L::Elem::from_f64(f64::NAN));
    layer.forward_into(&input, &mut into);
    errors = errors.max(assert_close(
        name,
        "forward_into (NaN-prefilled)",
        out_dims,
        into.hwc(),
        &case.y,
    ));
    let y2 = layer.pointwise(&depthwise);
    errors = errors.max(assert_close(
        name,
        "pointwise(depthwise)",
        out_dims,
        y2.hwc(),
        &case.y,
    ));
    eprintln!(
        "{file}/{name} [{}, {}]: max |diff| {:.2e}, max |diff| / max(1, |want|) {:.2e}",
        <L::Elem as Element>::NAME,
        Layout::of::<L>().describe(),
        errors.abs,
        errors.scaled,
    );
    errors
}

/// Declares one test per case: `name { keys }` declares `struct Case { keys }` inside the test
/// and runs the case of the same name from `$file`. Also lists the declared names in `DECLARED`.
macro_rules! cases {
    ($file:literal; $($name:ident { $($keys:tt)* })*) => {
        $(
            #[test]
            fn $name() {
                separable_conv! {
                    #[allow(dead_code)]
                    struct Case { $($keys)* }
                }
                run::<Case>($file, stringify!($name));
            }
        )*

        /// The cases declared in this module.
        pub(super) const DECLARED: &[&str] = &[$(stringify!($name)),*];
    };
}

mod pytorch {
    use super::{run, separable_conv};

    cases! { "pytorch";
        seed_5x5x3_k3_same { input: 5 x 5 x 3, output: 4, kernel: 3 x 3, padding: same }
        seed_5x5x3_k3_valid { input: 5 x 5 x 3, output: 4, padding: valid }
        k1_valid_6x6x8 { input: 6 x 6 x 8, output: 5, kernel: 1 }
        k1_same_s2_7x9x3 { input: 7 x 9 x 3, output: 4, kernel: 1, stride: 2, padding: same }
        k2_valid_6x7x3 { input: 6 x 7 x 3, output: 4, kernel: 2 }
        k2_same_6x7x3 { input: 6 x 7 x 3, output: 4, kernel: 2, padding: same }
        k5_same_7x9x3 { input: 7 x 9 x 3, output: 4, kernel: 5, padding: same }
        k5_valid_7x9x3 { input: 7 x 9 x 3, output: 2, kernel: 5 x 5 }
        k7_same_9x9x3 { input: 9 x 9 x 3, output: 4, kernel: 7, padding: same }
        k7_valid_11x9x1 { input: 11 x 9 x 1, output: 3, kernel: 7 }
        k3x5_same_7x9x3 { input: 7 x 9 x 3, output: 4, kernel: 3 x 5, padding: same }
        k3x5_valid_7x9x3 { input: 7 x 9 x 3, output: 4, kernel: 3 x 5 }
        s2_same_7x9x3 { input: 7 x 9 x 3, output: 4, stride: 2, padding: same }
        s2_same_8x8x3 { input: 8 x 8 x 3, output: 4, stride: 2 x 2, padding: same }
        s2_valid_11x6x8 { input: 11 x 6 x 8, output: 5, stride: 2 }
        s3_same_11x6x3 { input: 11 x 6 x 3, output: 4, stride: 3, padding: same }
        s3_valid_k5_11x9x1 { input: 11 x 9 x 1, output: 2, kernel: 5, stride: 3 }
        s2x1_same_7x9x3 { input: 7 x 9 x 3, output: 4, stride: 2 x 1, padding: same }
        s2x1_valid_k3x5_7x9x3 { input: 7 x 9 x 3, output: 3, kernel: 3 x 5, stride: 2 x 1 }
        d2_same_9x9x3 { input: 9 x 9 x 3, output: 4, dilation: 2, padding: same }
        d2_valid_9x9x3 { input: 9 x 9 x 3, output: 4, dilation: 2 }
        d2_s2_same_11x6x3 { input: 11 x 6 x 3, output: 4, stride: 2, dilation: 2, padding: same }
        d2x1_pad1_7x9x3 { input: 7 x 9 x 3, output: 4, dilation: 2 x 1, padding: 1 }
        pad1_k3_7x9x3 { input: 7 x 9 x 3, output: 4, padding: 1 }
        pad1_s2_k3_11x6x3 { input: 11 x 6 x 3, output: 4, stride: 2, padding: 1 x 1 }
        pad2x0_k3_7x9x3 { input: 7 x 9 x 3, output: 4, padding: 2 x 0 }
        pad0x3_k3x5_7x9x3 { input: 7 x 9 x 3, output: 4, kernel: 3 x 5, padding: 0 x 3 }
        m2_same_7x9x3 { input: 7 x 9 x 3, output: 4, padding: same, multiplier: 2 }
        m3_valid_7x9x3 { input: 7 x 9 x 3, output: 5, multiplier: 3 }
        m2_s2_same_bias_both_8x8x3 {
            input: 8 x 8 x 3, output: 4, stride: 2, padding: same, multiplier: 2, bias: both
        }
        m3_c1_same_7x9x1 {
            input: 7 x 9 x 1, output: 4, padding: same, multiplier: 3, bias: pointwise
        }
        bias_pointwise_5x5x3 { input: 5 x 5 x 3, output: 4, padding: same, bias: pointwise }
        bias_both_5x5x3 { input: 5 x 5 x 3, output: 4, padding: same, bias: both }
        relu_dw_7x9x3 {
            input: 7 x 9 x 3, output: 4, padding: same, bias: both,
            depthwise_activation: relu, pointwise_activation: none,
        }
        relu_pw_7x9x3 {
            input: 7 x 9 x 3, output: 4, padding: same, bias: pointwise,
            pointwise_activation: relu,
        }
        relu_both_7x9x3 {
            input: 7 x 9 x 3, output: 4, padding: same, bias: both, activation: relu
        }
        mobilenetv2_relu6_dw_s2_8x8x8 {
            input: 8 x 8 x 8, output: 5, stride: 2, padding: same, bias: both,
            depthwise_activation: relu6,
        }
        relu6_pw_7x9x3 {
            input: 7 x 9 x 3, output: 4, padding: same, bias: pointwise,
            pointwise_activation: relu6,
        }
        relu6_both_7x9x3 {
            input: 7 x 9 x 3, output: 4, padding: same, bias: both, activation: relu6
        }
        in1x1_k1_c8 { input: 1 x 1 x 8, output: 4, kernel: 1, bias: pointwise }
        in1x1_k3_same_c3 { input: 1 x 1 x 3, output: 2, padding: same, bias: both }
        c17_same_5x5x17 { input: 5 x 5 x 17, output: 8, padding: same, bias: pointwise }
        c1_valid_11x6x1 { input: 11 x 6 x 1, output: 3 }
        f64_same_7x9x3 {
            input: 7 x 9 x 3, output: 4, padding: same, bias: both,
            depthwise_activation: relu, dtype: f64,
        }
        f64_k5_s2_m2_same_11x6x3 {
            input: 11 x 6 x 3, output: 4, kernel: 5, stride: 2, padding: same, multiplier: 2,
            dtype: f64,
        }
        f64_pad2x0_relu6_7x9x8 {
            input: 7 x 9 x 8, output: 3, padding: 2 x 0, bias: both, activation: relu6,
            dtype: f64,
        }
        f64_seed_valid_5x5x3 { input: 5x5x3, output: 4, dtype: f64 }
    }
}

mod tensorflow {
    use super::{run, separable_conv};

    cases! { "tensorflow";
        tf_s2_same_8x8x3 { input: 8 x 8 x 3, output: 4, stride: 2, padding: same }
        tf_s2_same_7x10x3 { input: 7 x 10 x 3, output: 4, stride: 2, padding: same }
        tf_s3_same_11x6x3 { input: 11 x 6 x 3, output: 4, stride: 3, padding: same }
        tf_s3_same_k5_10x8x3 { input: 10 x 8 x 3, output: 4, kernel: 5, stride: 3, padding: same }
        tf_s2x1_same_8x9x3 { input: 8 x 9 x 3, output: 4, stride: 2 x 1, padding: same }
        tf_k2_same_6x7x3 { input: 6 x 7 x 3, output: 4, kernel: 2, padding: same }
        tf_k4_same_7x8x3 { input: 7 x 8 x 3, output: 4, kernel: 4, padding: same }
        tf_k2_s2_same_7x8x3 { input: 7 x 8 x 3, output: 4, kernel: 2, stride: 2, padding: same }
        tf_k4_s2_same_9x8x3 { input: 9 x 8 x 3, output: 4, kernel: 4, stride: 2, padding: same }
        tf_k3x5_s2_same_8x9x3 {
            input: 8 x 9 x 3, output: 4, kernel: 3 x 5, stride: 2, padding: same
        }
        tf_d2_same_9x9x3 { input: 9 x 9 x 3, output: 4, dilation: 2, padding: same }
        tf_d2_k4_same_9x8x3 {
            input: 9 x 8 x 3, output: 4, kernel: 4, dilation: 2 x 2, padding: same
        }
        tf_m2_s2_same_8x8x3 {
            input: 8 x 8 x 3, output: 5, stride: 2, padding: same, multiplier: 2, bias: both
        }
        tf_m2_k4_same_6x7x3 {
            input: 6 x 7 x 3, output: 4, kernel: 4, padding: same, multiplier: 2, bias: pointwise
        }
        tf_mobilenetv2_relu6_dw_s2_8x8x8 {
            input: 8 x 8 x 8, output: 5, stride: 2, padding: same, bias: both,
            depthwise_activation: relu6,
        }
        tf_s2_valid_8x9x3 {
            input: 8 x 9 x 3, output: 4, stride: 2, bias: pointwise, pointwise_activation: relu
        }
    }
}

/// Every case in the JSON files has a declaration above, and every declaration a case: a case
/// added to the vectors without a test fails here.
#[test]
fn every_json_case_is_declared() {
    for (file, declared) in [
        ("pytorch", pytorch::DECLARED),
        ("tensorflow", tensorflow::DECLARED),
    ] {
        let in_json: Vec<&str> = cases()
            .keys()
            .filter(|(f, _)| *f == file)
            .map(|(_, name)| name.as_str())
            .collect();
        assert!(!in_json.is_empty(), "{file}: no cases in the JSON");
        let missing: Vec<&&str> = in_json.iter().filter(|n| !declared.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "{file}: JSON cases without a declaration: {missing:?}"
        );
        let extra: Vec<&&str> = declared.iter().filter(|n| !in_json.contains(n)).collect();
        assert!(
            extra.is_empty(),
            "{file}: declarations without a JSON case: {extra:?}"
        );
        let mut unique = declared.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            declared.len(),
            "{file}: a case is declared twice"
        );
    }
}

/// The runner rejects a declaration that differs from its case, so the per-case spec check is
/// live: the seed declared with `valid` instead of `same` padding must fail.
#[test]
#[should_panic(expected = "seed_5x5x3_k3_same: declared spec differs from the JSON's")]
fn a_wrong_declaration_fails() {
    separable_conv! {
        #[allow(dead_code)]
        struct Wrong { input: 5 x 5 x 3, output: 4, padding: valid }
    }
    run::<Wrong>("pytorch", "seed_5x5x3_k3_same");
}

/// A wrong activation or dtype is caught too.
#[test]
#[should_panic(expected = "relu_dw_7x9x3: declared depthwise activation differs")]
fn a_wrong_activation_fails() {
    separable_conv! {
        #[allow(dead_code)]
        struct Wrong {
            input: 7 x 9 x 3, output: 4, padding: same, bias: both, depthwise_activation: relu6
        }
    }
    run::<Wrong>("pytorch", "relu_dw_7x9x3");
}

#[test]
#[should_panic(expected = "f64_seed_valid_5x5x3: declared dtype differs")]
fn a_wrong_dtype_fails() {
    separable_conv! {
        #[allow(dead_code)]
        struct Wrong { input: 5 x 5 x 3, output: 4 }
    }
    run::<Wrong>("pytorch", "f64_seed_valid_5x5x3");
}

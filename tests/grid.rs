//! Generated layers against the plain reference kernels (`separable::reference`) over a grid of
//! declarations, with random weights and inputs.
//!
//! Each grid entry declares a layer with `separable_conv!` in its own module and runs
//! [`check`] on it through the `Layer` trait: random PyTorch-layout weights go through
//! `from_pytorch` (and must come back unchanged from `to_pytorch`), and `depthwise`, `forward`,
//! `forward_into` (into an output pre-filled with NaN), `forward_slices` (into a NaN-prefilled
//! slice followed by a sentinel that must survive) and `pointwise` (on the layer's own and on
//! the reference's depthwise output), and `forward_into_with`, `depthwise_into_with` and
//! `pointwise_into_with` with every instruction set the CPU supports, are compared with the
//! reference kernels run on the same buffers. `grid_covers_every_parameter` checks that the grid still exercises every kernel,
//! stride, dilation, padding form, multiplier, bias, activation, size, channel count and dtype.
//! Further tests: ReLU6 that clips at both ends, NaN propagation, `from_pytorch` errors, the
//! weight accessors, and a MobileNet-size layer in a 2 MiB stack.
//!
//! Code layouts (see `separable-macros/src/plan.rs`; `common::Layout` recomputes the rule): a
//! layer with at most 64 output positions and at most 256 in-bounds taps is tiny; a tiny layer
//! with at most 8 depthwise channels and channel planes of at most 256 positions is computed in
//! planes (vectorised across positions), any other tiny layer is unrolled position by position;
//! any other layer runs in strips of output rows and blocks of depthwise channels
//! (channel blocks of at most 256 `d·M` for a divisor `d` of `C`, unless no such block reaches 64;
//! rows per strip so that a strip of one block fits 64 KiB), each row an interior run (columns
//! whose whole window is inside the input, through the depthwise row microkernel) and a border
//! loop. Each grid entry is tagged with the layout it gets, and `grid_covers_both_layouts` asserts
//! every tag against the rule and that the grid has several strips, several channel blocks and
//! both at once:
//!
//! | tag           | layout                                                             |
//! |---------------|--------------------------------------------------------------------|
//! | `planar`      | channel planes, whole-plane multiply-adds per tap                  |
//! | `unrolled`    | every position its own block                                       |
//! | `strips`      | strips with interior runs and border loops                         |
//! | `strips_all`  | strips whose interior covers every position, no border             |
//! | `strips_none` | no interior (no window fits inside the input): border loops only   |

mod common;

use std::collections::BTreeSet;

use separable::{
    Activation, Bias, Element, Error, Isa, Layer, LayerSpec, Padding, PytorchWeights, reference,
    separable_conv,
};

use common::{Buf, Errors, Layout, TestLayer, assert_close, elems, position, widen};

// ---------------------------------------------------------------------------------------------
// Random data
// ---------------------------------------------------------------------------------------------

/// `SplitMix64`: a tiny deterministic generator, enough for test data.
struct Rng(u64);

impl Rng {
    /// A generator seeded from a name (FNV-1a), so each layer gets its own stream.
    fn from_name(name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`.
    fn uniform(&mut self, scale: f64) -> f64 {
        // The top 53 bits as a fraction in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (2.0 * unit - 1.0) * scale
    }

    fn values<T: Element>(&mut self, len: usize, scale: f64) -> Vec<T> {
        let raw: Vec<f64> = (0..len).map(|_| self.uniform(scale)).collect();
        elems(&raw)
    }
}

/// Random weights for `L` in PyTorch's layouts, with exactly the biases `L` declares.
fn random_weights<L: Layer>(rng: &mut Rng, scale: f64) -> PytorchWeights<L::Elem> {
    let spec = L::SPEC;
    let cm = spec.input[2] * spec.multiplier;
    let n = spec.output_channels;
    let taps = spec.kernel[0] * spec.kernel[1];
    PytorchWeights {
        depthwise_weight: rng.values(cm * taps, scale),
        depthwise_bias: spec.bias.depthwise().then(|| rng.values(cm, scale)),
        pointwise_weight: rng.values(n * cm, scale),
        pointwise_bias: spec.bias.pointwise().then(|| rng.values(n, scale)),
    }
}

// ---------------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------------

/// What one run of [`run`] produced, for further assertions.
struct Run<L: TestLayer> {
    depthwise: L::Depthwise,
    output: L::Output,
    errors: Errors,
}

/// `forward_into_with`, `depthwise_into_with` and `pointwise_into_with` (on the reference's
/// depthwise output `ref_dw`) with every instruction set this CPU has, forced, into
/// NaN-prefilled outputs, against the reference results.
fn check_isas<L: TestLayer>(
    name: &str,
    layer: &L,
    input: &L::Input,
    ref_dw: &[L::Elem],
    ref_dw_wide: &[f64],
    ref_y_wide: &[f64],
) -> Errors {
    let (dw_dims, out_dims) = (L::SHAPE.depthwise, L::SHAPE.output);
    let mut errors = Errors::default();
    for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
        if !isa.is_supported() {
            continue;
        }
        let nan = L::Elem::from_f64(f64::NAN);
        let mut into = L::Output::filled_with(nan);
        layer.forward_into_with(isa, input, &mut into);
        let stage = format!("forward_into_with({isa:?})");
        errors = errors.max(assert_close(name, &stage, out_dims, into.hwc(), ref_y_wide));
        let mut dw_into = L::Depthwise::filled_with(nan);
        layer.depthwise_into_with(isa, input, &mut dw_into);
        let stage = format!("depthwise_into_with({isa:?})");
        errors = errors.max(assert_close(
            name,
            &stage,
            dw_dims,
            dw_into.hwc(),
            ref_dw_wide,
        ));
        let mut pw_into = L::Output::filled_with(nan);
        layer.pointwise_into_with(isa, &L::Depthwise::from_hwc_slice(ref_dw), &mut pw_into);
        let stage = format!("pointwise_into_with({isa:?})");
        errors = errors.max(assert_close(
            name,
            &stage,
            out_dims,
            pw_into.hwc(),
            ref_y_wide,
        ));
    }
    errors
}

/// Compares `L` with the reference kernels on random data: inputs uniform in
/// `[-x_scale, x_scale)`, weights and biases in `[-w_scale, w_scale)`.
fn run<L: TestLayer>(name: &str, x_scale: f64, w_scale: f64) -> Run<L> {
    assert_eq!(L::SHAPE.input, <L::Input as Buf<L::Elem>>::DIMS, "{name}");
    assert_eq!(
        L::SHAPE.depthwise,
        <L::Depthwise as Buf<L::Elem>>::DIMS,
        "{name}"
    );
    assert_eq!(L::SHAPE.output, <L::Output as Buf<L::Elem>>::DIMS, "{name}");
    let spec = L::SPEC;
    let acts = [L::DEPTHWISE_ACTIVATION, L::POINTWISE_ACTIVATION];
    let mut rng = Rng::from_name(name);
    let weights = random_weights::<L>(&mut rng, w_scale);
    let x: Vec<L::Elem> = rng.values(L::SHAPE.input_len, x_scale);
    let (dw, dw_bias, pw, pw_bias) = weights.as_slices();

    let layer = L::from_pytorch(dw, dw_bias, pw, pw_bias)
        .unwrap_or_else(|e| panic!("{name}: from_pytorch: {e}"));
    assert!(
        layer.to_pytorch() == weights,
        "{name}: to_pytorch does not return what from_pytorch loaded"
    );

    let ref_dw = reference::depthwise(&spec, &x, dw, dw_bias, acts[0])
        .unwrap_or_else(|e| panic!("{name}: reference::depthwise: {e}"));
    let ref_y = reference::forward(&spec, &x, dw, dw_bias, pw, pw_bias, acts)
        .unwrap_or_else(|e| panic!("{name}: reference::forward: {e}"));
    let (ref_dw_wide, ref_y_wide) = (widen(&ref_dw), widen(&ref_y));
    let (dw_dims, out_dims) = (L::SHAPE.depthwise, L::SHAPE.output);

    let input = L::Input::from_hwc_slice(&x);
    let depthwise = layer.depthwise(&input);
    let mut errors = assert_close(name, "depthwise", dw_dims, depthwise.hwc(), &ref_dw_wide);
    let output = layer.forward(&input);
    errors = errors.max(assert_close(
        name,
        "forward",
        out_dims,
        output.hwc(),
        &ref_y_wide,
    ));
    let mut into = L::Output::filled_with(L::Elem::from_f64(f64::NAN));
    layer.forward_into(&input, &mut into);
    errors = errors.max(assert_close(
        name,
        "forward_into (NaN-prefilled)",
        out_dims,
        into.hwc(),
        &ref_y_wide,
    ));
    // The caller's slices: an output one element longer, its tail left alone.
    let nan = L::Elem::from_f64(f64::NAN);
    let sentinel = L::Elem::from_f64(-7.25);
    let mut slice_out = vec![nan; L::SHAPE.output_len + 1];
    *slice_out.last_mut().unwrap() = sentinel;
    let (body, tail) = slice_out.split_at_mut(L::SHAPE.output_len);
    layer
        .forward_slices(&x, body)
        .unwrap_or_else(|e| panic!("{name}: forward_slices: {e}"));
    assert!(
        tail[0] == sentinel,
        "{name}: forward_slices wrote past the output"
    );
    errors = errors.max(assert_close(
        name,
        "forward_slices (NaN-prefilled)",
        out_dims,
        body,
        &ref_y_wide,
    ));
    errors = errors.max(check_isas(
        name,
        &layer,
        &input,
        &ref_dw,
        &ref_dw_wide,
        &ref_y_wide,
    ));
    let pointwise = layer.pointwise(&depthwise);
    errors = errors.max(assert_close(
        name,
        "pointwise(depthwise)",
        out_dims,
        pointwise.hwc(),
        &ref_y_wide,
    ));
    // The pointwise stage alone, on the reference's depthwise output.
    let pointwise = layer.pointwise(&L::Depthwise::from_hwc_slice(&ref_dw));
    errors = errors.max(assert_close(
        name,
        "pointwise(reference depthwise)",
        out_dims,
        pointwise.hwc(),
        &ref_y_wide,
    ));
    Run {
        depthwise,
        output,
        errors,
    }
}

/// The grid's check: [`run`] with data uniform in `[-1, 1)`.
fn check<L: TestLayer>(name: &str) {
    let errors = run::<L>(name, 1.0, 1.0).errors;
    eprintln!(
        "{name} [{}, {}]: max |diff| {:.2e}, max |diff| / max(1, |want|) {:.2e}",
        <L::Elem as Element>::NAME,
        Layout::of::<L>().describe(),
        errors.abs,
        errors.scaled,
    );
}

// ---------------------------------------------------------------------------------------------
// The grid
// ---------------------------------------------------------------------------------------------

/// One grid entry, as the coverage tests see it.
struct Entry {
    name: &'static str,
    spec: LayerSpec,
    activations: [Activation; 2],
    dtype: &'static str,
    layout: fn() -> Layout,
    /// The layout tag written in the grid (see the module docs).
    tag: &'static str,
}

/// The tag of a layout, as written in the grid.
fn tag(layout: Layout) -> &'static str {
    match layout {
        Layout::Planar => "planar",
        Layout::Unrolled => "unrolled",
        Layout::Strips { .. } if layout.interior_covers_all() => "strips_all",
        Layout::Strips { .. } if layout.no_interior() => "strips_none",
        Layout::Strips { .. } => "strips",
    }
}

/// `name [tag] { keys }` declares `struct L { keys }` in module `name` with a test
/// `name::matches_reference` running [`check`], and lists every entry in `GRID`.
macro_rules! grid {
    ($($name:ident [$tag:ident] { $($keys:tt)* })*) => {
        $(
            mod $name {
                super::separable_conv! {
                    #[allow(dead_code)]
                    pub(crate) struct L { $($keys)* }
                }

                #[test]
                fn matches_reference() {
                    super::check::<L>(stringify!($name));
                }
            }
        )*

        const GRID: &[Entry] = &[$(
            Entry {
                name: stringify!($name),
                spec: <$name::L as Layer>::SPEC,
                activations: [
                    <$name::L as Layer>::DEPTHWISE_ACTIVATION,
                    <$name::L as Layer>::POINTWISE_ACTIVATION,
                ],
                dtype: <<$name::L as Layer>::Elem as Element>::NAME,
                layout: Layout::of::<$name::L>,
                tag: stringify!($tag),
            }
        ),*];
    };
}

grid! {
    // --- Kernel sizes.
    k1_valid_7x9x3 [planar] { input: 7 x 9 x 3, output: 4, kernel: 1 }
    k1_same_s2_11x6x8 [planar] {
        input: 11 x 6 x 8, output: 5, kernel: 1, stride: 2, padding: same
    }
    // Kernel 1 with padding 1: the outer ring of positions sees only padding (the bias).
    k1_pad1_5x5x3 [planar] { input: 5 x 5 x 3, output: 2, kernel: 1, padding: 1, bias: both }
    k2_valid_7x9x3 [planar] { input: 7 x 9 x 3, output: 4, kernel: 2 }
    // Even kernel with SAME: nothing padded before, one after.
    k2_same_11x6x3 [strips] { input: 11 x 6 x 3, output: 4, kernel: 2, padding: same }
    k2_same_s2_7x9x3 [planar] {
        input: 7 x 9 x 3, output: 3, kernel: 2, stride: 2, padding: same
    }
    // 35 positions but 15 x 21 taps: strips.
    k3_valid_7x9x3 [strips_all] { input: 7 x 9 x 3, output: 4 }
    k3_same_7x9x3 [strips] { input: 7 x 9 x 3, output: 4, kernel: 3 x 3, padding: same }
    k5_same_11x6x3 [strips] { input: 11 x 6 x 3, output: 4, kernel: 5, padding: same }
    k5_valid_11x9x1 [strips_all] { input: 11 x 9 x 1, output: 3, kernel: 5 }
    k5_pad2_7x9x3 [strips] { input: 7 x 9 x 3, output: 2, kernel: 5, padding: 2 }
    k7_same_9x9x3 [strips] { input: 9 x 9 x 3, output: 4, kernel: 7, padding: same }
    k7_valid_13x13x1 [strips_all] { input: 13 x 13 x 1, output: 3, kernel: 7 }
    k3x5_same_7x9x3 [strips] { input: 7 x 9 x 3, output: 4, kernel: 3 x 5, padding: same }
    k3x5_valid_11x6x3 [strips_all] { input: 11 x 6 x 3, output: 4, kernel: 3 x 5 }
    k5x3_pad2x1_11x6x3 [strips] {
        input: 11 x 6 x 3, output: 4, kernel: 5 x 3, padding: 2 x 1
    }
    k4_same_9x8x3 [strips] { input: 9 x 8 x 3, output: 4, kernel: 4, padding: same }

    // --- Strides.
    s2_same_7x9x3 [planar] { input: 7 x 9 x 3, output: 4, stride: 2, padding: same }
    s2_valid_11x6x8 [planar] { input: 11 x 6 x 8, output: 5, stride: 2 }
    s3_same_11x6x3 [planar] { input: 11 x 6 x 3, output: 4, stride: 3, padding: same }
    s3_valid_k5_13x13x1 [planar] { input: 13 x 13 x 1, output: 2, kernel: 5, stride: 3 }
    s3_pad1_7x9x3 [planar] { input: 7 x 9 x 3, output: 4, stride: 3, padding: 1 }
    s2x1_same_7x9x3 [planar] { input: 7 x 9 x 3, output: 4, stride: 2 x 1, padding: same }
    s2x1_valid_k3x5_11x9x3 [strips_all] {
        input: 11 x 9 x 3, output: 3, kernel: 3 x 5, stride: 2 x 1
    }
    s1x2_pad1x0_7x9x3 [planar] {
        input: 7 x 9 x 3, output: 4, stride: 1 x 2, padding: 1 x 0
    }

    // --- Dilation.
    d2_same_9x9x3 [strips] { input: 9 x 9 x 3, output: 4, dilation: 2, padding: same }
    d2_valid_9x9x3 [planar] { input: 9 x 9 x 3, output: 4, dilation: 2 }
    d2_s2_same_11x6x3 [planar] {
        input: 11 x 6 x 3, output: 4, stride: 2, dilation: 2, padding: same
    }
    d2x1_pad1_7x9x3 [strips] { input: 7 x 9 x 3, output: 4, dilation: 2 x 1, padding: 1 }
    d1x2_k3x5_same_7x13x3 [strips] {
        input: 7 x 13 x 3, output: 4, kernel: 3 x 5, dilation: 1 x 2, padding: same
    }
    d2_s3_pad2_13x13x1 [unrolled] {
        input: 13 x 13 x 1, output: 2, stride: 3, dilation: 2, padding: 2
    }
    d2_k2_same_9x8x3 [strips] {
        input: 9 x 8 x 3, output: 4, kernel: 2, dilation: 2, padding: same
    }

    // --- Explicit padding, including padding at least as large as the kernel: positions
    // that see only padding output the bias alone.
    pad1_7x9x3 [strips] { input: 7 x 9 x 3, output: 4, padding: 1 }
    pad2x0_7x9x3 [strips] { input: 7 x 9 x 3, output: 4, padding: 2 x 0 }
    pad0x3_k3x5_7x9x3 [strips] {
        input: 7 x 9 x 3, output: 4, kernel: 3 x 5, padding: 0 x 3
    }
    // 7 x 8 positions, most of them only padding.
    pad4_k3_1x2x3 [planar] { input: 1 x 2 x 3, output: 2, padding: 4, bias: both }
    // Exactly 64 positions, the outer rings only padding.
    pad3_k3_2x2x3 [planar] {
        input: 2 x 2 x 3, output: 3, padding: 3, bias: both, activation: relu
    }
    // 81 positions; only the centre one has its whole window inside the input.
    pad4_k3_3x3x3 [strips] { input: 3 x 3 x 3, output: 2, padding: 4, bias: pointwise }
    pad3x1_s2_11x6x3 [planar] { input: 11 x 6 x 3, output: 4, stride: 2, padding: 3 x 1 }
    pad2_d2_7x9x3 [strips] { input: 7 x 9 x 3, output: 4, dilation: 2, padding: 2 }

    // --- Depth multiplier.
    m2_same_7x9x3 [strips] { input: 7 x 9 x 3, output: 4, padding: same, multiplier: 2 }
    m3_valid_7x9x3 [strips_all] { input: 7 x 9 x 3, output: 5, multiplier: 3 }
    m2_s2_same_both_8x8x3 [planar] {
        input: 8 x 8 x 3, output: 4, stride: 2, padding: same, multiplier: 2, bias: both
    }
    m3_c1_same_7x9x1 [strips] {
        input: 7 x 9 x 1, output: 4, padding: same, multiplier: 3, bias: pointwise
    }
    m2_k1_valid_5x5x8 [unrolled] { input: 5 x 5 x 8, output: 3, kernel: 1, multiplier: 2 }
    m3_k3x5_pad1_3x5x17 [unrolled] {
        input: 3 x 5 x 17, output: 6, kernel: 3 x 5, padding: 1, multiplier: 3, bias: both
    }

    // --- Bias and activations, per stage and on both.
    bias_pointwise_5x5x3 [planar] {
        input: 5 x 5 x 3, output: 4, padding: same, bias: pointwise
    }
    bias_both_5x5x3 [planar] { input: 5 x 5 x 3, output: 4, padding: same, bias: both }
    act_none_5x5x3 [planar] { input: 5 x 5 x 3, output: 4, padding: same, activation: none }
    relu_both_5x5x3 [planar] {
        input: 5 x 5 x 3, output: 4, padding: same, bias: both, activation: relu
    }
    relu6_both_5x5x3 [planar] {
        input: 5 x 5 x 3, output: 4, padding: same, bias: both, activation: relu6
    }
    relu_dw_5x5x3 [planar] {
        input: 5 x 5 x 3, output: 4, padding: same, depthwise_activation: relu
    }
    relu_pw_5x5x3 [planar] {
        input: 5 x 5 x 3, output: 4, padding: same, bias: pointwise, pointwise_activation: relu
    }
    relu6_dw_5x5x3 [planar] {
        input: 5 x 5 x 3, output: 4, padding: same, bias: both, depthwise_activation: relu6
    }
    relu6_pw_5x5x3 [planar] {
        input: 5 x 5 x 3, output: 4, padding: same, pointwise_activation: relu6
    }
    relu6_dw_relu_pw_7x9x3 [strips] {
        input: 7 x 9 x 3, output: 4, padding: same, bias: both,
        depthwise_activation: relu6, pointwise_activation: relu,
    }
    relu_dw_relu6_pw_7x9x3 [strips] {
        input: 7 x 9 x 3, output: 4, padding: same, bias: pointwise,
        depthwise_activation: relu, pointwise_activation: relu6,
    }
    relu_both_7x9x3 [strips] { input: 7 x 9 x 3, output: 4, padding: same, activation: relu }

    // --- Degenerate sizes and channel counts.
    in1x1_k1_valid_c8 [planar] { input: 1 x 1 x 8, output: 3, kernel: 1 }
    in1x1_k3_same_c3 [planar] { input: 1 x 1 x 3, output: 2, padding: same, bias: both }
    in1x1_k3_same_c17_f64 [unrolled] {
        input: 1 x 1 x 17, output: 5, padding: same, dtype: f64
    }
    in1x13_k3_same_c3 [planar] { input: 1 x 13 x 3, output: 4, padding: same }
    in13x1_k3_same_c8 [planar] {
        input: 13 x 1 x 8, output: 4, padding: same, bias: pointwise
    }
    in1x13_k1x3_valid_c1 [planar] { input: 1 x 13 x 1, output: 2, kernel: 1 x 3 }
    in13x1_k3x1_s2_valid_c17 [unrolled] {
        input: 13 x 1 x 17, output: 3, kernel: 3 x 1, stride: 2
    }
    c1_valid_11x6x1 [strips_all] { input: 11 x 6 x 1, output: 3 }
    c8_same_7x9x8 [strips] { input: 7 x 9 x 8, output: 8, padding: same }
    c17_same_5x5x17 [unrolled] {
        input: 5 x 5 x 17, output: 8, padding: same, bias: pointwise
    }
    c17_s2_same_11x6x17 [unrolled] { input: 11 x 6 x 17, output: 1, stride: 2, padding: same }

    // --- Both sides of the unroll policy's limits.
    // Exactly 64 positions and exactly 16 x 16 = 256 taps.
    edge_64_positions_256_taps [planar] { input: 9 x 9 x 3, output: 4, kernel: 2 }
    // 65 positions.
    edge_65_positions [strips_all] { input: 5 x 13 x 3, output: 4, kernel: 1 }
    // 64 positions but 22 x 22 taps.
    edge_64_positions_484_taps [strips] { input: 8 x 8 x 3, output: 4, padding: same }
    // 36 positions and exactly 16 x 16 = 256 taps.
    edge_36_positions_256_taps [planar] { input: 6 x 6 x 3, output: 4, padding: same }
    // 30 positions but 15 x 18 = 270 taps.
    edge_30_positions_270_taps [strips_all] { input: 7 x 8 x 3, output: 4 }
    // Tiny layers in planes: at most 8 depthwise channels and planes of at most 256 positions.
    // 8 channels and a plane of exactly 16 x 16 positions (run 240, rounded from 239).
    edge_planar_8_channels_256_plane [planar] {
        input: 16 x 16 x 8, output: 3, kernel: 1, stride: 2
    }
    // 9 channels.
    edge_unrolled_9_channels [unrolled] { input: 5 x 5 x 9, output: 4, padding: same }
    // A plane of 488 positions: a run of 7 * 3 * 22 + 7 * 3 + 1 = 484, rounded up.
    edge_unrolled_488_plane [unrolled] { input: 22 x 22 x 1, output: 2, kernel: 1, stride: 3 }
    // The unrolled layout with stride, dilation, padding, multiplier, biases, activations, f64.
    unrolled_d2_s2_same_11x6x9 [unrolled] {
        input: 11 x 6 x 9, output: 4, stride: 2, dilation: 2, padding: same
    }
    unrolled_pad3_m3_2x2x3 [unrolled] {
        input: 2 x 2 x 3, output: 2, padding: 3, multiplier: 3, bias: both,
        depthwise_activation: relu
    }
    unrolled_relu6_f64_5x5x9 [unrolled] {
        input: 5 x 5 x 9, output: 4, padding: same, bias: both, activation: relu6, dtype: f64
    }

    // --- Large windows: 64 and 72 taps.
    k8_same_20x20x3 [strips] { input: 20 x 20 x 3, output: 4, kernel: 8, padding: same }
    k9x8_same_20x20x3 [strips] { input: 20 x 20 x 3, output: 4, kernel: 9 x 8, padding: same }

    // --- f64.
    f64_seed_same_5x5x3 [planar] { input: 5 x 5 x 3, output: 4, padding: same, dtype: f64 }
    f64_k5_s2_m2_same_11x6x3 [strips] {
        input: 11 x 6 x 3, output: 4, kernel: 5, stride: 2, padding: same, multiplier: 2,
        dtype: f64,
    }
    f64_pad2x0_relu6_7x9x8 [strips] {
        input: 7 x 9 x 8, output: 3, padding: 2 x 0, bias: both, activation: relu6, dtype: f64
    }
    f64_d2x1_s2x1_9x9x3 [strips] {
        input: 9 x 9 x 3, output: 4, stride: 2 x 1, dilation: 2 x 1, padding: same, dtype: f64
    }

    // --- Larger layers.
    big_k3_same_16x16x8 [strips] { input: 16 x 16 x 8, output: 8, padding: same, bias: both }
    // Stride 2 SAME on an even and an odd size (pads 0/1 rows, 1/1 columns).
    big_k3_s2_same_20x13x3 [strips] {
        input: 20 x 13 x 3, output: 5, stride: 2, padding: same
    }
    big_s2_same_relu6_32x32x3 [strips] {
        input: 32 x 32 x 3, output: 8, stride: 2, padding: same, bias: both, activation: relu6
    }
    // 81 taps.
    big_k9_same_24x24x3 [strips] { input: 24 x 24 x 3, output: 4, kernel: 9, padding: same }
    big_k9_valid_24x24x1 [strips_all] {
        input: 24 x 24 x 1, output: 2, kernel: 9, bias: pointwise
    }
    big_k3_valid_20x20x8 [strips_all] { input: 20 x 20 x 8, output: 6 }
    big_k1_valid_16x16x8 [strips_all] {
        input: 16 x 16 x 8, output: 8, kernel: 1, bias: pointwise
    }
    big_d2_same_20x20x3 [strips] { input: 20 x 20 x 3, output: 4, dilation: 2, padding: same }
    // The input is shorter than the kernel: 100 positions, none with its whole window inside.
    big_k7_same_5x20x3 [strips_none] {
        input: 5 x 20 x 3, output: 4, kernel: 7, padding: same, bias: both
    }
    // Padding 5 around 2 rows: 280 positions, rows 0..=2 and 7..=9 only padding.
    big_pad5_k3_2x20x3 [strips_none] { input: 2 x 20 x 3, output: 3, padding: 5, bias: both }
    // As above with a 9 x 9 window: 5 rows under a 9-row kernel.
    big_k9_same_5x30x1 [strips_none] { input: 5 x 30 x 1, output: 2, kernel: 9, padding: same }
    // Padding 4 > kernel 3: the outer two rings see only padding.
    big_pad4_k3_12x12x3 [strips] { input: 12 x 12 x 3, output: 4, padding: 4, bias: both }
    // One row.
    big_in1x100_k3_same_c3 [strips_none] { input: 1 x 100 x 3, output: 2, padding: same }
    // One column.
    big_in100x1_k3x1_valid_c8 [strips_all] { input: 100 x 1 x 8, output: 3, kernel: 3 x 1 }
    big_m3_same_16x16x3 [strips] { input: 16 x 16 x 3, output: 5, padding: same, multiplier: 3 }
    big_m2_k5_s2_same_20x13x8 [strips] {
        input: 20 x 13 x 8, output: 6, kernel: 5, stride: 2, padding: same, multiplier: 2,
        bias: both,
    }
    big_k3x5_s3_pad1x2_28x28x3 [strips] {
        input: 28 x 28 x 3, output: 4, kernel: 3 x 5, stride: 3, padding: 1 x 2
    }
    big_s2x1_d2x1_same_16x12x3 [strips] {
        input: 16 x 12 x 3, output: 4, stride: 2 x 1, dilation: 2 x 1, padding: same
    }
    big_k2_same_16x16x3 [strips] { input: 16 x 16 x 3, output: 4, kernel: 2, padding: same }
    big_k4_s2_same_17x17x3 [strips] {
        input: 17 x 17 x 3, output: 4, kernel: 4, stride: 2, padding: same
    }
    big_k5_s3_valid_28x28x3 [strips_all] { input: 28 x 28 x 3, output: 4, kernel: 5, stride: 3 }
    big_pad2x0_d2_20x13x3 [strips] {
        input: 20 x 13 x 3, output: 4, dilation: 2, padding: 2 x 0
    }
    big_c17_same_9x9x17 [strips] { input: 9 x 9 x 17, output: 8, padding: same, bias: pointwise }
    big_relu_dw_relu6_pw_16x16x3 [strips] {
        input: 16 x 16 x 3, output: 4, padding: same, bias: pointwise,
        depthwise_activation: relu, pointwise_activation: relu6,
    }
    big_f64_k3_same_relu_16x16x8 [strips] {
        input: 16 x 16 x 8, output: 8, padding: same, bias: both, activation: relu, dtype: f64
    }
    big_f64_k9_s2_same_30x30x3 [strips] {
        input: 30 x 30 x 3, output: 3, kernel: 9, stride: 2, padding: same, dtype: f64
    }
    // 72 taps, with stride, dilation and multiplier.
    big_k9x8_s2_d2_m2_same_30x30x2 [strips] {
        input: 30 x 30 x 2, output: 3, kernel: 9 x 8, stride: 2, dilation: 2, padding: same,
        multiplier: 2, bias: both, depthwise_activation: relu,
    }
    big_k9_pad2x5_24x24x1 [strips] { input: 24 x 24 x 1, output: 2, kernel: 9, padding: 2 x 5 }

    // --- Several channel blocks and several strips. (channel blocks, strips) in the names'
    // comments; few output channels keep these fast.
    // (2, 2): C·M = 320 > 256 in blocks of 160 (two rows of all 320 would be 75 KiB).
    blocks_same_6x30x320 [strips] { input: 6 x 30 x 320, output: 3, padding: same }
    // (2, 2): C·M = 96 · 3 = 288 in blocks of 48 · 3 = 144.
    blocks_m3_same_5x30x96 [strips] {
        input: 5 x 30 x 96, output: 3, padding: same, multiplier: 3
    }
    // (1, 2): a prime channel count has no block between 64 and 256; 7 rows per strip.
    blocks_prime_same_8x8x257 [strips] { input: 8 x 8 x 257, output: 2, padding: same }
    // (1, 2): C·M = 256 exactly is one block; 8 rows of 8 x 256 f32 fill 64 KiB exactly.
    blocks_256_same_9x8x256 [strips] { input: 9 x 8 x 256, output: 2, padding: same }
    // (2, 1): no interior row, border loops in both blocks.
    blocks_in1x80_same_c320 [strips_none] { input: 1 x 80 x 320, output: 2, padding: same }
    // (1, 4): 12 rows per strip, the last one 4 rows.
    strips_same_40x40x32 [strips] { input: 40 x 40 x 32, output: 3, padding: same }
    // (1, 3): stride 2 with SAME padding 1 before and after; 10 rows per strip of 24.
    strips_s2_same_47x47x64 [strips] { input: 47 x 47 x 64, output: 3, stride: 2, padding: same }
    // (1, 4): one row of 66 x 256 f32 is over 64 KiB, so one row per strip.
    strips_rows1_same_4x66x256 [strips] { input: 4 x 66 x 256, output: 2, padding: same }
    // (2, 5): 2 rows of 38 x 160 per strip.
    strips_blocks_valid_12x40x320 [strips_all] { input: 12 x 40 x 320, output: 3 }
    // (2, 4): stride 2, multiplier 3, blocks of 144, 3 rows per strip of 12.
    strips_blocks_m3_s2_same_24x60x96 [strips] {
        input: 24 x 60 x 96, output: 3, stride: 2, padding: same, multiplier: 3
    }
    // (1, 5): f64 halves the rows per strip (5 of 24; f32 would take 10).
    strips_f64_same_24x24x64 [strips] { input: 24 x 24 x 64, output: 3, padding: same, dtype: f64 }
    // (2, 4): f64, blocks of 160, 3 rows per strip.
    strips_blocks_f64_same_10x16x320 [strips] {
        input: 10 x 16 x 320, output: 2, padding: same, dilation: 2, dtype: f64
    }
    // (3, 5): the depthwise bias and ReLU6 apply block by block; 2 rows per strip.
    strips_blocks_both_relu6_10x24x768 [strips] {
        input: 10 x 24 x 768, output: 3, padding: same, bias: both, activation: relu6
    }
}

// ---------------------------------------------------------------------------------------------
// Coverage of the grid
// ---------------------------------------------------------------------------------------------

/// The grid exercises every parameter value it is meant to; a change that drops one fails here.
#[test]
fn grid_covers_every_parameter() {
    let n = GRID.len();
    assert!((80..=150).contains(&n), "{n} grid entries");
    let names: BTreeSet<&str> = GRID.iter().map(|e| e.name).collect();
    assert_eq!(names.len(), n, "duplicate grid names");

    let has = |what: &str, f: &dyn Fn(&Entry) -> bool| {
        assert!(GRID.iter().any(f), "no grid entry with {what}");
    };
    for k in [[1, 1], [2, 2], [3, 3], [5, 5], [7, 7], [3, 5], [9, 9]] {
        has(&format!("kernel {k:?}"), &|e| e.spec.kernel == k);
    }
    for s in [[1, 1], [2, 2], [3, 3], [2, 1]] {
        has(&format!("stride {s:?}"), &|e| e.spec.stride == s);
    }
    for d in [[1, 1], [2, 2], [2, 1]] {
        has(&format!("dilation {d:?}"), &|e| e.spec.dilation == d);
    }
    has("valid padding", &|e| e.spec.padding == Padding::Valid);
    has("same padding", &|e| e.spec.padding == Padding::Same);
    has(
        "explicit padding P",
        &|e| matches!(e.spec.padding, Padding::Explicit { height, width } if height == width),
    );
    has(
        "explicit padding PH x PW",
        &|e| matches!(e.spec.padding, Padding::Explicit { height, width } if height != width),
    );
    has("explicit padding larger than the kernel", &|e| {
        matches!(e.spec.padding, Padding::Explicit { height, width }
            if height > e.spec.kernel[0] && width > e.spec.kernel[1])
    });
    for m in [1, 2, 3] {
        has(&format!("multiplier {m}"), &|e| e.spec.multiplier == m);
    }
    for b in [Bias::None, Bias::Pointwise, Bias::Both] {
        has(&format!("bias {b:?}"), &|e| e.spec.bias == b);
    }
    for a in [Activation::None, Activation::Relu, Activation::Relu6] {
        has(&format!("depthwise-only {a:?}"), &|e| {
            e.activations == [a, Activation::None]
        });
        has(&format!("pointwise-only {a:?}"), &|e| {
            e.activations == [Activation::None, a]
        });
        has(&format!("{a:?} on both stages"), &|e| {
            e.activations == [a, a]
        });
    }
    has("different activations per stage", &|e| {
        e.activations[0] != e.activations[1] && !e.activations.contains(&Activation::None)
    });
    has("1 x 1 input, kernel 1, valid", &|e| {
        e.spec.input[..2] == [1, 1] && e.spec.kernel == [1, 1] && e.spec.padding == Padding::Valid
    });
    has("1 x 1 input, kernel 3, same", &|e| {
        e.spec.input[..2] == [1, 1] && e.spec.kernel == [3, 3] && e.spec.padding == Padding::Same
    });
    for hw in [[7, 9], [11, 6], [1, 13], [13, 1]] {
        has(&format!("input {hw:?}"), &|e| e.spec.input[..2] == hw);
    }
    for c in [1, 3, 8, 17] {
        has(&format!("{c} channels"), &|e| e.spec.input[2] == c);
    }
    for t in ["f32", "f64"] {
        has(t, &|e| e.dtype == t);
    }
}

/// Every entry's layout tag is the layout the policy gives it, and the grid exercises each
/// layout and both sides of each limit of the unrolled rule.
#[test]
fn grid_covers_both_layouts() {
    let mut mistagged = Vec::new();
    for e in GRID {
        let layout = (e.layout)();
        eprintln!("{:<34} {}", e.name, layout.describe());
        if e.tag != tag(layout) {
            mistagged.push(format!(
                "{}: tagged `{}` but gets {layout:?}",
                e.name, e.tag
            ));
        }
    }
    assert!(mistagged.is_empty(), "{}", mistagged.join("\n"));
    let count = |t: &str| GRID.iter().filter(|e| e.tag == t).count();
    for (t, at_least) in [
        ("planar", 30),
        ("unrolled", 10),
        ("strips", 30),
        ("strips_all", 5),
        ("strips_none", 3),
    ] {
        let n = count(t);
        eprintln!("{t}: {n}");
        assert!(
            n >= at_least,
            "{n} grid entries tagged `{t}`, want {at_least}"
        );
    }
    assert!(
        GRID.iter().any(|e| {
            let shape = e.spec.shape().unwrap();
            e.tag == "strips_none" && shape.rows.output * shape.cols.output > 64
        }),
        "no layer without an interior on more than 64 positions"
    );

    // The tiny rule: at most 64 output positions and at most 256 in-bounds taps.
    for (name, positions, taps, t) in [
        ("edge_64_positions_256_taps", 64, 256, "planar"),
        ("edge_36_positions_256_taps", 36, 256, "planar"),
        ("edge_65_positions", 65, 65, "strips_all"),
        ("edge_64_positions_484_taps", 64, 484, "strips"),
        ("edge_30_positions_270_taps", 30, 270, "strips_all"),
    ] {
        let e = entry(name);
        let shape = e.spec.shape().unwrap();
        let (per_axis, _) = common::taps_and_interior(&e.spec);
        assert_eq!(
            (
                shape.rows.output * shape.cols.output,
                per_axis[0] * per_axis[1],
                e.tag
            ),
            (positions, taps, t),
            "{name}: (positions, taps, tag)"
        );
    }

    // The planar rule within tiny layers: at most 8 depthwise channels, planes of at most 256.
    for (name, channels, plane, t) in [
        ("edge_planar_8_channels_256_plane", 8, 256, "planar"),
        ("edge_unrolled_9_channels", 9, 56, "unrolled"),
        ("edge_unrolled_488_plane", 1, 488, "unrolled"),
    ] {
        let e = entry(name);
        assert_eq!(
            (
                e.spec.input[2] * e.spec.multiplier,
                common::plane_len(&e.spec),
                e.tag
            ),
            (channels, plane, t),
            "{name}: (channels, plane, tag)"
        );
    }
}

/// The grid entry called `name`.
fn entry(name: &str) -> &'static Entry {
    GRID.iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no grid entry {name}"))
}

/// The grid has several strips, several channel blocks and both at once, in the cases the rule
/// distinguishes (multipliers, prime channel counts, one row per strip, `f64`, bias and ReLU6).
#[test]
fn grid_covers_strips_and_channel_blocks() {
    // Worked out by hand from the rule: (entry, depthwise channels per block, output rows per
    // strip, channel blocks, strips).
    for (name, channels, rows, blocks, strips) in [
        ("blocks_same_6x30x320", 160, 3, 2, 2),
        ("blocks_m3_same_5x30x96", 144, 3, 2, 2),
        ("blocks_prime_same_8x8x257", 257, 7, 1, 2),
        ("blocks_256_same_9x8x256", 256, 8, 1, 2),
        ("blocks_in1x80_same_c320", 160, 1, 2, 1),
        ("strips_same_40x40x32", 32, 12, 1, 4),
        ("strips_s2_same_47x47x64", 64, 10, 1, 3),
        ("strips_rows1_same_4x66x256", 256, 1, 1, 4),
        ("strips_blocks_valid_12x40x320", 160, 2, 2, 5),
        ("strips_blocks_m3_s2_same_24x60x96", 144, 3, 2, 4),
        ("strips_f64_same_24x24x64", 64, 5, 1, 5),
        ("strips_blocks_f64_same_10x16x320", 160, 3, 2, 4),
        ("strips_blocks_both_relu6_10x24x768", 256, 2, 3, 5),
    ] {
        let e = entry(name);
        let shape = e.spec.shape().unwrap();
        let output = [shape.rows.output, shape.cols.output];
        let layout = (e.layout)();
        assert_eq!(
            (
                common::channel_block(&e.spec, output, common::elem_bytes(e.dtype)),
                common::strip_rows(output, channels, common::elem_bytes(e.dtype)),
                layout.channel_blocks(),
                layout.strips(),
            ),
            (channels, rows, blocks, strips),
            "{name}: (channels per block, rows per strip, channel blocks, strips) of {layout:?}"
        );
    }
    // f64 halves the rows per strip of the same layer in f32.
    let e = entry("strips_f64_same_24x24x64");
    let shape = e.spec.shape().unwrap();
    let (output, channels) = ([shape.rows.output, shape.cols.output], shape.depthwise[2]);
    assert_eq!(e.dtype, "f64");
    assert_eq!(
        common::strip_rows(output, channels, 4),
        2 * common::strip_rows(output, channels, 8)
    );

    let has = |what: &str, f: &dyn Fn(&Entry, Layout) -> bool| {
        assert!(
            GRID.iter().any(|e| f(e, (e.layout)())),
            "no grid entry with {what}"
        );
    };
    let cm = |e: &Entry| e.spec.input[2] * e.spec.multiplier;
    has("several channel blocks", &|_, l| l.channel_blocks() > 1);
    has("several channel blocks of a multiplier", &|e, l| {
        e.spec.multiplier > 1 && cm(e) > 256 && l.channel_blocks() > 1
    });
    has("a prime channel count over 256 in one block", &|e, l| {
        let c = e.spec.input[2];
        c > 256
            && (2..c).all(|d| c % d != 0)
            && matches!(l, Layout::Strips { .. })
            && l.channel_blocks() == 1
    });
    has("several strips", &|_, l| l.strips() > 1);
    has("stride 2 with several strips", &|e, l| {
        e.spec.stride == [2, 2] && l.strips() > 1
    });
    has("several strips and several channel blocks", &|_, l| {
        l.strips() > 1 && l.channel_blocks() > 1
    });
    has(
        "several strips and several channel blocks, no border",
        &|_, l| l.strips() > 1 && l.channel_blocks() > 1 && l.interior_covers_all(),
    );
    has("several channel blocks, no interior", &|_, l| {
        l.channel_blocks() > 1 && l.no_interior()
    });
    has("f64 with several strips", &|e, l| {
        e.dtype == "f64" && l.strips() > 1
    });
    has("f64 with several strips and channel blocks", &|e, l| {
        e.dtype == "f64" && l.strips() > 1 && l.channel_blocks() > 1
    });
    has(
        "bias: both and ReLU6 on both stages with several channel blocks",
        &|e, l| {
            e.spec.bias == Bias::Both
                && e.activations == [Activation::Relu6, Activation::Relu6]
                && l.channel_blocks() > 1
        },
    );
    has("a strip of one row", &|e, l| {
        let shape = e.spec.shape().unwrap();
        l.strips() == shape.rows.output && l.strips() > 1
    });
    has("a last strip shorter than the others", &|e, l| {
        let shape = e.spec.shape().unwrap();
        let output = [shape.rows.output, shape.cols.output];
        let channels = common::channel_block(&e.spec, output, common::elem_bytes(e.dtype));
        let rows = common::strip_rows(output, channels, common::elem_bytes(e.dtype));
        l.strips() > 1 && output[0] % rows != 0
    });
}

// ---------------------------------------------------------------------------------------------
// ReLU6 that clips
// ---------------------------------------------------------------------------------------------

/// Counts the elements equal to exactly `0.0` and exactly `6.0`.
fn clipped<T: Element>(values: &[T]) -> (usize, usize) {
    let zeros = values.iter().filter(|v| v.to_f64() == 0.0).count();
    let sixes = values.iter().filter(|v| v.to_f64() == 6.0).count();
    (zeros, sixes)
}

fn check_relu6_clips<L: TestLayer>(name: &str) {
    assert_eq!(L::SPEC.bias, Bias::Both);
    assert_eq!(L::DEPTHWISE_ACTIVATION, Activation::Relu6);
    assert_eq!(L::POINTWISE_ACTIVATION, Activation::Relu6);
    // Inputs in [-4, 4) and weights in [-3, 3): sums reach well past 6 on both sides.
    let run = run::<L>(name, 4.0, 3.0);
    for (stage, values) in [
        ("depthwise", widen(run.depthwise.hwc())),
        ("output", widen(run.output.hwc())),
    ] {
        let (zeros, sixes) = clipped(&values);
        assert!(
            zeros > 0 && sixes > 0,
            "{name}: {stage}: {zeros} zeros, {sixes} sixes"
        );
        assert!(
            values.iter().all(|v| (0.0..=6.0).contains(v)),
            "{name}: {stage}: a value outside [0, 6]"
        );
        assert!(
            values.iter().any(|v| *v > 0.0 && *v < 6.0),
            "{name}: {stage}: nothing between the clips"
        );
    }
}

#[test]
fn relu6_clips_at_zero_and_six_planar() {
    separable_conv! {
        #[allow(dead_code)]
        struct Clip { input: 5 x 5 x 8, output: 8, padding: same, bias: both, activation: relu6 }
    }
    assert_eq!(Layout::of::<Clip>(), Layout::Planar);
    check_relu6_clips::<Clip>("relu6_clips_planar");
}

#[test]
fn relu6_clips_at_zero_and_six_strips() {
    separable_conv! {
        #[allow(dead_code)]
        struct Clip {
            input: 16 x 16 x 8, output: 8, stride: 2 x 1, padding: same, bias: both,
            activation: relu6, dtype: f64,
        }
    }
    assert!(matches!(Layout::of::<Clip>(), Layout::Strips { .. }));
    check_relu6_clips::<Clip>("relu6_clips_strips");
}

/// The depthwise bias and ReLU6 are applied per channel block: both clips with two blocks. In
/// `f64`: sums over 320 channels of terms up to 18 cancel to values near 0, where `f32`
/// rounding alone exceeds the tolerance.
#[test]
fn relu6_clips_at_zero_and_six_channel_blocks() {
    separable_conv! {
        #[allow(dead_code)]
        struct Clip {
            input: 6 x 16 x 320, output: 16, padding: same, bias: both, activation: relu6,
            dtype: f64,
        }
    }
    assert_eq!(Layout::of::<Clip>().channel_blocks(), 2);
    check_relu6_clips::<Clip>("relu6_clips_channel_blocks");
}

// ---------------------------------------------------------------------------------------------
// NaN propagation
// ---------------------------------------------------------------------------------------------

/// Whether output position `o` along one axis reads input position `p`.
fn reads(spec: &LayerSpec, pad_before: usize, d: usize, o: usize, p: usize) -> bool {
    (0..spec.kernel[d]).any(|k| o * spec.stride[d] + k * spec.dilation[d] == p + pad_before)
}

/// Puts a NaN at each of `pixels` in turn and checks that exactly the outputs whose window
/// covers it become NaN: in the depthwise stage, the `M` channels of the NaN's channel at those
/// positions; after the pointwise stage, every channel there. All other values must match the
/// reference.
fn check_nan<L: TestLayer>(name: &str, pixels: &[(usize, usize, usize)]) {
    let spec = L::SPEC;
    let shape = L::SHAPE;
    assert_eq!(
        spec.bias,
        Bias::None,
        "{name}: the NaN check wants a layer without bias"
    );
    let acts = [L::DEPTHWISE_ACTIVATION, L::POINTWISE_ACTIVATION];
    let mut rng = Rng::from_name(name);
    let weights = random_weights::<L>(&mut rng, 1.0);
    let (dw, _, pw, _) = weights.as_slices();
    let layer = L::from_pytorch(dw, None, pw, None).unwrap();
    let clean: Vec<L::Elem> = rng.values(shape.input_len, 1.0);
    let m = spec.multiplier;
    let mut affected_total = 0;
    for &(h, w, c) in pixels {
        let what = format!("{name}: NaN at (h {h}, w {w}, c {c})");
        let mut x = clean.clone();
        x[(h * spec.input[1] + w) * spec.input[2] + c] = L::Elem::from_f64(f64::NAN);
        let input = L::Input::from_hwc_slice(&x);
        let got_dw = widen(layer.depthwise(&input).hwc());
        let got_y = widen(layer.forward(&input).hwc());
        let mut into = L::Output::filled_with(L::Elem::from_f64(1e30));
        layer.forward_into(&input, &mut into);
        let got_into = widen(into.hwc());
        let ref_dw = widen(&reference::depthwise(&spec, &x, dw, None, acts[0]).unwrap());
        let ref_y = widen(&reference::forward(&spec, &x, dw, None, pw, None, acts).unwrap());

        let covered = |oh: usize, ow: usize| {
            reads(&spec, shape.rows.pad_before, 0, oh, h)
                && reads(&spec, shape.cols.pad_before, 1, ow, w)
        };
        for (stage, dims, got, want) in [
            ("depthwise", shape.depthwise, &got_dw, &ref_dw),
            ("forward", shape.output, &got_y, &ref_y),
            ("forward_into", shape.output, &got_into, &ref_y),
        ] {
            let mut finite_got = got.clone();
            let mut finite_want = want.clone();
            for (i, g) in got.iter().enumerate() {
                let (oh, ow, k) = position(i, dims);
                let expect_nan =
                    covered(oh, ow) && (stage != "depthwise" || (c * m..(c + 1) * m).contains(&k));
                assert_eq!(
                    g.is_nan(),
                    expect_nan,
                    "{what}: {stage} at index {i} = (h {oh}, w {ow}, c {k}) is {g}"
                );
                assert_eq!(
                    want[i].is_nan(),
                    expect_nan,
                    "{what}: reference {stage} at {i}"
                );
                affected_total += usize::from(expect_nan);
                if expect_nan {
                    finite_got[i] = 0.0;
                    finite_want[i] = 0.0;
                }
            }
            let finite_got: Vec<L::Elem> = elems(&finite_got);
            assert_close(&what, stage, dims, &finite_got, &finite_want);
        }
    }
    assert!(affected_total > 0, "{name}: no NaN reached any output");
}

#[test]
fn nan_propagates_to_covering_positions_planar() {
    separable_conv! {
        #[allow(dead_code)]
        struct Nan { input: 5 x 5 x 3, output: 4, padding: same, multiplier: 2 }
    }
    assert_eq!(Layout::of::<Nan>(), Layout::Planar);
    check_nan::<Nan>("nan_planar", &[(0, 0, 0), (2, 2, 1), (4, 1, 2), (0, 4, 2)]);
}

#[test]
fn nan_propagates_to_covering_positions_unrolled() {
    separable_conv! {
        #[allow(dead_code)]
        struct Nan { input: 5 x 5 x 5, output: 4, padding: same, multiplier: 2 }
    }
    assert_eq!(Layout::of::<Nan>(), Layout::Unrolled);
    check_nan::<Nan>(
        "nan_unrolled",
        &[(0, 0, 0), (2, 2, 1), (4, 1, 4), (0, 4, 2)],
    );
}

#[test]
fn nan_propagates_to_covering_positions_strips() {
    separable_conv! {
        #[allow(dead_code)]
        struct Nan { input: 16 x 16 x 3, output: 4, padding: same, activation: relu6 }
    }
    assert!(matches!(Layout::of::<Nan>(), Layout::Strips { .. }));
    check_nan::<Nan>(
        "nan_strips",
        &[
            (0, 0, 0),
            (0, 7, 1),
            (8, 8, 2),
            (15, 15, 0),
            (15, 0, 1),
            (1, 14, 2),
        ],
    );
}

#[test]
fn nan_propagates_to_covering_positions_9x9_window() {
    separable_conv! {
        #[allow(dead_code)]
        struct Nan { input: 24 x 24 x 2, output: 3, kernel: 9, padding: same, activation: relu }
    }
    assert!(matches!(Layout::of::<Nan>(), Layout::Strips { .. }));
    check_nan::<Nan>(
        "nan_9x9_window",
        &[(0, 0, 0), (12, 12, 1), (23, 3, 0), (5, 20, 1)],
    );
}

/// Two strips of 3 rows and two blocks of 160 channels: NaNs on the rows either side of the
/// strip boundary (windows that straddle it) and on the first and last channel of each block.
#[test]
fn nan_propagates_to_covering_positions_strips_and_channel_blocks() {
    separable_conv! {
        #[allow(dead_code)]
        struct Nan { input: 6 x 26 x 320, output: 2, padding: same }
    }
    let layout = Layout::of::<Nan>();
    assert_eq!(
        (layout.strips(), layout.channel_blocks()),
        (2, 2),
        "{layout:?}"
    );
    assert_eq!(common::strip_rows([6, 26], 160, 4), 3);
    check_nan::<Nan>(
        "nan_strips_and_blocks",
        &[
            (2, 0, 0),
            (3, 25, 159),
            (2, 5, 160),
            (3, 6, 319),
            (0, 0, 319),
            (5, 25, 160),
        ],
    );
}

#[test]
fn nan_propagates_to_covering_positions_strided_dilated() {
    // SAME pads 2 before: windows read only even rows and columns, so a NaN at an odd row
    // reaches nothing.
    separable_conv! {
        #[allow(dead_code)]
        struct Nan {
            input: 11 x 11 x 2, output: 3, stride: 2, dilation: 2, padding: same, multiplier: 2
        }
    }
    assert_eq!(Nan::SHAPE.rows.pad_before, 2);
    check_nan::<Nan>(
        "nan_strided",
        &[(0, 0, 0), (4, 6, 1), (10, 10, 1), (5, 4, 0), (3, 3, 1)],
    );
}

#[test]
fn nan_propagates_to_covering_positions_padding_beyond_kernel() {
    separable_conv! {
        #[allow(dead_code)]
        struct Nan { input: 5 x 5 x 3, output: 2, padding: 4 }
    }
    check_nan::<Nan>("nan_padding", &[(0, 0, 0), (2, 3, 1), (4, 4, 2)]);
}

// ---------------------------------------------------------------------------------------------
// Weight import and export
// ---------------------------------------------------------------------------------------------

#[test]
fn accessors_use_the_documented_layouts() {
    separable_conv! {
        #[allow(dead_code)]
        struct Acc { input: 4 x 4 x 2, output: 3, kernel: 2 x 3, multiplier: 2, bias: both }
    }
    let mut rng = Rng::from_name("accessors");
    let w = random_weights::<Acc>(&mut rng, 1.0);
    let (dw, dwb, pw, pwb) = w.as_slices();
    let layer = Acc::from_pytorch(dw, dwb, pw, pwb).unwrap();
    // PyTorch depthwise [C·M, 1, KH, KW] -> storage [KH][KW][C·M].
    for k in 0..4 {
        for kh in 0..2 {
            for kw in 0..3 {
                assert_eq!(
                    layer.depthwise_weight()[kh][kw][k],
                    dw[(k * 2 + kh) * 3 + kw]
                );
            }
        }
    }
    // PyTorch pointwise [N, C·M, 1, 1] -> storage [C·M][N].
    for o in 0..3 {
        for k in 0..4 {
            assert_eq!(layer.pointwise_weight()[(k, o)], pw[o * 4 + k]);
        }
    }
    assert_eq!(layer.depthwise_bias().map(|b| &b[..]), dwb);
    assert_eq!(layer.pointwise_bias().map(|b| &b[..]), pwb);
    // Weights set through the accessors come back through `to_pytorch`.
    let mut edited = Acc::zeroed();
    edited.depthwise_weight_mut()[1][2][3] = 7.0;
    edited.pointwise_weight_mut()[(3, 2)] = 5.0;
    if let Some(b) = edited.depthwise_bias_mut() {
        b[1] = 2.0;
    }
    let back = edited.to_pytorch();
    assert_eq!(back.depthwise_weight[(3 * 2 + 1) * 3 + 2], 7.0);
    assert_eq!(back.pointwise_weight[2 * 4 + 3], 5.0);
    assert_eq!(
        back.depthwise_bias.as_deref(),
        Some(&[0.0, 2.0, 0.0, 0.0][..])
    );
    assert_eq!(back.pointwise_bias.as_deref(), Some(&[0.0; 3][..]));
    let nonzero = |v: &[f32]| v.iter().filter(|x| **x != 0.0).count();
    assert_eq!(
        nonzero(&back.depthwise_weight) + nonzero(&back.pointwise_weight),
        2
    );
}

separable_conv! {
    #[allow(dead_code)]
    struct ErrBoth { input: 4 x 4 x 2, output: 3, kernel: 2 x 3, multiplier: 2, bias: both }
}
separable_conv! {
    #[allow(dead_code)]
    struct ErrPointwise { input: 4 x 4 x 2, output: 3, bias: pointwise }
}
separable_conv! {
    #[allow(dead_code)]
    struct ErrNone { input: 4 x 4 x 2, output: 3 }
}

/// Asserts that `result` is a length error for `tensor` of shape `shape` with the given lengths,
/// and that its message says so.
#[track_caller]
fn assert_length_error<L>(
    result: Result<L, Error>,
    context: &str,
    tensor: &str,
    shape: &[usize],
    expected: usize,
    actual: usize,
) {
    let Err(e) = result else {
        panic!("{context}: `{tensor}` of {actual} elements was accepted")
    };
    match &e {
        Error::Length {
            context: c,
            tensor: t,
            shape: s,
            expected: x,
            actual: a,
        } => {
            assert_eq!(
                (*c, *t, s.as_slice(), *x, *a),
                (context, tensor, shape, expected, actual)
            );
        }
        other => panic!("{context}: expected a length error for `{tensor}`, got {other:?}"),
    }
    let text = e.to_string();
    let shape_text = format!("{shape:?}");
    for part in [
        context,
        &format!("`{tensor}`"),
        &format!("has {actual} elements, expected {expected}"),
        &shape_text,
    ] {
        assert!(text.contains(part), "message {text:?} lacks {part:?}");
    }
}

#[test]
fn from_pytorch_rejects_wrong_lengths() {
    let (dw, dwb, pw, pwb) = (
        vec![0.0f32; 24],
        vec![0.0f32; 4],
        vec![0.0f32; 12],
        vec![0.0f32; 3],
    );
    assert!(ErrBoth::from_pytorch(&dw, Some(&dwb), &pw, Some(&pwb)).is_ok());
    let ctx = "ErrBoth::from_pytorch";
    for len in [23, 25, 0] {
        assert_length_error(
            ErrBoth::from_pytorch(&vec![0.0; len], Some(&dwb), &pw, Some(&pwb)),
            ctx,
            "depthwise.weight",
            &[4, 1, 2, 3],
            24,
            len,
        );
    }
    for len in [3, 5] {
        assert_length_error(
            ErrBoth::from_pytorch(&dw, Some(&vec![0.0; len]), &pw, Some(&pwb)),
            ctx,
            "depthwise.bias",
            &[4],
            4,
            len,
        );
    }
    for len in [11, 13] {
        assert_length_error(
            ErrBoth::from_pytorch(&dw, Some(&dwb), &vec![0.0; len], Some(&pwb)),
            ctx,
            "pointwise.weight",
            &[3, 4, 1, 1],
            12,
            len,
        );
    }
    for len in [2, 4] {
        assert_length_error(
            ErrBoth::from_pytorch(&dw, Some(&dwb), &pw, Some(&vec![0.0; len])),
            ctx,
            "pointwise.bias",
            &[3],
            3,
            len,
        );
    }
    // The pointwise weight is swapped with the depthwise one (a common mistake): the first
    // tensor in argument order is reported.
    assert_length_error(
        ErrBoth::from_pytorch(&pw, Some(&dwb), &dw, Some(&pwb)),
        ctx,
        "depthwise.weight",
        &[4, 1, 2, 3],
        24,
        12,
    );
    // The generic path (the `Layer` trait) reports the same.
    assert_length_error(
        <ErrPointwise as Layer>::from_pytorch(&[0.0; 17], None, &[0.0; 6], Some(&[0.0; 3])),
        "ErrPointwise::from_pytorch",
        "depthwise.weight",
        &[2, 1, 3, 3],
        18,
        17,
    );
}

#[test]
fn from_pytorch_checks_biases_against_the_declaration() {
    let expect =
        |result: Result<(), Error>, unexpected: bool, ctx: &str, tensor: &str, word: &str| {
            let e = result.unwrap_err();
            let text = e.to_string();
            let ok = match &e {
                Error::UnexpectedBias {
                    context,
                    tensor: t,
                    declared,
                } if unexpected => *context == ctx && *t == tensor && declared.to_string() == word,
                Error::MissingBias {
                    context,
                    tensor: t,
                    declared,
                } if !unexpected => *context == ctx && *t == tensor && declared.to_string() == word,
                _ => false,
            };
            assert!(ok, "{ctx}: `{tensor}`: got {e:?}");
            for part in [ctx, &format!("`{tensor}`"), &format!("`bias: {word}`")] {
                assert!(text.contains(part), "message {text:?} lacks {part:?}");
            }
            let verb = if unexpected {
                "was given"
            } else {
                "is missing"
            };
            assert!(text.contains(verb), "message {text:?} lacks {verb:?}");
        };
    let (dw18, pw6, b2, b3) = ([0.0f32; 18], [0.0f32; 6], [0.0f32; 2], [0.0f32; 3]);
    // bias: none
    let none = |dwb: Option<&[f32]>, pwb: Option<&[f32]>| {
        ErrNone::from_pytorch(&dw18, dwb, &pw6, pwb).map(|_| ())
    };
    assert!(none(None, None).is_ok());
    expect(
        none(Some(&b2), None),
        true,
        "ErrNone::from_pytorch",
        "depthwise.bias",
        "none",
    );
    expect(
        none(None, Some(&b3)),
        true,
        "ErrNone::from_pytorch",
        "pointwise.bias",
        "none",
    );
    // bias: pointwise
    let pointwise = |dwb: Option<&[f32]>, pwb: Option<&[f32]>| {
        ErrPointwise::from_pytorch(&dw18, dwb, &pw6, pwb).map(|_| ())
    };
    assert!(pointwise(None, Some(&b3)).is_ok());
    let ctx = "ErrPointwise::from_pytorch";
    expect(
        pointwise(Some(&b2), Some(&b3)),
        true,
        ctx,
        "depthwise.bias",
        "pointwise",
    );
    expect(
        pointwise(None, None),
        false,
        ctx,
        "pointwise.bias",
        "pointwise",
    );
    // bias: both
    let (dw24, pw12, b4) = ([0.0f32; 24], [0.0f32; 12], [0.0f32; 4]);
    let both = |dwb: Option<&[f32]>, pwb: Option<&[f32]>| {
        ErrBoth::from_pytorch(&dw24, dwb, &pw12, pwb).map(|_| ())
    };
    assert!(both(Some(&b4), Some(&b3)).is_ok());
    expect(
        both(None, Some(&b3)),
        false,
        "ErrBoth::from_pytorch",
        "depthwise.bias",
        "both",
    );
    expect(
        both(Some(&b4), None),
        false,
        "ErrBoth::from_pytorch",
        "pointwise.bias",
        "both",
    );
    expect(
        both(None, None),
        false,
        "ErrBoth::from_pytorch",
        "depthwise.bias",
        "both",
    );
}

// ---------------------------------------------------------------------------------------------
// A MobileNet-size layer in a small stack
// ---------------------------------------------------------------------------------------------

/// `forward` (and every other check of [`run`]) on a MobileNet v1 block in a thread with a
/// 2 MiB stack: tensors and weights live on the heap, so the layer must not need a large stack.
#[test]
fn mobilenet_size_layer_in_a_2_mib_stack() {
    separable_conv! {
        #[allow(dead_code)]
        struct Block { input: 112 x 112 x 32, output: 64, padding: same }
    }
    // 4 rows of 112 x 32 f32 per strip.
    assert_eq!(
        Layout::of::<Block>(),
        Layout::Strips {
            interior: [110, 110],
            output: [112, 112],
            channel_blocks: 1,
            strips: 28,
        }
    );
    // `forward` keeps one strip of depthwise outputs on the stack (and a cache line to align
    // it), about a 28th of the depthwise tensor (1.6 MB) it never stores.
    assert_eq!(Block::FORWARD_SCRATCH_BYTES, 4 * 112 * 32 * 4 + 64);
    let depthwise_bytes = Block::DEPTHWISE_SHAPE.iter().product::<usize>() * 4;
    assert_eq!(depthwise_bytes / Block::FORWARD_SCRATCH_BYTES, 27);
    let errors = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| run::<Block>("mobilenet_112x112x32", 1.0, 1.0).errors)
        .unwrap()
        .join()
        .unwrap();
    eprintln!(
        "mobilenet_112x112x32: max |diff| {:.2e}, max |diff| / max(1, |want|) {:.2e}",
        errors.abs, errors.scaled
    );
}

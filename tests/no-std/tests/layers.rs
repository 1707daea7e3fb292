//! The `#![no_std]` crate's layers against a plain implementation written here (in `f64`, from
//! PyTorch's layouts and TensorFlow's definition of SAME padding), its `Err`s on buffers of the
//! wrong length, and its heap use: none without `alloc`.
//!
//! This file does not use `separable::reference`: it needs `alloc`, and a dev-dependency that
//! enables it would build `separable-runtime` with `alloc` for these tests through feature
//! unification. Run on its own (`cargo test -p separable-no-std-test`) the runtime has no
//! `alloc`; under `cargo test --workspace` it has, and every test must pass both ways.

use separable::{__private::ALLOC, Error, Layer, Tensor};
use separable_no_std_test::{
    STRIPS_DW_BIAS, STRIPS_DW_WEIGHT, STRIPS_INPUT, STRIPS_PW_BIAS, STRIPS_PW_WEIGHT, Strips,
    TINY_DW_BIAS, TINY_DW_WEIGHT, TINY_INPUT, TINY_PW_BIAS, TINY_PW_WEIGHT, Tiny, run_strips,
    run_tiny, strips, tiny, tiny_tensor,
};

/// A square-kernel layer with TensorFlow's SAME padding, a bias on both stages and ReLU6 after
/// each, in PyTorch's weight layouts.
struct Plain<'a> {
    input: [usize; 3],
    kernel: usize,
    stride: usize,
    multiplier: usize,
    dw_weight: &'a [f32],
    dw_bias: &'a [f32],
    pw_weight: &'a [f32],
    pw_bias: &'a [f32],
}

fn relu6(v: f64) -> f64 {
    v.clamp(0.0, 6.0)
}

impl Plain<'_> {
    /// Output size and padding before, per spatial axis: `ceil(I / S)` outputs, and half the
    /// total padding (rounded down) before.
    fn same(&self, size: usize) -> (usize, usize) {
        let out = size.div_ceil(self.stride);
        let total = ((out - 1) * self.stride + self.kernel).saturating_sub(size);
        (out, total / 2)
    }

    fn depthwise_channels(&self) -> usize {
        self.input[2] * self.multiplier
    }

    /// `[OH, OW, C·M]` after the depthwise stage.
    fn depthwise(&self, x: &[f32]) -> (Vec<f64>, [usize; 3]) {
        let [h, w, c] = self.input;
        let (k, s, cm) = (self.kernel, self.stride, self.depthwise_channels());
        let ((oh, top), (ow, left)) = (self.same(h), self.same(w));
        let mut y = Vec::with_capacity(oh * ow * cm);
        for r in 0..oh {
            for q in 0..ow {
                for o in 0..cm {
                    let mut sum = f64::from(self.dw_bias[o]);
                    for i in 0..k {
                        for j in 0..k {
                            // Taps on the padding (before or after the input) add nothing.
                            let inside = |o: usize, pad: usize, size: usize| {
                                o.checked_sub(pad).filter(|&v| v < size)
                            };
                            let (Some(row), Some(col)) =
                                (inside(r * s + i, top, h), inside(q * s + j, left, w))
                            else {
                                continue;
                            };
                            let xv = x[(row * w + col) * c + o / self.multiplier];
                            sum += f64::from(xv) * f64::from(self.dw_weight[(o * k + i) * k + j]);
                        }
                    }
                    y.push(relu6(sum));
                }
            }
        }
        (y, [oh, ow, cm])
    }

    /// `[OH, OW, N]` from a depthwise output.
    fn pointwise(&self, y: &[f64]) -> Vec<f64> {
        let cm = self.depthwise_channels();
        let n = self.pw_bias.len();
        y.chunks_exact(cm)
            .flat_map(|pixel| {
                (0..n).map(move |o| {
                    let products = pixel
                        .iter()
                        .enumerate()
                        .map(|(k, &v)| v * f64::from(self.pw_weight[o * cm + k]));
                    relu6(f64::from(self.pw_bias[o]) + products.sum::<f64>())
                })
            })
            .collect()
    }
}

fn plain_tiny() -> Plain<'static> {
    Plain {
        input: [5, 5, 3],
        kernel: 3,
        stride: 2,
        multiplier: 2,
        dw_weight: &TINY_DW_WEIGHT,
        dw_bias: &TINY_DW_BIAS,
        pw_weight: &TINY_PW_WEIGHT,
        pw_bias: &TINY_PW_BIAS,
    }
}

fn plain_strips() -> Plain<'static> {
    Plain {
        input: [16, 16, 32],
        kernel: 3,
        stride: 1,
        multiplier: 1,
        dw_weight: &STRIPS_DW_WEIGHT,
        dw_bias: &STRIPS_DW_BIAS,
        pw_weight: &STRIPS_PW_WEIGHT,
        pw_bias: &STRIPS_PW_BIAS,
    }
}

/// Every value within `1e-5 · max(1, |want|)` (the kernels' fused multiply-adds and `f32`
/// intermediate round differently from `f64`); returns the largest scaled difference.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (f64::from(g) - w).abs() / w.abs().max(1.0);
        assert!(diff <= 1e-5, "{what}[{i}]: got {g}, want {w}");
        worst = worst.max(diff);
    }
    worst
}

/// ReLU6 must have clipped at both ends and let values through in between, or the activation
/// went untested.
#[track_caller]
fn assert_both_clips(what: &str, want: &[f64]) {
    let zeros = want.iter().filter(|&&v| v == 0.0).count();
    let sixes = want.iter().filter(|&&v| v == 6.0).count();
    let inside = want.len() - zeros - sixes;
    assert!(
        zeros > 0 && sixes > 0 && inside > 0,
        "{what}: {zeros} at 0, {sixes} at 6, {inside} between"
    );
}

#[test]
fn the_layers_have_the_two_code_layouts() {
    // The macro unrolls a layer with at most 64 output positions (and at most 256 in-bounds
    // taps: `Tiny` has at most 9 per position); anything larger runs in strips.
    let [oh, ow, _] = Tiny::OUTPUT_SHAPE;
    assert_eq!((oh, ow), (3, 3));
    let [oh, ow, n] = Strips::OUTPUT_SHAPE;
    assert_eq!((oh, ow, n), (16, 16, 64));
    assert!(oh * ow > 64);
}

#[test]
fn tiny_matches_a_plain_implementation() {
    let plain = plain_tiny();
    let (dw, dims) = plain.depthwise(&TINY_INPUT);
    assert_eq!(dims, Tiny::DEPTHWISE_SHAPE);
    let want = plain.pointwise(&dw);
    assert_both_clips("Tiny depthwise", &dw);
    assert_both_clips("Tiny", &want);

    let mut out = [f32::NAN; 36];
    run_tiny(&mut out).expect("right lengths");
    let worst = assert_close("Tiny::forward_slices", &out, &want);
    eprintln!("Tiny: max |diff| / max(1, |want|) = {worst:.2e}");

    // Through inline tensors: the same kernels, so the same bits.
    let tensor = tiny_tensor().expect("right lengths");
    assert_eq!(tensor.as_slice(), &out[..]);
    let layer = tiny().expect("static weights");
    let depthwise = layer.depthwise(&Tensor::from_hwc(&TINY_INPUT).expect("75 values"));
    assert_close("Tiny::depthwise", depthwise.as_slice(), &dw);
}

#[test]
fn strips_matches_a_plain_implementation() {
    let plain = plain_strips();
    let (dw, dims) = plain.depthwise(&STRIPS_INPUT);
    assert_eq!(dims, Strips::DEPTHWISE_SHAPE);
    let want = plain.pointwise(&dw);
    assert_both_clips("Strips depthwise", &dw);
    assert_both_clips("Strips", &want);

    let mut out = vec![f32::NAN; 16 * 16 * 64];
    run_strips(&mut out).expect("right lengths");
    let worst = assert_close("Strips::forward_slices", &out, &want);
    eprintln!("Strips: max |diff| / max(1, |want|) = {worst:.2e}");

    let layer = strips().expect("static weights");
    let input = Tensor::from_hwc(&STRIPS_INPUT).expect("8192 values");
    assert_close("Strips::depthwise", layer.depthwise(&input).as_slice(), &dw);
    // `forward_into` on tensors and the trait's `forward_slices` take the same path.
    let mut tensor = Tensor::filled(f32::NAN);
    layer.forward_into(&input, &mut tensor);
    assert_eq!(tensor.as_slice(), &out[..]);
    let mut again = vec![f32::NAN; 16 * 16 * 64];
    Layer::forward_slices(&layer, &STRIPS_INPUT, &mut again).expect("right lengths");
    assert_eq!(again, out);
}

#[test]
fn wrong_lengths_are_errors_naming_the_buffer() {
    let mut short = [1.5f32; 35];
    let e = run_tiny(&mut short).unwrap_err();
    assert_eq!(
        e,
        Error::Length {
            context: "Tiny::forward_slices",
            tensor: "output",
            shape: separable::Dims::new([3, 3, 4]),
            expected: 36,
            actual: 35,
        }
    );
    assert_eq!(
        e.to_string(),
        "Tiny::forward_slices: `output` has 35 elements, expected 36 (shape [3, 3, 4])"
    );
    assert!(short.iter().all(|&v| v == 1.5), "written before the error");

    let layer = strips().expect("static weights");
    let mut out = vec![1.5f32; 16 * 16 * 64];
    for len in [0, 8191, 8193] {
        let input = vec![0.0f32; len];
        match layer.forward_slices(&input, &mut out) {
            Err(Error::Length {
                context: "Strips::forward_slices",
                tensor: "input",
                expected: 8192,
                actual,
                ..
            }) if actual == len => {}
            other => panic!("input of {len}: {other:?}"),
        }
    }
    // The input is checked first.
    let e = layer
        .forward_slices(&STRIPS_INPUT[1..], &mut out[1..])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Length {
                tensor: "input",
                ..
            }
        ),
        "{e:?}"
    );
    let e = layer
        .forward_slices(&STRIPS_INPUT, &mut out[1..])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Length {
                tensor: "output",
                expected: 16384,
                actual: 16383,
                ..
            }
        ),
        "{e:?}"
    );
    out.push(0.0);
    let e = layer.forward_slices(&STRIPS_INPUT, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Length {
                tensor: "output",
                expected: 16384,
                actual: 16385,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        out[..16384].iter().all(|&v| v == 1.5),
        "written before the error"
    );

    let e =
        Tiny::from_pytorch(&TINY_DW_WEIGHT, None, &TINY_PW_WEIGHT, Some(&TINY_PW_BIAS)).map(|_| ());
    assert!(
        matches!(
            e,
            Err(Error::MissingBias {
                tensor: "depthwise.bias",
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn building_and_running_the_layers_allocates_only_with_alloc() {
    let mut tiny_out = [0.0f32; 36];
    let mut strips_out = vec![0.0f32; 16 * 16 * 64];
    let mut layers = None;
    let built = allocation_counter::measure(|| {
        layers = Some((
            tiny().expect("static weights"),
            strips().expect("static weights"),
        ));
    });
    let (tiny, strips) = layers.expect("built");
    let ran = allocation_counter::measure(|| {
        tiny.forward_slices(&TINY_INPUT, &mut tiny_out)
            .expect("right lengths");
        strips
            .forward_slices(&STRIPS_INPUT, &mut strips_out)
            .expect("right lengths");
    });
    eprintln!("alloc: {ALLOC}; building both layers: {built:?}; running them: {ran:?}");
    // With `alloc` each layer has four heap arrays (both weights, both biases); without, none.
    assert_eq!(built.count_total, if ALLOC { 8 } else { 0 });
    assert_eq!(ran.count_total, 0);
    assert!(tiny_out.iter().chain(&strips_out).any(|&v| v != 0.0));
}

#[test]
fn building_and_running_the_layers_fits_in_a_small_stack() {
    // Measured on x86-64 without `alloc` (the layers' arrays on the stack): 112 to 128 KiB in
    // the debug profile, 64 to 80 KiB in release; most of it the strip buffer and the layer.
    let mut strips_out = vec![f32::NAN; 16 * 16 * 64];
    let mut tiny_out = [f32::NAN; 36];
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("no_std layers, 160 KiB stack".into())
            .stack_size(160 * 1024)
            .spawn_scoped(scope, || {
                run_strips(&mut strips_out).expect("right lengths");
                run_tiny(&mut tiny_out).expect("right lengths");
            })
            .expect("spawning a thread")
            .join()
            .expect("the layers ran");
    });
    assert!(strips_out.iter().chain(&tiny_out).all(|v| v.is_finite()));
}

#[test]
fn a_network_runs_without_alloc() {
    let y = separable_no_std_test::pair_of_zeros();
    assert!(y.as_slice().iter().all(|&v| v == 0.0));
    assert_eq!(
        separable_no_std_test::Pair::PARAMS,
        separable_no_std_test::PairFirst::PARAMS + separable_no_std_test::PairSecond::PARAMS
    );
}

#[test]
fn a_baked_in_layer_runs_without_alloc() {
    // Same weights loaded by hand from the layer's own accessors: the static layer's outputs
    // must be those of a layer built by `from_pytorch` from them.
    use separable_no_std_test::Baked;
    let baked = Baked::embedded();
    let dw: Vec<f32> = baked
        .depthwise_weight()
        .iter()
        .flatten()
        .flatten()
        .copied()
        .collect();
    assert!(
        dw.iter().any(|&v| v != 0.0),
        "the baked-in weights are zero"
    );
    let input: Vec<f32> = (0..32).map(|i| (i % 5) as f32 - 2.0).collect();
    let mut output = [f32::NAN; 48];
    separable_no_std_test::run_baked(&input, &mut output).unwrap();
    let x = Tensor::<4, 4, 2>::from_hwc(&input).unwrap();
    assert_eq!(baked.forward(&x).as_slice(), &output[..]);
    assert!(output.iter().all(|v| v.is_finite()));
    assert!(separable_no_std_test::run_baked(&input[1..], &mut output).is_err());
}

//! The MobileNet v1 layers of the shared anchor benchmark, timed the same way as the anchors
//! (XNNPACK, oneDNN, ONNX Runtime, tract, candle) so our rows can join their table.
//!
//! ```text
//! cargo bench --bench anchors -- <data dir> [tag]
//! ```
//! `<data dir>` holds `<layer>_{x,wdw,wpw,ydw,y}.bin` (little-endian f32; x HWC, wdw
//! `[3][3][C]`, wpw `[C][OUT]`, references `ydw` and `y`). Prints
//! `anchor,layer,part,median_us,min_us,gflops` rows on stdout (part = dw | pw | full, and with
//! the `rayon` feature and more than one core, parallel: `forward_into_parallel` on every core),
//! and the largest error against the references on stderr (stopping if it is above 1e-4 of
//! the largest reference value, the harness's bound for its anchors). Timing: warm-up `WARM_S`
//! (0.15 s), then per-call times for `MEAS_S` (0.5 s) and at least `MIN_ITER` (15) calls;
//! median and min.
//! `ISA=avx512|avx2|portable` forces one instruction set (default: the one `Isa::detect`
//! picks), so the paths a CPU without AVX-512 would run can be timed in the same session.
//! `ACTIVATION=relu6` times the same layers declared with `activation: relu6`, against the
//! references `<layer>_{ydw,y}_relu6.bin` that `scripts/activation_anchors.py` writes.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use separable::{Isa, Layer, Tensor, separable_conv};

separable_conv! { struct Seed { input: 5 x 5 x 3, output: 4, padding: same } }
separable_conv! { struct Mb1 { input: 112 x 112 x 32, output: 64, padding: same } }
separable_conv! { struct Mb2 { input: 112 x 112 x 64, output: 128, stride: 2, padding: same } }
separable_conv! { struct Mb3 { input: 56 x 56 x 128, output: 128, padding: same } }
separable_conv! { struct Mb5 { input: 28 x 28 x 256, output: 256, padding: same } }
separable_conv! { struct Mb7 { input: 14 x 14 x 512, output: 512, padding: same } }
separable_conv! { struct Mb13 { input: 7 x 7 x 1024, output: 1024, padding: same } }

separable_conv! {
    struct SeedRelu6 { input: 5 x 5 x 3, output: 4, padding: same, activation: relu6 }
}
separable_conv! {
    struct Mb1Relu6 { input: 112 x 112 x 32, output: 64, padding: same, activation: relu6 }
}
separable_conv! {
    struct Mb2Relu6 {
        input: 112 x 112 x 64, output: 128, stride: 2, padding: same, activation: relu6
    }
}
separable_conv! {
    struct Mb3Relu6 { input: 56 x 56 x 128, output: 128, padding: same, activation: relu6 }
}
separable_conv! {
    struct Mb5Relu6 { input: 28 x 28 x 256, output: 256, padding: same, activation: relu6 }
}
separable_conv! {
    struct Mb7Relu6 { input: 14 x 14 x 512, output: 512, padding: same, activation: relu6 }
}
separable_conv! {
    struct Mb13Relu6 { input: 7 x 7 x 1024, output: 1024, padding: same, activation: relu6 }
}

struct Config {
    isa: Isa,
    warm: Duration,
    measure: Duration,
    min_iter: usize,
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Median and minimum seconds per call.
fn time(config: &Config, mut f: impl FnMut()) -> (f64, f64) {
    let start = Instant::now();
    while start.elapsed() < config.warm {
        f();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < config.measure || samples.len() < config.min_iter {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0])
}

fn max_rel_error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1e-30);
    got.iter()
        .zip(want)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs() / scale)
        .fold(0.0, f64::max)
}

/// Times layer `name` from the files in `dir`, its references those named with `refs` after
/// `ydw` and `y` (`""`, or `"_relu6"` for the layers with that activation).
fn bench<L>(name: &str, dir: &Path, tag: &str, refs: &str, config: &Config)
where
    L: Layer<Elem = f32> + Forward,
{
    let [h, w, c] = L::SPEC.input;
    let file = |what: &str| dir.join(format!("{name}_{what}.bin"));
    if !file("x").exists() {
        return;
    }
    let x = read_f32(&file("x"));
    let wdw = read_f32(&file("wdw"));
    let wpw = read_f32(&file("wpw"));
    let ydw_ref = read_f32(&file(&format!("ydw{refs}")));
    let y_ref = read_f32(&file(&format!("y{refs}")));
    assert_eq!(x.len(), h * w * c, "{name}: input size");
    let layer = L::from_hwc_weights(&wdw, &wpw);
    let isa = config.isa;
    let (mut input, mut depthwise, mut output) = L::buffers();
    L::fill(&mut input, &x);
    L::fill_depthwise(&mut depthwise, &ydw_ref);
    let shape = L::SHAPE;
    let flops = |macs: usize| 2.0 * macs as f64;
    let anchor = format!("separable{tag}");

    layer.run_depthwise(isa, &input, &mut depthwise);
    let dw_err = max_rel_error(L::depthwise_slice(&depthwise), &ydw_ref);
    L::fill_depthwise(&mut depthwise, &ydw_ref);
    layer.run_pointwise(isa, &depthwise, &mut output);
    let pw_err = max_rel_error(L::output_slice(&output), &y_ref);
    layer.run_forward(isa, &input, &mut output);
    let full_err = max_rel_error(L::output_slice(&output), &y_ref);
    eprintln!(
        "{anchor} {name}: max error / max |ref|: dw {dw_err:.2e}, pw {pw_err:.2e}, full {full_err:.2e}"
    );
    // The harness's bound for its anchors.
    assert!(
        dw_err.max(pw_err).max(full_err) <= 1e-4,
        "{anchor} {name}: the outputs do not match the references"
    );

    let row = |part: &str, macs: usize, (median, min): (f64, f64)| {
        println!(
            "{anchor},{name},{part},{:.2},{:.2},{:.2}",
            median * 1e6,
            min * 1e6,
            flops(macs) / median / 1e9
        );
    };
    row(
        "dw",
        shape.depthwise_macs,
        time(config, || {
            layer.run_depthwise(isa, black_box(&input), &mut depthwise);
        }),
    );
    L::fill_depthwise(&mut depthwise, &ydw_ref);
    row(
        "pw",
        shape.pointwise_macs,
        time(config, || {
            layer.run_pointwise(isa, black_box(&depthwise), &mut output);
        }),
    );
    row(
        "full",
        shape.macs,
        time(config, || {
            layer.run_forward(isa, black_box(&input), &mut output);
        }),
    );
    // Only where there is more than one core to spread over (not under `taskset -c 1`).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cfg!(feature = "rayon") && isa == Isa::detect() && cores > 1 {
        row(
            "parallel",
            shape.macs,
            time(config, || {
                layer.run_forward_parallel(black_box(&input), &mut output);
            }),
        );
    }
}

/// What the bench needs of a layer beyond `Layer`: buffers and `_into` calls.
trait Forward: Layer<Elem = f32> {
    fn from_hwc_weights(wdw: &[f32], wpw: &[f32]) -> Self;
    fn buffers() -> (Self::Input, Self::Depthwise, Self::Output);
    fn fill(input: &mut Self::Input, values: &[f32]);
    fn fill_depthwise(depthwise: &mut Self::Depthwise, values: &[f32]);
    fn depthwise_slice(depthwise: &Self::Depthwise) -> &[f32];
    fn output_slice(output: &Self::Output) -> &[f32];
    fn run_depthwise(&self, isa: Isa, input: &Self::Input, out: &mut Self::Depthwise);
    fn run_pointwise(&self, isa: Isa, depthwise: &Self::Depthwise, out: &mut Self::Output);
    fn run_forward(&self, isa: Isa, input: &Self::Input, out: &mut Self::Output);
    fn run_forward_parallel(&self, input: &Self::Input, out: &mut Self::Output);
}

macro_rules! forward {
    ($($layer:ident)*) => {$(
        impl Forward for $layer {
            fn from_hwc_weights(wdw: &[f32], wpw: &[f32]) -> Self {
                let mut layer = $layer::zeroed();
                layer.depthwise_weight_mut().as_flattened_mut().as_flattened_mut().copy_from_slice(wdw);
                layer.pointwise_weight_mut().copy_from_rows(wpw).expect("pointwise weights");
                layer
            }
            fn buffers() -> (Self::Input, Self::Depthwise, Self::Output) {
                (Tensor::zeros(), Tensor::zeros(), Tensor::zeros())
            }
            fn fill(input: &mut Self::Input, values: &[f32]) {
                input.as_mut_slice().copy_from_slice(values);
            }
            fn fill_depthwise(depthwise: &mut Self::Depthwise, values: &[f32]) {
                depthwise.as_mut_slice().copy_from_slice(values);
            }
            fn depthwise_slice(depthwise: &Self::Depthwise) -> &[f32] {
                depthwise.as_slice()
            }
            fn output_slice(output: &Self::Output) -> &[f32] {
                output.as_slice()
            }
            fn run_depthwise(&self, isa: Isa, input: &Self::Input, out: &mut Self::Depthwise) {
                self.depthwise_into_with(isa, input, out);
            }
            fn run_pointwise(&self, isa: Isa, depthwise: &Self::Depthwise, out: &mut Self::Output) {
                self.pointwise_into_with(isa, depthwise, out);
            }
            fn run_forward(&self, isa: Isa, input: &Self::Input, out: &mut Self::Output) {
                self.forward_into_with(isa, input, out);
            }
            fn run_forward_parallel(&self, input: &Self::Input, out: &mut Self::Output) {
                self.forward_into_parallel(input, out);
            }
        }
    )*};
}
forward!(Seed Mb1 Mb2 Mb3 Mb5 Mb7 Mb13 SeedRelu6 Mb1Relu6 Mb2Relu6 Mb3Relu6 Mb5Relu6 Mb7Relu6 Mb13Relu6);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = args.first().map_or_else(
        || PathBuf::from(std::env::var("ANCHORS_DATA").unwrap_or_else(|_| "build/data".into())),
        PathBuf::from,
    );
    let tag = args.get(1).map(|t| format!("-{t}")).unwrap_or_default();
    let isa = match std::env::var("ISA").as_deref() {
        Ok("avx512") => Isa::Avx512,
        Ok("avx2") => Isa::Avx2,
        Ok("portable") => Isa::Portable,
        Ok(other) if !other.is_empty() => panic!("ISA={other}: expected avx512, avx2 or portable"),
        _ => Isa::detect(),
    };
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    let config = Config {
        isa,
        warm: Duration::from_secs_f64(env_f64("WARM_S", 0.15)),
        measure: Duration::from_secs_f64(env_f64("MEAS_S", 0.5)),
        min_iter: env_usize("MIN_ITER", 15),
    };
    let layers = std::env::var("LAYERS").unwrap_or_default();
    let want = |name: &str| layers.is_empty() || layers.split([' ', ',']).any(|l| l == name);
    macro_rules! run {
        ($refs:literal: $($name:literal $layer:ident)*) => {$(
            if want($name) {
                bench::<$layer>($name, &dir, &tag, $refs, &config);
            }
        )*};
    }
    match std::env::var("ACTIVATION").as_deref() {
        Ok("relu6") => {
            run!("_relu6": "seed" SeedRelu6 "mb1" Mb1Relu6 "mb2" Mb2Relu6 "mb3" Mb3Relu6
                "mb5" Mb5Relu6 "mb7" Mb7Relu6 "mb13" Mb13Relu6);
        }
        Ok(other) if !other.is_empty() && other != "none" => {
            panic!("ACTIVATION={other}: expected relu6 or none")
        }
        _ => {
            run!("": "seed" Seed "mb1" Mb1 "mb2" Mb2 "mb3" Mb3 "mb5" Mb5 "mb7" Mb7 "mb13" Mb13);
        }
    }
}

//! The 13 depthwise-separable blocks of MobileNet v1 (width 1.0, 224 x 224 input), chained
//! with compile-time shapes.
//!
//! MobileNet v1 is a standard 3 x 3 convolution (224 x 224 x 3 -> 112 x 112 x 32, stride 2),
//! then 13 depthwise-separable blocks (112 x 112 x 32 -> 7 x 7 x 1024), then average pooling and
//! a classifier. The blocks are declared here as in the paper: 3 x 3 depthwise with TensorFlow
//! `SAME` padding, BatchNorm folded into a bias after each stage (`bias: both`) and ReLU after
//! each stage. The weights are deterministic pseudo-random numbers scaled as in He
//! initialisation, so the activations stay of order one through the 13 blocks.
//!
//! The 13 blocks are one `separable_net!` declaration: the shared keys once as defaults, each
//! block's output channels and stride, every block's input computed from the one before. For
//! every block the example prints its shapes, stride, parameter and multiply-add counts (read
//! from the generated constants) and the median time of `forward`; then it runs the 13 blocks as
//! one call (`Body::forward`) and checks the first two blocks against the plain reference kernels
//! (`separable::reference`) on the same PyTorch-layout weights, failing if they disagree.
//!
//! Then it declares the MobileNet v1 0.25 body of `scripts/export_pytorch.py` the same way,
//! loads its folded weights from `tests/data/mobilenet_v1_025_folded.safetensors` at run time,
//! prints its summary, runs it on PyTorch's input from `tests/data/mobilenet_v1_025_io.safetensors`
//! and prints (and checks) the largest difference from PyTorch's output.
//!
//! ```text
//! cargo run --release --example mobilenet_v1
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use separable::{Layer, PytorchWeights, SafetensorsFile, Tensor, reference, separable_net};

separable_net! {
    /// The 13 blocks. Each block's input is the previous block's output, computed by the macro,
    /// so the blocks fit together by construction and `Body::forward` chains them.
    pub struct Body {
        input: 112 x 112 x 32,
        defaults: { kernel: 3, padding: same, bias: both, activation: relu },
        blocks: {
            /// Block 1: 112 x 112, 32 -> 64 channels.
            b1: Block1 { output: 64 },
            /// Block 2: 112 x 112 -> 56 x 56, 64 -> 128 channels.
            b2: Block2 { output: 128, stride: 2 },
            /// Block 3: 56 x 56, 128 -> 128 channels.
            b3: Block3 { output: 128 },
            /// Block 4: 56 x 56 -> 28 x 28, 128 -> 256 channels.
            b4: Block4 { output: 256, stride: 2 },
            /// Block 5: 28 x 28, 256 -> 256 channels.
            b5: Block5 { output: 256 },
            /// Block 6: 28 x 28 -> 14 x 14, 256 -> 512 channels.
            b6: Block6 { output: 512, stride: 2 },
            /// Blocks 7 to 11: 14 x 14, 512 -> 512 channels.
            b7: Block7 { output: 512 },
            b8: Block8 { output: 512 },
            b9: Block9 { output: 512 },
            b10: Block10 { output: 512 },
            b11: Block11 { output: 512 },
            /// Block 12: 14 x 14 -> 7 x 7, 512 -> 1024 channels.
            b12: Block12 { output: 1024, stride: 2 },
            /// Block 13: 7 x 7, 1024 -> 1024 channels.
            b13: Block13 { output: 1024 },
        }
    }
}

separable_net! {
    /// The MobileNet v1 0.25 body that `scripts/export_pytorch.py` exports, on a 32 x 32 x 8
    /// input: PyTorch's `padding=1` (at stride 2 not TensorFlow's `same`), BatchNorm folded into
    /// both stages. `from_safetensors(bytes, "features.")` reads block `k` from `features.k.`,
    /// as PyTorch's `nn.Sequential` names it.
    pub struct Quarter {
        input: 32 x 32 x 8,
        defaults: { kernel: 3, padding: 1, bias: both, activation: relu },
        blocks: {
            b0: Quarter0 { output: 16 },
            b1: Quarter1 { output: 32, stride: 2 },
            b2: Quarter2 { output: 32 },
            b3: Quarter3 { output: 64, stride: 2 },
            b4: Quarter4 { output: 64 },
            b5: Quarter5 { output: 128, stride: 2 },
            b6: Quarter6 { output: 128 },
            b7: Quarter7 { output: 128 },
            b8: Quarter8 { output: 128 },
            b9: Quarter9 { output: 128 },
            b10: Quarter10 { output: 128 },
            b11: Quarter11 { output: 256, stride: 2 },
            b12: Quarter12 { output: 256 },
        }
    }
}

impl Body {
    /// Every block with its own pseudo-random weights; block `i` uses seed `i`.
    fn random() -> Result<Body, separable::Error> {
        Ok(Body {
            b1: random_layer(1)?,
            b2: random_layer(2)?,
            b3: random_layer(3)?,
            b4: random_layer(4)?,
            b5: random_layer(5)?,
            b6: random_layer(6)?,
            b7: random_layer(7)?,
            b8: random_layer(8)?,
            b9: random_layer(9)?,
            b10: random_layer(10)?,
            b11: random_layer(11)?,
            b12: random_layer(12)?,
            b13: random_layer(13)?,
        })
    }
}

/// The safetensors files `scripts/export_pytorch.py` writes: the folded weights, and PyTorch's
/// input and outputs (NCHW).
const WEIGHTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/mobilenet_v1_025_folded.safetensors"
);
const IO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/mobilenet_v1_025_io.safetensors"
);

/// Largest accepted `max |ours - PyTorch|` after the 13 blocks of the 0.25 body. One block
/// agrees to about 1e-6, but chained, float32 rounding is amplified from block to block
/// (BatchNorm folded after a depthwise stage scales small differences up): PyTorch's own
/// float32 output is 2.2e-3 from the float64 result of the same weights (`tests/net.rs`).
const QUARTER_TOLERANCE: f64 = 5e-3;

/// Timed runs of each block; the median is printed.
const RUNS: usize = 7;

/// Largest accepted `max |difference| / max |reference|` against the reference kernels.
const TOLERANCE: f64 = 1e-3;

fn main() -> Result<(), Box<dyn Error>> {
    let body = Body::random()?;
    // The input of block 1: the first convolution's output after ReLU, so non-negative.
    let mut rng = Rng(0);
    let x = Tensor::<112, 112, 32>::from_fn(|_, _, _| rng.next().abs());

    println!(
        "MobileNet v1 1.0, the 13 depthwise-separable blocks (f32, batch 1, median of {RUNS} runs)\n"
    );
    println!(
        "{:<7}{:<12}{:>12}    {:<12}{:>7}{:>11}{:>13}{:>11}",
        "block", "type", "input", "output", "stride", "params", "MACs", "time"
    );
    let mut totals = Totals::default();
    let y1 = run("1", &body.b1, &x, &mut totals);
    let y2 = run("2", &body.b2, &y1, &mut totals);
    let y = run("3", &body.b3, &y2, &mut totals);
    let y = run("4", &body.b4, &y, &mut totals);
    let y = run("5", &body.b5, &y, &mut totals);
    let y = run("6", &body.b6, &y, &mut totals);
    let y = run("7", &body.b7, &y, &mut totals);
    let y = run("8", &body.b8, &y, &mut totals);
    let y = run("9", &body.b9, &y, &mut totals);
    let y = run("10", &body.b10, &y, &mut totals);
    let y = run("11", &body.b11, &y, &mut totals);
    let y = run("12", &body.b12, &y, &mut totals);
    let y13 = run("13", &body.b13, &y, &mut totals);
    println!(
        "{:<7}{:<12}{:>12} -> {:<12}{:>7}{:>11}{:>13}{:>11}",
        "total",
        "",
        shape_text(Body::INPUT_SHAPE),
        shape_text(Body::OUTPUT_SHAPE),
        "",
        grouped(Body::PARAMS),
        grouped(Body::MACS),
        millis(totals.time),
    );
    // The network's constants are the sums of its blocks'.
    let sums = [
        totals.params,
        totals.macs,
        totals.standard_params,
        totals.standard_macs,
    ];
    let net = [
        Body::PARAMS,
        Body::MACS,
        Body::STANDARD_PARAMS,
        Body::STANDARD_MACS,
    ];
    if sums != net {
        return Err(format!("Body's counts {net:?} differ from the blocks' sums {sums:?}").into());
    }

    let ratio = |a: usize, b: usize| a as f64 / b as f64;
    println!(
        "\nstandard 3 x 3 convolutions in place of the blocks: {} params, {} MACs ({:.1}x and {:.1}x more)",
        grouped(Body::STANDARD_PARAMS),
        grouped(Body::STANDARD_MACS),
        ratio(Body::STANDARD_PARAMS, Body::PARAMS),
        ratio(Body::STANDARD_MACS, Body::MACS),
    );

    // The 13 blocks as one call: the same result as the block-by-block runs above.
    let mut times = Vec::with_capacity(RUNS);
    let mut whole = Tensor::zeros();
    for _ in 0..RUNS {
        let start = Instant::now();
        whole = body.forward(&x);
        times.push(start.elapsed());
    }
    println!(
        "Body::forward, all 13 blocks: {}",
        millis(median(&mut times))
    );
    if whole != y13 {
        return Err("Body::forward differs from the block-by-block runs".into());
    }
    let values = whole.as_slice();
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
    let max = values.iter().fold(0.0f32, |m, &v| m.max(v));
    println!("output 7 x 7 x 1024: mean {mean:.3}, max {max:.3}\n");

    check::<Block1>(1, &x, &y1)?;
    check::<Block2>(2, &y1, &y2)?;

    quarter()
}

/// The MobileNet v1 0.25 body with PyTorch's trained-and-folded weights, loaded at run time,
/// against PyTorch's output.
fn quarter() -> Result<(), Box<dyn Error>> {
    let weights = std::fs::read(WEIGHTS)?;
    let net = Quarter::from_safetensors(&weights, "features.")?;
    println!("\nMobileNet v1 0.25 body from {WEIGHTS}:\n\n{net}\n");

    let io = std::fs::read(IO)?;
    let io = SafetensorsFile::parse(&io)?;
    let x = Tensor::<32, 32, 8>::from_chw(&io.read::<f32>("input")?)?;
    let want = io.read::<f32>("features.12.output")?;
    let start = Instant::now();
    let y = net.forward(&x);
    let time = start.elapsed();
    let diff = y
        .to_chw()
        .iter()
        .zip(&want)
        .map(|(&a, &b)| f64::from((a - b).abs()))
        .fold(
            0.0,
            |m: f64, d| if d.is_nan() { f64::NAN } else { m.max(d) },
        );
    println!(
        "Quarter::forward on PyTorch's input: {}, max |ours - PyTorch| {diff:.2e} over {} outputs",
        millis(time),
        want.len()
    );
    if want.len() == y.as_slice().len() && diff <= QUARTER_TOLERANCE {
        Ok(())
    } else {
        Err(format!("the 0.25 body differs from PyTorch by {diff:e}").into())
    }
}

/// Runs `layer` [`RUNS`] times on `input`, prints its row of the table and returns the output.
fn run<L: Layer>(block: &str, layer: &L, input: &L::Input, totals: &mut Totals) -> L::Output {
    let mut times = Vec::with_capacity(RUNS);
    let mut output = layer.forward(input);
    for _ in 0..RUNS {
        let start = Instant::now();
        output = layer.forward(input);
        times.push(start.elapsed());
    }
    let time = median(&mut times);
    let shape = &L::SHAPE;
    println!(
        "{block:<7}{:<12}{:>12} -> {:<12}{:>7}{:>11}{:>13}{:>11}",
        L::NAME,
        shape_text(shape.input),
        shape_text(shape.output),
        L::SPEC.stride[0],
        grouped(shape.params),
        grouped(shape.macs),
        millis(time),
    );
    totals.params += shape.params;
    totals.macs += shape.macs;
    totals.standard_params += shape.standard_params;
    totals.standard_macs += shape.standard_macs;
    totals.time += time;
    output
}

/// Sums over the blocks.
#[derive(Default)]
struct Totals {
    params: usize,
    macs: usize,
    standard_params: usize,
    standard_macs: usize,
    time: Duration,
}

/// Compares a block's output with `separable::reference::forward` on the same input and the
/// same PyTorch-layout weights (regenerated from the block's seed).
fn check<L>(seed: u64, input: &L::Input, output: &L::Output) -> Result<(), Box<dyn Error>>
where
    L: Layer<Elem = f32>,
    L::Input: AsRef<[f32]>,
    L::Output: AsRef<[f32]>,
{
    let w = pytorch_weights::<L>(seed);
    let want = reference::forward(
        &L::SPEC,
        input.as_ref(),
        &w.depthwise_weight,
        w.depthwise_bias.as_deref(),
        &w.pointwise_weight,
        w.pointwise_bias.as_deref(),
        [L::DEPTHWISE_ACTIVATION, L::POINTWISE_ACTIVATION],
    )?;
    let got = output.as_ref();
    let mut diff = 0.0f64;
    for (&g, &r) in got.iter().zip(&want) {
        let d = f64::from((g - r).abs());
        // NaN anywhere makes the comparison fail.
        if d > diff || d.is_nan() {
            diff = d;
        }
    }
    let scale = want.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let relative = diff / f64::from(scale);
    println!(
        "block {seed} ({}) vs reference::forward: max |difference| {diff:.2e}, relative to max |value| {scale:.2}: {relative:.2e}",
        L::NAME
    );
    if got.len() == want.len() && relative <= TOLERANCE {
        Ok(())
    } else {
        Err(format!("block {seed} differs from the reference: relative {relative:e}").into())
    }
}

/// A block with pseudo-random weights from [`pytorch_weights`].
fn random_layer<L: Layer<Elem = f32>>(seed: u64) -> Result<L, separable::Error> {
    let w = pytorch_weights::<L>(seed);
    let (dw, dw_bias, pw, pw_bias) = w.as_slices();
    L::from_pytorch(dw, dw_bias, pw, pw_bias)
}

/// Deterministic weights in PyTorch's layouts (`[C, 1, 3, 3]`, `[N, C, 1, 1]`), uniform with
/// the variance `2 / fan_in` of He initialisation; biases (folded BatchNorm) in `[-0.1, 0.1)`.
fn pytorch_weights<L: Layer<Elem = f32>>(seed: u64) -> PytorchWeights<f32> {
    let spec = L::SPEC;
    let shape = L::SHAPE;
    let channels = shape.depthwise[2];
    let taps = spec.kernel[0] * spec.kernel[1];
    // Uniform on [-a, a) has variance a^2 / 3.
    let he = |fan_in: usize| (6.0 / fan_in as f32).sqrt();
    let mut rng = Rng(seed);
    let mut values =
        |len: usize, scale: f32| -> Vec<f32> { (0..len).map(|_| rng.next() * scale).collect() };
    PytorchWeights {
        depthwise_weight: values(shape.depthwise_weights, he(taps)),
        depthwise_bias: Some(values(channels, 0.1)).filter(|_| spec.bias.depthwise()),
        pointwise_weight: values(shape.pointwise_weights, he(channels)),
        pointwise_bias: Some(values(spec.output_channels, 0.1)).filter(|_| spec.bias.pointwise()),
    }
}

/// `SplitMix64`: deterministic pseudo-random numbers, enough for example data.
struct Rng(u64);

impl Rng {
    /// Uniform in `[-1, 1)`.
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 24 bits give every f32 in [0, 1) with spacing 2^-24.
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn millis(time: Duration) -> String {
    format!("{:.2} ms", time.as_secs_f64() * 1e3)
}

fn shape_text([h, w, c]: [usize; 3]) -> String {
    format!("{h}x{w}x{c}")
}

/// `3195136` as `3,195,136`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

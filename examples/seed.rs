//! The seed layer: a 3 x 3 depthwise-separable convolution from 5 x 5 x 3 to 4 channels.
//!
//! Prints the layer's parameter and multiply-add counts next to those of a standard 3 x 3
//! convolution (all read from the constants `separable_conv!` generates), the output shapes of
//! `padding: same` and `padding: valid`, checks both layers against the plain reference kernels
//! (`separable::reference`) on pseudo-random data, and shows that the depthwise stage keeps the
//! channels apart while the pointwise stage mixes them.
//!
//! ```text
//! cargo run --release --example seed
//! ```

use separable::{Tensor, reference, separable_conv};

separable_conv! {
    /// The seed layer, TensorFlow `SAME` padding: the output keeps the 5 x 5 grid.
    pub struct Seed { input: 5 x 5 x 3, output: 4, kernel: 3 x 3, padding: same }
}

separable_conv! {
    /// The same layer without padding: the window only visits the 3 x 3 positions it fits.
    pub struct SeedValid { input: 5 x 5 x 3, output: 4, kernel: 3 x 3, padding: valid }
}

/// Largest accepted difference to the reference kernels.
const TOLERANCE: f64 = 1e-5;

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

    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next()).collect()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let [h, w, c] = Seed::INPUT_SHAPE;
    let [kh, kw] = Seed::SPEC.kernel;
    let n = Seed::SPEC.output_channels;
    let [oh, ow, _] = Seed::OUTPUT_SHAPE;
    println!("Seed: {h} x {w} x {c} -> {oh} x {ow} x {n}, {kh} x {kw} kernel, padding same\n");

    let row = |label: String, params: usize, macs: usize| {
        println!("{label:<32}{params:>8}{macs:>8}");
    };
    println!("{:<32}{:>8}{:>8}", "", "params", "MACs");
    row(
        format!("standard {kh} x {kw} convolution"),
        Seed::STANDARD_PARAMS,
        Seed::STANDARD_MACS,
    );
    row(
        format!("  depthwise {kh} x {kw}, per channel"),
        Seed::DEPTHWISE_PARAMS,
        Seed::SHAPE.depthwise_macs,
    );
    row(
        format!("  pointwise 1 x 1, {c} -> {n}"),
        Seed::POINTWISE_PARAMS,
        Seed::SHAPE.pointwise_macs,
    );
    row("separable total".into(), Seed::PARAMS, Seed::MACS);
    let ratio = |a: usize, b: usize| a as f64 / b as f64;
    println!(
        "{:<32}{:>8.3}{:>8.3}",
        "separable / standard",
        ratio(Seed::PARAMS, Seed::STANDARD_PARAMS),
        ratio(Seed::MACS, Seed::STANDARD_MACS)
    );
    println!(
        "without biases both ratios are 1/N + 1/(KH·KW) = 1/{n} + 1/{} = {:.3}\n",
        kh * kw,
        ratio(1, n) + ratio(1, kh * kw)
    );

    for (name, padding, shape, rows) in [
        ("Seed", "same", Seed::OUTPUT_SHAPE, Seed::SHAPE.rows),
        (
            "SeedValid",
            "valid",
            SeedValid::OUTPUT_SHAPE,
            SeedValid::SHAPE.rows,
        ),
    ] {
        let [oh, ow, n] = shape;
        println!(
            "{name:<10} padding {padding:<5} -> output {oh} x {ow} x {n} (zero padding: {} before, {} after)",
            rows.pad_before, rows.pad_after
        );
    }
    println!();

    // Weights in PyTorch's layouts: depthwise [3, 1, 3, 3], pointwise [4, 3, 1, 1].
    let mut rng = Rng(5);
    let dw = rng.vec(Seed::SHAPE.depthwise_weights);
    let pw = rng.vec(Seed::SHAPE.pointwise_weights);
    let x = Tensor::<5, 5, 3>::from_hwc(&rng.vec(Seed::SHAPE.input_len))?;
    let activations = [Seed::DEPTHWISE_ACTIVATION, Seed::POINTWISE_ACTIVATION];

    let seed = Seed::from_pytorch(&dw, None, &pw, None)?;
    let want = reference::forward(&Seed::SPEC, x.as_slice(), &dw, None, &pw, None, activations)?;
    check(
        "Seed",
        seed.forward(&x).max_abs_diff(&Tensor::from_hwc(&want)?),
    )?;

    let valid = SeedValid::from_pytorch(&dw, None, &pw, None)?;
    let want = reference::forward(
        &SeedValid::SPEC,
        x.as_slice(),
        &dw,
        None,
        &pw,
        None,
        activations,
    )?;
    check(
        "SeedValid",
        valid.forward(&x).max_abs_diff(&Tensor::from_hwc(&want)?),
    )?;

    // The depthwise stage filters each channel on its own; only the pointwise stage mixes them.
    let only_channel_0 =
        Tensor::<5, 5, 3>::from_fn(|h, w, c| if c == 0 { x[(h, w, 0)] } else { 0.0 });
    let depthwise = seed.depthwise(&only_channel_0);
    let output = seed.pointwise(&depthwise);
    println!("\ninput nonzero only in channel 0; largest |value| per channel:");
    let dw_peaks = channel_peaks(depthwise.as_slice(), 3);
    let pw_peaks = channel_peaks(output.as_slice(), 4);
    println!("  after depthwise: {dw_peaks:.3?}");
    println!("  after pointwise: {pw_peaks:.3?}");
    if dw_peaks[0] == 0.0 || dw_peaks[1..].iter().any(|&p| p != 0.0) {
        return Err("the depthwise stage mixed channels".into());
    }
    if pw_peaks.contains(&0.0) {
        return Err("the pointwise stage left an output channel empty".into());
    }
    Ok(())
}

/// Prints the largest difference to the reference and fails above [`TOLERANCE`] (or on NaN).
fn check(name: &str, diff: f64) -> Result<(), String> {
    println!("{name:<10} forward vs reference::forward: max |difference| = {diff:.2e}");
    if diff <= TOLERANCE {
        Ok(())
    } else {
        Err(format!(
            "{name} differs from the reference by {diff:e} (tolerance {TOLERANCE:e})"
        ))
    }
}

/// The largest absolute value of each channel of an HWC slice with `channels` channels.
fn channel_peaks(hwc: &[f32], channels: usize) -> Vec<f32> {
    let mut peaks = vec![0.0f32; channels];
    for pixel in hwc.chunks_exact(channels) {
        for (peak, &v) in peaks.iter_mut().zip(pixel) {
            *peak = peak.max(v.abs());
        }
    }
    peaks
}

//! A short, deterministic workload for memory checkers: the seed layer and one MobileNet v1
//! layer through every entry point and every instruction set the CPU reports, each result
//! compared with `separable::reference::forward`. Exits with an error on any mismatch.
//!
//! `.ci/run` runs it under valgrind's memcheck (see DEVELOPMENT.md):
//!
//! ```text
//! cargo build --release --example memcheck
//! valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
//!     target/release/examples/memcheck
//! ```
//!
//! Which paths valgrind checks: it emulates the CPU and reports (through CPUID) the instruction
//! sets it can emulate. Current valgrind emulates AVX2 and FMA but not AVX-512, so under
//! valgrind `Isa::Avx512.is_supported()` is false and this program runs the `Portable` and
//! `Avx2` kernels (and the unrolled seed, which is the same code on every instruction set); the
//! AVX-512 kernels' memory accesses are checked only by the tests (natively, against the
//! slice bounds they assert). Run natively, the program also exercises `Avx512` if the CPU
//! has it.

use separable::{Isa, Layer, Tensor, reference, separable_conv};

separable_conv! {
    /// The seed layer of the README (unrolled).
    struct Seed { input: 5 x 5 x 3, output: 4, kernel: 3 x 3, padding: same }
}

separable_conv! {
    /// MobileNet v1, block 5 (strips, interior runs and border loops, AVX kernels).
    struct Block5 {
        input: 28 x 28 x 256, output: 256, padding: same, bias: both, activation: relu
    }
}

/// `|got - want| <= TOLERANCE * max(1, |want|)`; the weights are scaled by their fan-in so values
/// stay near 1, and `f32` sums of a few hundred terms round far below this.
const TOLERANCE: f64 = 1e-4;

/// `SplitMix64`, uniform in `[-1, 1)`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.next() * scale).collect()
    }
}

/// The largest `|got - want| / max(1, |want|)`, NaN if any value is NaN.
fn scaled_diff(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).fold(0.0, |worst: f64, (&g, &w)| {
        let d = (f64::from(g) - f64::from(w)).abs() / f64::from(w).abs().max(1.0);
        if d.is_nan() || worst.is_nan() {
            f64::NAN
        } else {
            worst.max(d)
        }
    })
}

/// Runs `L` every way it can run and compares each output with the reference kernels.
fn check<
    L,
    const H: usize,
    const W: usize,
    const C: usize,
    const OH: usize,
    const OW: usize,
    const CM: usize,
    const N: usize,
>(
    seed: u64,
) -> Result<(), String>
where
    L: Layer<
            Elem = f32,
            Input = Tensor<H, W, C>,
            Depthwise = Tensor<OH, OW, CM>,
            Output = Tensor<OH, OW, N>,
        >,
{
    let spec = L::SPEC;
    let mut rng = Rng(seed);
    let taps = spec.kernel[0] * spec.kernel[1];
    let dw = rng.vec(taps * CM, 1.0 / (taps as f32).sqrt());
    let dw_bias = spec.bias.depthwise().then(|| rng.vec(CM, 0.1));
    let pw = rng.vec(N * CM, 1.0 / (CM as f32).sqrt());
    let pw_bias = spec.bias.pointwise().then(|| rng.vec(N, 0.1));
    let x = rng.vec(H * W * C, 1.0);
    let activations = [L::DEPTHWISE_ACTIVATION, L::POINTWISE_ACTIVATION];
    let (dwb, pwb) = (dw_bias.as_deref(), pw_bias.as_deref());

    let layer = L::from_pytorch(&dw, dwb, &pw, pwb).map_err(|e| e.to_string())?;
    let want = reference::forward(&spec, &x, &dw, dwb, &pw, pwb, activations)
        .map_err(|e| e.to_string())?;
    let want_dw =
        reference::depthwise(&spec, &x, &dw, dwb, activations[0]).map_err(|e| e.to_string())?;
    let input = Tensor::<H, W, C>::from_hwc(&x).map_err(|e| e.to_string())?;

    let mut results: Vec<(String, f64)> = Vec::new();
    results.push((
        "forward".into(),
        scaled_diff(layer.forward(&input).as_slice(), &want),
    ));
    let mut out = Tensor::<OH, OW, N>::filled(f32::NAN);
    layer.forward_into(&input, &mut out);
    results.push(("forward_into".into(), scaled_diff(out.as_slice(), &want)));
    for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
        if !isa.is_supported() {
            println!("  {isa:?}: not supported here, skipped");
            continue;
        }
        let mut out = Tensor::<OH, OW, N>::filled(f32::NAN);
        layer.forward_into_with(isa, &input, &mut out);
        results.push((
            format!("forward_into_with({isa:?})"),
            scaled_diff(out.as_slice(), &want),
        ));
        let mut depthwise = Tensor::<OH, OW, CM>::filled(f32::NAN);
        layer.depthwise_into_with(isa, &input, &mut depthwise);
        results.push((
            format!("depthwise_into_with({isa:?})"),
            scaled_diff(depthwise.as_slice(), &want_dw),
        ));
        let mut out = Tensor::<OH, OW, N>::filled(f32::NAN);
        layer.pointwise_into_with(isa, &depthwise, &mut out);
        results.push((
            format!("pointwise_into_with({isa:?})"),
            scaled_diff(out.as_slice(), &want),
        ));
    }
    let mut failed = Vec::new();
    for (what, diff) in results {
        let ok = diff <= TOLERANCE;
        println!(
            "  {what:<32} max scaled |difference| {diff:.2e}{}",
            if ok { "" } else { "  FAILED" }
        );
        if !ok {
            failed.push(what);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {} differ from the reference",
            L::NAME,
            failed.join(", ")
        ))
    }
}

fn main() -> Result<(), String> {
    println!("detected instruction set: {:?}", Isa::detect());
    println!(
        "{}: {:?} -> {:?}",
        Seed::NAME,
        Seed::SHAPE.input,
        Seed::SHAPE.output
    );
    check::<Seed, 5, 5, 3, 5, 5, 3, 4>(1)?;
    println!(
        "{}: {:?} -> {:?}",
        Block5::NAME,
        Block5::SHAPE.input,
        Block5::SHAPE.output
    );
    check::<Block5, 28, 28, 256, 28, 28, 256, 256>(2)?;
    println!("all outputs match the reference");
    Ok(())
}

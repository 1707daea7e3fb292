//! The 13 depthwise-separable blocks of MobileNet v1 (as in examples/mobilenet_v1.rs) on the
//! reference kernels (`separable::reference`): the baseline of the compile-time budget in
//! tests/compile_time.rs.

use separable::{Activation, Bias, LayerSpec, Padding, reference};

/// A block: 3 x 3 depthwise, `same` padding, both biases, ReLU after each stage.
const fn block(input: [usize; 3], output: usize, stride: usize) -> LayerSpec {
    LayerSpec::new(input, output)
        .with_stride([stride, stride])
        .with_padding(Padding::Same)
        .with_bias(Bias::Both)
}

const BLOCKS: [LayerSpec; 13] = [
    block([112, 112, 32], 64, 1),
    block([112, 112, 64], 128, 2),
    block([56, 56, 128], 128, 1),
    block([56, 56, 128], 256, 2),
    block([28, 28, 256], 256, 1),
    block([28, 28, 256], 512, 2),
    block([14, 14, 512], 512, 1),
    block([14, 14, 512], 512, 1),
    block([14, 14, 512], 512, 1),
    block([14, 14, 512], 512, 1),
    block([14, 14, 512], 512, 1),
    block([14, 14, 512], 1024, 2),
    block([7, 7, 1024], 1024, 1),
];

/// `len` weights from a counter: the same for every build.
fn fill(len: usize, k: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + k + seed) % 13) as f32 / 64.0 - 0.1)
        .collect()
}

fn main() -> Result<(), separable::Error> {
    let [h, w, c] = BLOCKS[0].input;
    let mut x: Vec<f32> = (0..h * w * c)
        .map(|i| ((i / (w * c) + 2 * (i / c % w) + 3 * (i % c)) % 17) as f32 / 17.0)
        .collect();
    for (seed, spec) in (1..).zip(&BLOCKS) {
        let cm = spec.input[2] * spec.multiplier;
        let n = spec.output_channels;
        let dw = fill(cm * spec.kernel[0] * spec.kernel[1], 0, seed);
        let (db, pw, pb) = (fill(cm, 1, seed), fill(n * cm, 2, seed), fill(n, 3, seed));
        let relu = Activation::Relu;
        x = reference::forward(spec, &x, &dw, Some(&db), &pw, Some(&pb), [relu, relu])?;
    }
    println!("{}", x.iter().sum::<f32>());
    Ok(())
}

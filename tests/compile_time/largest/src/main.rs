//! The largest layers `separable_conv!` accepts: every tensor and weight array at the limit of
//! 2^32 elements or close to it, the largest kernel (255 x 255) and a dilated window spanning
//! almost 2^32 pixels. Compiled (never run) by tests/compile_time.rs.

use separable::{Layer, Tensor, separable_conv};

separable_conv! {
    /// Input, depthwise output and output of 2^32 elements each, under a 255 x 255 window.
    pub struct Largest {
        input: 65536 x 65536 x 1, output: 1, kernel: 255 x 255, padding: same,
        bias: both, activation: relu6,
    }
}

separable_conv! {
    /// The largest channel counts: 2^28 depthwise channels (2^28 x 16 packed pointwise
    /// weights = 2^32), in `f64`.
    pub struct Widest {
        input: 1 x 1 x 16777216, output: 16, kernel: 1, multiplier: 16, bias: pointwise,
        dtype: f64,
    }
}

separable_conv! {
    /// Sizes at 2^32 written in hex, and a dilated window spanning 254 x 16 909 320 + 1 =
    /// 4 294 967 281 input rows (the limit is 2^32).
    pub struct Farthest {
        input: 0x1_0000_0000 x 1 x 1, output: 1, kernel: 255 x 1, dilation: 16909320 x 1,
        padding: same,
    }
}

separable_conv! {
    /// The largest layer still unrolled position by position (64 output positions, at most
    /// 256 taps), with 2^22 channels.
    pub struct Unrolled { input: 8 x 8 x 4194304, output: 16, kernel: 2 x 2, padding: same }
}

/// Instantiates every layer's code without running it.
fn touch<L: Layer>() -> usize {
    L::SHAPE.params
}

fn main() {
    // The layers need tens of GiB; only their types and code are exercised.
    if std::env::args().count() > 1 {
        let layer = Largest::zeroed();
        let y = layer.forward(&Tensor::zeros());
        println!("{}", y.as_slice()[0]);
        println!(
            "{}",
            Widest::zeroed().forward(&Tensor::zeros()).as_slice()[0]
        );
        println!(
            "{}",
            Farthest::zeroed().forward(&Tensor::zeros()).as_slice()[0]
        );
        println!(
            "{}",
            Unrolled::zeroed().forward(&Tensor::zeros()).as_slice()[0]
        );
    }
    println!(
        "{}",
        touch::<Largest>() + touch::<Widest>() + touch::<Farthest>() + touch::<Unrolled>()
    );
}

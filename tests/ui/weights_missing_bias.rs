use separable::separable_conv;

// ui tests compile in `target/tests/trybuild/separable`, whose manifest directory the path is
// relative to.

// The raw MobileNet file has no biases (BatchNorm is not folded in it).
separable_conv! {
    pub struct Block {
        input: 32 x 32 x 8, output: 16, padding: 1, bias: both,
        weights: "../../../../tests/data/mobilenet_v1_025.safetensors", prefix: "features.0.",
    }
}

fn main() {}

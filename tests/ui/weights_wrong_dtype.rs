use separable::separable_conv;

// ui tests compile in `target/tests/trybuild/separable`, whose manifest directory the path is
// relative to.

separable_conv! {
    pub struct Block {
        input: 4 x 4 x 2, output: 3, multiplier: 2, kernel: 3 x 2, bias: both,
        weights: "../../../../tests/data/embed_dtypes.safetensors", prefix: "i64.",
    }
}

fn main() {}

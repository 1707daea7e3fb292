use separable::separable_conv;

separable_conv! {
    pub struct Seed { input: 4294967296 x 4294967296 x 3, output: 4, kernel: 1 }
}

fn main() {}

use separable::separable_conv;

separable_conv! {
    pub struct Seed { input: 65536 x 65536 x 2, output: 1, kernel: 1 }
}

fn main() {}

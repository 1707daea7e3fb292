use separable::separable_conv;

separable_conv! {
    pub struct Seed { input: 4 x 4 x 65536, output: 65537, kernel: 1 }
}

fn main() {}

use separable::separable_conv;

separable_conv! {
    pub struct Seed { input:, output: 4 }
}

fn main() {}

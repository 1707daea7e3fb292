use separable::separable_conv;

separable_conv! {
    pub struct Seed { input: 5x5x3u8, output: 4 }
}

fn main() {}

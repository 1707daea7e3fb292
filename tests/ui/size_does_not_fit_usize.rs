use separable::separable_conv;

separable_conv! {
    pub struct Seed { input: 99999999999999999999999 x 5 x 3, output: 4 }
}

fn main() {}

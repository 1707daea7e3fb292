use separable::separable_conv;

separable_conv! {
    pub struct Seed { input: 5 x 5 x 3, output: 4, kernal: 3 }
}

fn main() {}

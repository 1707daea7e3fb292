use separable::separable_conv;

separable_conv! {
    pub struct Seed { input: 5 x 4 x 3, output: 4, kernel: 3, dilation: 2 }
}

fn main() {}

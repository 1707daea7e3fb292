use separable::separable_conv;

separable_conv! {
    pub struct Seed { input: 18446744073709551615 x 2 x 3, output: 4, padding: same }
}

fn main() {}

use separable::separable_conv;

separable_conv! {
    pub struct Seed { output: 4, kernel: 3 }
}

fn main() {}

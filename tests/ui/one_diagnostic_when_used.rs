use separable::separable_conv;

separable_conv! {
    /// An invalid layer still declares its type, so uses elsewhere add no errors.
    #[derive(Clone, Debug)]
    pub struct Seed { input: 5 x 5 x 3, output: 4, stride: 0 }
}

mod user {
    pub fn f(_: &super::Seed) {}
}

fn main() {
    let _ = user::f;
}

use separable::separable_conv;

separable_conv! {
    pub struct Seed<T> { input: 5 x 5 x 3, output: 4 }
}

mod user {
    pub fn takes(_: &super::Seed) {}
}

fn main() {}

use separable::{Tensor, separable_conv};

separable_conv! {
    pub struct Seed { input: 5 x 5 x 3, output: 4, padding: same }
}

fn main() {
    let layer = Seed::zeroed();
    let x = Tensor::<5, 5, 2>::zeros();
    let _ = layer.forward(&x);
}

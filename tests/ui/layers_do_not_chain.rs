use separable::{Tensor, separable_conv};

separable_conv! {
    pub struct A { input: 5 x 5 x 3, output: 4, padding: same }
}

separable_conv! {
    pub struct B { input: 5 x 5 x 8, output: 2, padding: same }
}

fn main() {
    let (a, b) = (A::zeroed(), B::zeroed());
    let x = Tensor::<5, 5, 3>::zeros();
    let _ = b.forward(&a.forward(&x));
}

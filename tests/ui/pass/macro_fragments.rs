use separable::{Tensor, separable_conv};

// Sizes reach the macro as `expr` and `literal` fragments from another macro.
macro_rules! square_layer {
    ($name:ident, $side:expr, $channels:literal => $out:literal) => {
        separable_conv! {
            pub struct $name { input: $side x $side x $channels, output: $out, padding: same }
        }
    };
}

square_layer!(Square, 6, 2 => 3);

fn main() {
    assert_eq!(Square::INPUT_SHAPE, [6, 6, 2]);
    let _: Tensor<6, 6, 3> = Square::zeroed().forward(&Tensor::zeros());
}

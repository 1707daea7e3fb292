use separable::{Layer, Tensor, separable_conv};

separable_conv! {
    /// Sizes written without spaces lex as one literal (`5x5x3`) or as `5 x5x3`.
    #[derive(Clone, Debug)]
    pub struct Compact { input: 5x5x3, output: 4, kernel: 3x3, stride: 1 x1, padding: same, }
}

separable_conv! {
    pub struct Spaced { input: 5 x 5 x 3, output: 4, kernel: 3 x 3, stride: 1 x 1, padding: same }
}

fn main() {
    assert_eq!(Compact::INPUT_SHAPE, Spaced::INPUT_SHAPE);
    assert_eq!(Compact::OUTPUT_SHAPE, Spaced::OUTPUT_SHAPE);
    assert_eq!(Compact::PARAMS, Spaced::PARAMS);
    assert_eq!(<Compact as Layer>::SPEC, <Spaced as Layer>::SPEC);
    assert_eq!(<Compact as Layer>::SHAPE, <Spaced as Layer>::SHAPE);
    let layer = Compact::zeroed().clone();
    let _: Tensor<5, 5, 4> = layer.forward(&Tensor::<5, 5, 3>::zeros());
}

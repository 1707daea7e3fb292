use separable::{Tensor, separable_conv};

mod layers {
    separable::separable_conv! {
        /// A private layer inside a module, used through a public function.
        struct Hidden { input: 4 x 4 x 2, output: 3, kernel: 1, }
    }

    pub fn run(x: &separable::Tensor<4, 4, 2>) -> separable::Tensor<4, 4, 3> {
        Hidden::zeroed().forward(x)
    }
}

separable_conv! {
    struct Local {
        input: 6 x 6 x 2,
        output: 2,
        kernel: 3 x 1,
        stride: 2 x 1,
        dilation: 1,
        padding: 1 x 0,
        multiplier: 2,
        bias: both,
        depthwise_activation: relu,
        pointwise_activation: relu6,
        dtype: f64,
    }
}

fn main() {
    let _: Tensor<4, 4, 3> = layers::run(&Tensor::zeros());
    let _: Tensor<3, 6, 2, f64> = Local::zeroed().forward(&Tensor::zeros());
}

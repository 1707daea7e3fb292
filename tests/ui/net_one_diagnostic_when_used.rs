use separable::{Tensor, separable_net};

separable_net! {
    /// An invalid network still declares its types, so uses elsewhere add no errors.
    #[derive(Clone, Debug)]
    pub struct Body {
        input: 32 x 32 x 8,
        defaults: { padding: 1 },
        blocks: {
            b0: Block0 { output: 16 },
            b1: Block1 { output: 32, stride: 0 },
            b2: Block2 { output: 32 },
        }
    }
}

fn run(_: &Body, _: &Block0, _: &Block2, _: Tensor<2, 2, 2>) {}

fn main() {
    let _ = run;
}

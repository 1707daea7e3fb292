use separable::separable_net;

separable_net! {
    pub struct Body {
        input: 32 x 32 x 8,
        defaults: { padding: 1, bias: both, activation: relu },
        blocks: {
            b0: Block0 { output: 16 },
            b1: Block1 { output: 32, kernal: 5 },
            b2: Block2 { output: 32 },
        }
    }
}

fn main() {}

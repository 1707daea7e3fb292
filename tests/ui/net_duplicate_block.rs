use separable::separable_net;

separable_net! {
    pub struct Body {
        input: 32 x 32 x 8,
        defaults: { padding: 1 },
        blocks: {
            b0: Block0 { output: 16 },
            b1: Block1 { output: 16 },
            b2: Block1 { output: 32 },
        }
    }
}

fn main() {}

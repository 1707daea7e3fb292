use separable::separable_net;

// A mistake in `defaults` is reported once, by the first block that uses it.
separable_net! {
    pub struct Body {
        input: 32 x 32 x 8,
        defaults: { padding: 1, bias: bothh },
        blocks: {
            b0: Block0 { output: 16 },
            b1: Block1 { output: 32 },
        }
    }
}

fn main() {}

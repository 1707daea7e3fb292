use separable::separable_net;

// The default kernel fits the first blocks but not the last: the error names that block.
separable_net! {
    pub struct Body {
        input: 8 x 8 x 4,
        defaults: { kernel: 3 },
        blocks: {
            b0: Block0 { output: 8 },
            b1: Block1 { output: 8 },
            b2: Block2 { output: 8 },
            b3: Block3 { output: 8 },
        }
    }
}

fn main() {}

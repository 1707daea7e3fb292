use separable::separable_net;

// A block's expansion declares its own `__Sep...` items beside the block type.
separable_net! {
    pub struct Body {
        input: 8 x 8 x 4,
        defaults: { padding: same },
        blocks: {
            b0: Block0 { output: 8 },
            b1: __SepInput { output: 8 },
        }
    }
}

fn main() {}

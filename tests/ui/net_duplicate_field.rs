use separable::separable_net;

separable_net! {
    pub struct Body {
        input: 32 x 32 x 8,
        blocks: {
            b0: Block0 { output: 16, padding: 1 },
            b0: Block1 { output: 16, padding: 1 },
        }
    }
}

fn main() {}

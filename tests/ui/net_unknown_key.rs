use separable::separable_net;

separable_net! {
    pub struct Body {
        input: 32 x 32 x 8,
        defualts: { padding: 1 },
        blocks: {
            b0: Block0 { output: 16 },
        }
    }
}

fn main() {}

use separable::separable_net;

separable_net! {
    pub struct Body {
        input: 8 x 8 x 4,
        defaults: { padding: same },
        blocks: {
            b0: Block0 { output: 8, dtype: f64 },
            b1: Block1 { output: 8 },
        }
    }
}

fn main() {}

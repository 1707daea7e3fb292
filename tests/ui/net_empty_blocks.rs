use separable::separable_net;

separable_net! {
    pub struct Body {
        input: 32 x 32 x 8,
        defaults: { padding: 1 },
        blocks: {}
    }
}

fn main() {}

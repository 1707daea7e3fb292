use separable::{Tensor, separable_net};

// A network built by another macro: names as `ident`, sizes as `expr` and `literal`, the
// defaults and a block's entries as `tt`, attributes as `meta`.
macro_rules! stack {
    ($(#[$meta:meta])* $net:ident, $side:expr, $channels:literal, $defaults:tt,
     $($field:ident: $ty:ident $entries:tt),+) => {
        separable_net! {
            $(#[$meta])*
            pub struct $net {
                input: $side x $side x $channels,
                defaults: $defaults,
                blocks: { $($field: $ty $entries),+ }
            }
        }
    };
}

stack!(
    #[derive(Clone)]
    Stack, 8, 2, { padding: same, bias: both },
    first: First { output: 4 },
    second: Second { output: 6, stride: 2 }
);

fn main() {
    assert_eq!(Stack::OUTPUT_SHAPE, [4, 4, 6]);
    let stack = Stack::zeroed().clone();
    let _: Tensor<4, 4, 6> = stack.forward(&Tensor::zeros());
    let _: Tensor<8, 8, 4> = stack.first.forward(&Tensor::zeros());
}

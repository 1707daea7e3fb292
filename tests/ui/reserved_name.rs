use separable::separable_conv;

// The expansion declares its own `__Sep...` items beside the layer.
separable_conv! {
    pub struct __SepInput { input: 5 x 5 x 3, output: 4 }
}

fn main() {}

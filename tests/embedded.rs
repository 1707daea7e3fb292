//! Weights baked in at compile time (`weights:`): the MobileNet v1 0.25 body against PyTorch,
//! every file dtype against the run-time loader, and no allocation at run time.
//!
//! `tests/data/mobilenet_v1_025*.safetensors` are written by `scripts/export_pytorch.py`,
//! `tests/data/embed_dtypes.safetensors` by `scripts/make_embed_dtypes.py`.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;

use separable::{Dims, Element, Error, Layer, SafetensorsFile, Tensor, TensorData, separable_conv};

const RAW: &[u8] = include_bytes!("data/mobilenet_v1_025.safetensors");
const FOLDED: &[u8] = include_bytes!("data/mobilenet_v1_025_folded.safetensors");
const IO: &[u8] = include_bytes!("data/mobilenet_v1_025_io.safetensors");
const DTYPES: &[u8] = include_bytes!("data/embed_dtypes.safetensors");

/// The largest `|ours - PyTorch|` accepted.
const TOLERANCE: f64 = 1e-4;

/// Counts this thread's allocations, so a test can assert that a call makes none.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; counting touches only a
// thread-local `Cell` (const-initialised, so it never allocates itself).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: the caller's contract is `System.dealloc`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

separable_conv! { pub struct B0 { input: 32 x 32 x 8, output: 16, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.0." } }
separable_conv! { pub struct B1 { input: 32 x 32 x 16, output: 32, stride: 2, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.1." } }
separable_conv! { #[derive(Clone)] pub struct B2 { input: 16 x 16 x 32, output: 32, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.2." } }
separable_conv! { pub struct B3 { input: 16 x 16 x 32, output: 64, stride: 2, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.3." } }
separable_conv! { pub struct B4 { input: 8 x 8 x 64, output: 64, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.4." } }
separable_conv! { pub struct B5 { input: 8 x 8 x 64, output: 128, stride: 2, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.5." } }
separable_conv! { pub struct B6 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.6." } }
separable_conv! { pub struct B7 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.7." } }
separable_conv! { pub struct B8 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.8." } }
separable_conv! { pub struct B9 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.9." } }
separable_conv! { pub struct B10 { input: 4 x 4 x 128, output: 128, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.10." } }
separable_conv! { pub struct B11 { input: 4 x 4 x 128, output: 256, stride: 2, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.11." } }
separable_conv! { pub struct B12 { input: 2 x 2 x 256, output: 256, padding: 1, bias: both, activation: relu, weights: "tests/data/mobilenet_v1_025_folded.safetensors", prefix: "features.12." } }

fn ok<T>(r: Result<T, Error>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A `[1, C, H, W]` tensor of the I/O file as HWC, checking its shape.
fn nchw_as_hwc(io: &SafetensorsFile<'_>, key: &str, [h, w, c]: [usize; 3]) -> Vec<f32> {
    let chw = ok(io.read_shaped::<f32>(key, Dims::new([1, c, h, w])), key);
    let mut hwc = vec![0.0; chw.len()];
    for (i, v) in chw.into_iter().enumerate() {
        let (ch, y, x) = (i / (h * w), i / w % h, i % w);
        hwc[(y * w + x) * c + ch] = v;
    }
    hwc
}

/// The largest `|got - want|`, failing on a NaN.
fn max_diff(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            let d = (f64::from(g) - f64::from(w)).abs();
            assert!(!d.is_nan(), "NaN: got {g}, want {w}");
            d
        })
        .fold(0.0, f64::max)
}

fn bits<T: separable::Element>(values: &[T]) -> Vec<u64> {
    values.iter().map(|v| v.to_f64().to_bits()).collect()
}

/// Both layers hold the same weights and biases, bit for bit.
fn assert_same_weights<L: Layer>(embedded: &L, runtime: &L) {
    let (a, b) = (embedded.to_pytorch(), runtime.to_pytorch());
    assert_eq!(
        bits(&a.depthwise_weight),
        bits(&b.depthwise_weight),
        "{}",
        L::NAME
    );
    assert_eq!(
        bits(&a.pointwise_weight),
        bits(&b.pointwise_weight),
        "{}",
        L::NAME
    );
    assert_eq!(
        a.depthwise_bias.as_deref().map(bits),
        b.depthwise_bias.as_deref().map(bits)
    );
    assert_eq!(
        a.pointwise_bias.as_deref().map(bits),
        b.pointwise_bias.as_deref().map(bits)
    );
}

/// Block `i` baked in: on PyTorch's input to it, its largest difference from PyTorch's output;
/// and it must equal the same block loaded at run time, weights and outputs bit for bit.
fn check_block<L: Layer<Elem = f32>>(i: usize, embedded: &L) -> f64 {
    let runtime: L = ok(
        L::from_safetensors(FOLDED, &format!("features.{i}.")),
        L::NAME,
    );
    assert_same_weights(embedded, &runtime);

    let io = ok(SafetensorsFile::parse(IO), "io file");
    let input_key = if i == 0 {
        "input".to_owned()
    } else {
        format!("features.{}.output", i - 1)
    };
    let x = nchw_as_hwc(&io, &input_key, L::SHAPE.input);
    let want = nchw_as_hwc(&io, &format!("features.{i}.output"), L::SHAPE.output);
    let x = ok(L::Input::from_hwc(&x), "input");
    let y = embedded.forward(&x);
    assert_eq!(
        bits(y.as_slice()),
        bits(runtime.forward(&x).as_slice()),
        "{}: embedded and run-time layers differ",
        L::NAME
    );
    max_diff(y.as_slice(), &want)
}

#[test]
fn mobilenet_blocks_baked_in_match_pytorch_and_the_run_time_loader() {
    let diffs = [
        check_block(0, B0::embedded()),
        check_block(1, B1::embedded()),
        check_block(2, B2::embedded()),
        check_block(3, B3::embedded()),
        check_block(4, B4::embedded()),
        check_block(5, B5::embedded()),
        check_block(6, B6::embedded()),
        check_block(7, B7::embedded()),
        check_block(8, B8::embedded()),
        check_block(9, B9::embedded()),
        check_block(10, B10::embedded()),
        check_block(11, B11::embedded()),
        check_block(12, B12::embedded()),
    ];
    println!("max |ours - PyTorch| per block: {diffs:?}");
    assert!(diffs.iter().all(|&d| d <= TOLERANCE), "{diffs:?}");
}

/// Runs `layer` on `x` and returns its output with the largest difference from PyTorch's output
/// of block `i`.
fn step<L: Layer<Elem = f32>>(
    io: &SafetensorsFile<'_>,
    i: usize,
    layer: &L,
    x: &L::Input,
) -> (L::Output, f64) {
    let y = layer.forward(x);
    let want = nchw_as_hwc(io, &format!("features.{i}.output"), L::SHAPE.output);
    let diff = max_diff(y.as_slice(), &want);
    let scale = want.iter().fold(0.0_f64, |m, &v| m.max(f64::from(v).abs()));
    (y, diff / scale)
}

#[test]
fn the_baked_in_body_chained_stays_within_the_rounding_it_amplifies() {
    // Each block is held to `TOLERANCE` on PyTorch's own input to it above. Chained, each
    // block also amplifies the float32 rounding of those before it, as it amplifies any
    // perturbation of its input: the chain's difference from PyTorch must stay within that.
    let io = ok(SafetensorsFile::parse(IO), "io file");
    let x = ok(
        Tensor::<32, 32, 8>::from_hwc(&nchw_as_hwc(&io, "input", [32, 32, 8])),
        "input",
    );
    let mut diffs = Vec::new();
    macro_rules! chain {
        ($x:ident; $($i:literal $b:ident),*) => {{
            let y = $x;
            $(
                let (y, d) = step(&io, $i, $b::embedded(), &y);
                diffs.push(d);
            )*
            y
        }};
    }
    let y = chain!(x; 0 B0, 1 B1, 2 B2, 3 B3, 4 B4, 5 B5, 6 B6, 7 B7, 8 B8, 9 B9, 10 B10, 11 B11, 12 B12);
    let _: Tensor<2, 2, 256> = y;
    println!("chained: max |ours - PyTorch| / max |PyTorch| after each block: {diffs:?}");
    // Measured: 1e-6 after block 0, growing to 6e-4 after block 12 (block 11 alone amplifies
    // the difference tenfold).
    assert!(diffs.iter().all(|&d| d <= 1e-3), "{diffs:?}");
}

#[test]
fn embedded_layers_allocate_nothing_and_stay_put() {
    let x = Tensor::<32, 32, 8>::from_fn(|h, w, c| (h * 7 + w * 3 + c) as f32 / 100.0);
    let mut y = Tensor::<32, 32, 16>::zeros();
    let n = allocations_in(|| {
        let layer = B0::embedded();
        layer.forward_into(&x, &mut y);
        let again = B0::embedded();
        assert!(
            std::ptr::eq(layer, again),
            "embedded() must return one static layer"
        );
    });
    assert_eq!(n, 0, "embedded() + forward_into allocated {n} times");
    assert!(y.as_slice().iter().any(|&v| v != 0.0));
}

#[test]
fn writing_a_clone_copies_and_leaves_the_static_layer_unchanged() {
    let before = B2::embedded().to_pytorch();
    let mut copy = B2::embedded().clone();
    copy.depthwise_weight_mut()[0][0][0] += 1.0;
    if let Some(bias) = copy.pointwise_bias_mut() {
        bias[0] = 100.0;
    }
    let after = B2::embedded().to_pytorch();
    assert_eq!(
        bits(&before.depthwise_weight),
        bits(&after.depthwise_weight)
    );
    assert_eq!(before.pointwise_bias, after.pointwise_bias);
    let changed = copy.to_pytorch();
    assert_ne!(
        bits(&changed.depthwise_weight),
        bits(&before.depthwise_weight)
    );
    assert_eq!(changed.pointwise_bias.as_ref().map(|b| b[0]), Some(100.0));
}

// The raw file stores the convolutions as F16 with BatchNorm unfolded (no biases).
separable_conv! { pub struct RawB5 { input: 8 x 8 x 64, output: 128, stride: 2, padding: 1, weights: "tests/data/mobilenet_v1_025.safetensors", prefix: "features.5." } }
separable_conv! { pub struct RawB5F64 { input: 8 x 8 x 64, output: 128, stride: 2, padding: 1, dtype: f64, weights: "tests/data/mobilenet_v1_025.safetensors", prefix: "features.5." } }

// One small layer in every dtype (`scripts/make_embed_dtypes.py`).
macro_rules! dtype_layers {
    ($($name:ident $dtype:ident $prefix:literal)*) => {$(
        separable_conv! {
            pub struct $name {
                input: 4 x 4 x 2, output: 3, multiplier: 2, kernel: 3 x 2, padding: same,
                bias: both, dtype: $dtype,
                weights: "tests/data/embed_dtypes.safetensors", prefix: $prefix,
            }
        }
    )*};
}

dtype_layers! {
    FromF32 f32 "f32." FromF64 f32 "f64." FromF16 f32 "f16." FromBf16 f32 "bf16."
    FromF32d f64 "f32." FromF64d f64 "f64." FromF16d f64 "f16." FromBf16d f64 "bf16."
}

/// The baked-in layer equals the run-time loader's, weights and outputs bit for bit.
fn same_as_runtime<L: Layer>(file: &[u8], prefix: &str, embedded: &L) {
    let runtime: L = ok(L::from_safetensors(file, prefix), L::NAME);
    assert_same_weights(embedded, &runtime);
    let weights = embedded.to_pytorch().depthwise_weight;
    assert!(weights.iter().any(|v| v.to_f64() != 0.0), "{}", L::NAME);
    let x = ok(
        L::Input::from_hwc(
            &(0..L::SHAPE.input.iter().product::<usize>())
                .map(|i| L::Elem::from_f64((i % 7) as f64 - 3.0))
                .collect::<Vec<_>>(),
        ),
        "input",
    );
    assert_eq!(
        bits(embedded.forward(&x).as_slice()),
        bits(runtime.forward(&x).as_slice()),
        "{}",
        L::NAME
    );
}

#[test]
fn every_file_dtype_converts_as_the_run_time_loader_does() {
    same_as_runtime(DTYPES, "f32.", FromF32::embedded());
    same_as_runtime(DTYPES, "f64.", FromF64::embedded());
    same_as_runtime(DTYPES, "f16.", FromF16::embedded());
    same_as_runtime(DTYPES, "bf16.", FromBf16::embedded());
    same_as_runtime(DTYPES, "f32.", FromF32d::embedded());
    same_as_runtime(DTYPES, "f64.", FromF64d::embedded());
    same_as_runtime(DTYPES, "f16.", FromF16d::embedded());
    same_as_runtime(DTYPES, "bf16.", FromBf16d::embedded());
    same_as_runtime(RAW, "features.5.", RawB5::embedded());
    same_as_runtime(RAW, "features.5.", RawB5F64::embedded());
    // F64 to f32 rounds: the f32 layer from the F64 tensors differs from the f64 layer.
    let (f32_layer, f64_layer) = (FromF64::embedded(), FromF64d::embedded());
    let exact = f64_layer.to_pytorch().depthwise_weight;
    let rounded = f32_layer.to_pytorch().depthwise_weight;
    assert!(
        exact
            .iter()
            .zip(&rounded)
            .all(|(&e, &r)| r == f32::from_f64(e) && f64::from(r) != e)
    );
}

// `weights:` as a network default bakes every block in, each from its block prefix.
separable::separable_net! {
    pub struct Head {
        input: 32 x 32 x 8,
        defaults: {
            padding: 1, bias: both, activation: relu,
            weights: "tests/data/mobilenet_v1_025_folded.safetensors",
        },
        blocks: {
            b0: Head0 { output: 16, prefix: "features.0." },
            b1: Head1 { output: 32, stride: 2, prefix: "features.1." },
        }
    }
}

#[test]
fn a_network_default_bakes_every_block_in() {
    let runtime = ok(Head::from_safetensors(FOLDED, ""), "Head");
    assert_same_weights(Head0::embedded(), &runtime.b0);
    assert_same_weights(Head1::embedded(), &runtime.b1);
}

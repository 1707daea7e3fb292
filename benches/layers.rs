//! Criterion benchmarks of the MobileNet v1 separable layers: each stage of the generated layer
//! next to the reference kernels, and the parallel forward.
//!
//! ```text
//! cargo bench --bench layers                # everything
//! cargo bench --bench layers -- mb3/        # one layer
//! cargo bench --bench layers --features rayon -- forward_parallel
//! ```
//! The reference kernels are plain loops: they are the baseline the generated code is measured
//! against, not a competitor (`benches/anchors.rs` puts the layers next to XNNPACK, oneDNN and
//! ONNX Runtime).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use separable::{Tensor, reference, separable_conv};

separable_conv! { struct Seed { input: 5 x 5 x 3, output: 4, padding: same } }
separable_conv! { struct Mb1 { input: 112 x 112 x 32, output: 64, padding: same } }
separable_conv! { struct Mb2 { input: 112 x 112 x 64, output: 128, stride: 2, padding: same } }
separable_conv! { struct Mb3 { input: 56 x 56 x 128, output: 128, padding: same } }
separable_conv! { struct Mb5 { input: 28 x 28 x 256, output: 256, padding: same } }
separable_conv! { struct Mb7 { input: 14 x 14 x 512, output: 512, padding: same } }
separable_conv! { struct Mb13 { input: 7 x 7 x 1024, output: 1024, padding: same } }

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            f32::from(u16::try_from(state >> 48).unwrap_or(0)) / 32768.0 - 1.0
        })
        .collect()
}

macro_rules! bench_layers {
    ($($name:literal $layer:ident)*) => {
        fn layers(c: &mut Criterion) {
            $(
                let spec = $layer::SPEC;
                let shape = $layer::SHAPE;
                let dw = values(shape.depthwise_weights, 1);
                let pw = values(shape.pointwise_weights, 2);
                let layer = $layer::from_pytorch(&dw, None, &pw, None).expect("weights fit");
                let x = values(shape.input_len, 3);
                let input = Tensor::from_hwc(&x).expect("input fits");
                let mut depthwise = layer.depthwise(&input);
                let mut output = layer.forward(&input);
                let y = depthwise.to_vec();
                let none = separable::Activation::None;
                let mut group = c.benchmark_group($name);
                group.sample_size(20).measurement_time(Duration::from_secs(2));

                group.throughput(Throughput::Elements(shape.depthwise_macs as u64));
                group.bench_function(BenchmarkId::new("dw", "separable"), |b| {
                    b.iter(|| layer.depthwise_into(black_box(&input), &mut depthwise));
                });
                group.bench_function(BenchmarkId::new("dw", "reference"), |b| {
                    b.iter(|| reference::depthwise(&spec, black_box(&x), &dw, None, none));
                });
                group.throughput(Throughput::Elements(shape.pointwise_macs as u64));
                group.bench_function(BenchmarkId::new("pw", "separable"), |b| {
                    b.iter(|| layer.pointwise_into(black_box(&depthwise), &mut output));
                });
                group.bench_function(BenchmarkId::new("pw", "reference"), |b| {
                    b.iter(|| reference::pointwise(&spec, black_box(&y), &pw, None, none));
                });
                group.throughput(Throughput::Elements(shape.macs as u64));
                group.bench_function(BenchmarkId::new("forward", "separable"), |b| {
                    b.iter(|| layer.forward_into(black_box(&input), &mut output));
                });
                group.bench_function(BenchmarkId::new("forward_parallel", "separable"), |b| {
                    b.iter(|| layer.forward_into_parallel(black_box(&input), &mut output));
                });
                group.bench_function(BenchmarkId::new("forward", "reference"), |b| {
                    b.iter(|| {
                        reference::forward(&spec, black_box(&x), &dw, None, &pw, None, [none, none])
                    });
                });
                group.finish();
            )*
        }
    };
}

bench_layers!("seed" Seed "mb1" Mb1 "mb2" Mb2 "mb3" Mb3 "mb5" Mb5 "mb7" Mb7 "mb13" Mb13);

criterion_group!(benches, layers);
criterion_main!(benches);

//! Networks declared with `separable_net!`: the forward pass against its blocks and the
//! reference kernels, the totals and the summary against the blocks' constants, weight loading,
//! and the MobileNet v1 0.25 body against PyTorch.

use separable::{
    Activation, Bias, Dims, Element, Error, Layer, Padding, SafetensorsFile, Tensor, TensorData,
    reference, separable_net,
};

separable_net! {
    /// Small blocks of every kind: unrolled and strip layouts, strides, a depth multiplier,
    /// dilation, explicit padding, each bias and per-block overrides of the defaults.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Small {
        input: 11 x 10 x 3,
        defaults: { kernel: 3, padding: same, bias: both, activation: relu6 },
        blocks: {
            /// Only defaults.
            a: SmallA { output: 8 },
            b: SmallB { output: 6, stride: 2, multiplier: 2, bias: pointwise },
            c: SmallC { input: 6 x 5 x 6, output: 5, kernel: 1 x 3, dilation: 2, padding: 1 x 2, activation: none },
            d: SmallD { output: 7, kernel: 2, stride: 2 x 1, padding: valid, bias: none, activation: relu },
        }
    }
}

separable_net! {
    /// `f64`, per-stage activations as defaults, and blocks loaded from their own prefixes.
    struct Wide {
        input: 16 x 12 x 4,
        defaults: { dtype: f64, depthwise_activation: relu, pointwise_activation: none, padding: same },
        blocks: {
            first: WideFirst { output: 24, prefix: "stem." },
            second: WideSecond { output: 24, kernel: 5, stride: 2, pointwise_activation: relu6 },
            third: WideThird { output: 9, kernel: 1, prefix: "head.proj." },
        }
    }
}

separable_net! {
    /// One block.
    pub struct Single {
        input: 4 x 4 x 2,
        blocks: { only: SingleOnly { output: 3, padding: 1 } }
    }
}

// The 13 blocks of the MobileNet v1 0.25 body on a 32 x 32 x 8 input, as
// `scripts/export_pytorch.py` builds them: 3 x 3 depthwise with PyTorch's `padding=1`, BatchNorm
// folded into both stages, ReLU after each. `from_safetensors` reads block `k` from
// `features.k.`.
separable_net! {
    pub struct MobileNet {
        input: 32 x 32 x 8,
        defaults: { kernel: 3, padding: 1, bias: both, activation: relu },
        blocks: {
            b0: Mb0 { output: 16 },
            b1: Mb1 { output: 32, stride: 2 },
            b2: Mb2 { output: 32 },
            b3: Mb3 { output: 64, stride: 2 },
            b4: Mb4 { output: 64 },
            b5: Mb5 { output: 128, stride: 2 },
            b6: Mb6 { output: 128 },
            b7: Mb7 { output: 128 },
            b8: Mb8 { output: 128 },
            b9: Mb9 { output: 128 },
            b10: Mb10 { output: 128 },
            b11: Mb11 { output: 256, stride: 2 },
            b12: Mb12 { output: 256 },
        }
    }
}

const FOLDED: &[u8] = include_bytes!("data/mobilenet_v1_025_folded.safetensors");
const IO: &[u8] = include_bytes!("data/mobilenet_v1_025_io.safetensors");

fn ok<T>(r: Result<T, Error>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `SplitMix64` in `[-1, 1)`: deterministic test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn values<T: Element>(&mut self, len: usize) -> Vec<T> {
        (0..len).map(|_| T::from_f64(self.next())).collect()
    }
}

/// A block with pseudo-random weights and biases, as declared.
fn random<L: Layer>(rng: &mut Rng) -> L {
    let shape = L::SHAPE;
    let spec = L::SPEC;
    let dw = rng.values(shape.depthwise_weights);
    let dw_bias = spec
        .bias
        .depthwise()
        .then(|| rng.values(shape.depthwise[2]));
    let pw = rng.values(shape.pointwise_weights);
    let pw_bias = spec
        .bias
        .pointwise()
        .then(|| rng.values(spec.output_channels));
    ok(
        L::from_pytorch(&dw, dw_bias.as_deref(), &pw, pw_bias.as_deref()),
        L::NAME,
    )
}

/// One block through `separable::reference::forward` with the block's own weights.
fn reference_block<L: Layer>(layer: &L, x: &[L::Elem]) -> Vec<L::Elem> {
    let w = layer.to_pytorch();
    ok(
        reference::forward(
            &L::SPEC,
            x,
            &w.depthwise_weight,
            w.depthwise_bias.as_deref(),
            &w.pointwise_weight,
            w.pointwise_bias.as_deref(),
            [L::DEPTHWISE_ACTIVATION, L::POINTWISE_ACTIVATION],
        ),
        L::NAME,
    )
}

/// `max |got - want| / max(1, max |want|)`, failing on a NaN.
fn relative_diff<T: Element>(got: &[T], want: &[T]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut diff = 0.0f64;
    let mut scale = 1.0f64;
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g.to_f64(), w.to_f64());
        let d = (g - w).abs();
        assert!(!d.is_nan(), "NaN: got {g}, want {w}");
        diff = diff.max(d);
        scale = scale.max(w.abs());
    }
    diff / scale
}

fn small() -> Small {
    let mut rng = Rng(1);
    Small {
        a: random(&mut rng),
        b: random(&mut rng),
        c: random(&mut rng),
        d: random(&mut rng),
    }
}

fn wide() -> Wide {
    let mut rng = Rng(2);
    Wide {
        first: random(&mut rng),
        second: random(&mut rng),
        third: random(&mut rng),
    }
}

#[test]
fn defaults_overrides_and_computed_inputs() {
    // Each block's input is the previous block's output.
    assert_eq!(SmallA::INPUT_SHAPE, [11, 10, 3]);
    assert_eq!(SmallB::INPUT_SHAPE, SmallA::OUTPUT_SHAPE);
    assert_eq!(SmallC::INPUT_SHAPE, SmallB::OUTPUT_SHAPE);
    assert_eq!(SmallD::INPUT_SHAPE, SmallC::OUTPUT_SHAPE);
    assert_eq!(WideSecond::INPUT_SHAPE, WideFirst::OUTPUT_SHAPE);
    assert_eq!(WideThird::INPUT_SHAPE, WideSecond::OUTPUT_SHAPE);
    // Defaults where a block is silent, its own keys where it is not.
    assert_eq!(SmallA::SPEC.padding, Padding::Same);
    assert_eq!(SmallA::SPEC.bias, Bias::Both);
    assert_eq!(SmallA::POINTWISE_ACTIVATION, Activation::Relu6);
    assert_eq!(SmallB::SPEC.bias, Bias::Pointwise);
    assert_eq!((SmallB::SPEC.stride, SmallB::SPEC.multiplier), ([2, 2], 2));
    assert_eq!(SmallB::DEPTHWISE_ACTIVATION, Activation::Relu6);
    assert_eq!(
        (SmallC::SPEC.kernel, SmallC::SPEC.dilation),
        ([1, 3], [2, 2])
    );
    assert_eq!(
        SmallC::SPEC.padding,
        Padding::Explicit {
            height: 1,
            width: 2
        }
    );
    assert_eq!(SmallC::POINTWISE_ACTIVATION, Activation::None);
    assert_eq!(SmallD::SPEC.padding, Padding::Valid);
    assert_eq!(SmallD::SPEC.bias, Bias::None);
    assert_eq!(SmallD::DEPTHWISE_ACTIVATION, Activation::Relu);
    assert_eq!(
        (
            WideFirst::DEPTHWISE_ACTIVATION,
            WideFirst::POINTWISE_ACTIVATION
        ),
        (Activation::Relu, Activation::None)
    );
    assert_eq!(WideSecond::POINTWISE_ACTIVATION, Activation::Relu6);
    assert_eq!(WideSecond::SPEC.kernel, [5, 5]);
    assert_eq!(Single::OUTPUT_SHAPE, SingleOnly::OUTPUT_SHAPE);
}

#[test]
fn forward_is_the_blocks_chained_and_matches_the_reference_kernels() {
    let mut rng = Rng(3);
    let net = small();
    let x = Tensor::<11, 10, 3>::from_fn(|_, _, _| f32::from_f64(rng.next()));
    let y = net.forward(&x);
    // The same blocks by hand: identical, since it is the same code.
    let chained = net
        .d
        .forward(&net.c.forward(&net.b.forward(&net.a.forward(&x))));
    assert_eq!(y, chained);
    // The reference kernels chained on the blocks' weights.
    let r = reference_block(&net.a, x.as_slice());
    let r = reference_block(&net.b, &r);
    let r = reference_block(&net.c, &r);
    let r = reference_block(&net.d, &r);
    let e = relative_diff(y.as_slice(), &r);
    assert!(e <= 1e-5, "Small vs reference: {e:e}");
    // The output is not trivially zero.
    assert!(y.as_slice().iter().any(|&v| v != 0.0));

    let net = wide();
    let x = Tensor::<16, 12, 4, f64>::from_fn(|_, _, _| rng.next());
    let y = net.forward(&x);
    assert_eq!(
        y,
        net.third
            .forward(&net.second.forward(&net.first.forward(&x)))
    );
    let r = reference_block(&net.first, x.as_slice());
    let r = reference_block(&net.second, &r);
    let r = reference_block(&net.third, &r);
    let e = relative_diff(y.as_slice(), &r);
    assert!(e <= 1e-12, "Wide vs reference: {e:e}");

    let mut rng = Rng(4);
    let single = Single {
        only: random(&mut rng),
    };
    let x = Tensor::<4, 4, 2>::from_fn(|_, _, _| f32::from_f64(rng.next()));
    assert_eq!(single.forward(&x), single.only.forward(&x));
}

#[test]
fn zeroed_networks_output_zeros() {
    let y = Small::zeroed().forward(&Tensor::filled(1.0));
    assert!(y.as_slice().iter().all(|&v| v == 0.0));
}

/// `(INPUT_SHAPE, OUTPUT_SHAPE, PARAMS, MACS, STANDARD_PARAMS, STANDARD_MACS)` of a block,
/// from its `Layer::SHAPE`.
fn counts<L: Layer>() -> [usize; 4] {
    let s = L::SHAPE;
    [s.params, s.macs, s.standard_params, s.standard_macs]
}

fn sum(blocks: &[[usize; 4]]) -> [usize; 4] {
    blocks.iter().fold([0; 4], |mut total, b| {
        for (t, v) in total.iter_mut().zip(b) {
            *t += v;
        }
        total
    })
}

#[test]
fn totals_are_the_sums_of_the_blocks() {
    let small = sum(&[
        counts::<SmallA>(),
        counts::<SmallB>(),
        counts::<SmallC>(),
        counts::<SmallD>(),
    ]);
    assert_eq!(
        [
            Small::PARAMS,
            Small::MACS,
            Small::STANDARD_PARAMS,
            Small::STANDARD_MACS
        ],
        small
    );
    assert_eq!(Small::INPUT_SHAPE, SmallA::SHAPE.input);
    assert_eq!(Small::OUTPUT_SHAPE, SmallD::SHAPE.output);
    let wide = sum(&[
        counts::<WideFirst>(),
        counts::<WideSecond>(),
        counts::<WideThird>(),
    ]);
    assert_eq!(
        [
            Wide::PARAMS,
            Wide::MACS,
            Wide::STANDARD_PARAMS,
            Wide::STANDARD_MACS
        ],
        wide
    );
    // The MobileNet body: 13 blocks, the separable counts far below the standard ones.
    let mobilenet = sum(&[
        counts::<Mb0>(),
        counts::<Mb1>(),
        counts::<Mb2>(),
        counts::<Mb3>(),
        counts::<Mb4>(),
        counts::<Mb5>(),
        counts::<Mb6>(),
        counts::<Mb7>(),
        counts::<Mb8>(),
        counts::<Mb9>(),
        counts::<Mb10>(),
        counts::<Mb11>(),
        counts::<Mb12>(),
    ]);
    assert_eq!(
        [
            MobileNet::PARAMS,
            MobileNet::MACS,
            MobileNet::STANDARD_PARAMS,
            MobileNet::STANDARD_MACS
        ],
        mobilenet
    );
    assert_eq!(MobileNet::OUTPUT_SHAPE, [2, 2, 256]);
    assert_eq!(MobileNet::NAME, "MobileNet");
}

/// One row of a summary as the test reads it back.
#[derive(Debug, PartialEq)]
struct Row {
    field: String,
    ty: String,
    output: [usize; 3],
    params: usize,
    macs: usize,
}

/// A block's row as its constants say it should read.
fn row<L: Layer>(field: &str) -> Row {
    Row {
        field: field.to_owned(),
        ty: L::NAME.to_owned(),
        output: L::SHAPE.output,
        params: L::SHAPE.params,
        macs: L::SHAPE.macs,
    }
}

fn number(text: &str) -> usize {
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("`{text}`: {e}"))
}

/// Reads a summary's block rows and its totals row (without a type), checking the layout.
fn parse_summary(summary: &str) -> (String, Vec<Row>, Row) {
    let lines: Vec<&str> = summary.lines().collect();
    assert!(lines.len() >= 6, "{summary}");
    let words: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(words, ["block", "type", "output", "params", "MACs"]);
    assert!(lines[2].chars().all(|c| c == '-' || c == ' '), "{summary}");
    assert_eq!(lines[2], lines[lines.len() - 2], "{summary}");
    let parse = |line: &str, with_type: bool| {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (field, ty, rest) = if with_type {
            (w[0], w[1], &w[2..])
        } else {
            (w[0], "", &w[1..])
        };
        // `H x W x C`, params, MACs
        assert_eq!(rest.len(), 7, "{line}");
        assert_eq!((rest[1], rest[3]), ("x", "x"), "{line}");
        Row {
            field: field.to_owned(),
            ty: ty.to_owned(),
            output: [number(rest[0]), number(rest[2]), number(rest[4])],
            params: number(rest[5]),
            macs: number(rest[6]),
        }
    };
    let rows = lines[3..lines.len() - 2]
        .iter()
        .map(|line| parse(line, true))
        .collect();
    let total = parse(lines[lines.len() - 1], false);
    (lines[0].to_owned(), rows, total)
}

#[test]
fn summary_rows_agree_with_the_blocks() {
    let (title, rows, total) = parse_summary(Small::SUMMARY);
    assert_eq!(title, "Small: input 11 x 10 x 3, f32");
    assert_eq!(
        rows,
        [
            row::<SmallA>("a"),
            row::<SmallB>("b"),
            row::<SmallC>("c"),
            row::<SmallD>("d"),
        ]
    );
    assert_eq!(
        total,
        Row {
            field: "total".to_owned(),
            ty: String::new(),
            output: Small::OUTPUT_SHAPE,
            params: Small::PARAMS,
            macs: Small::MACS,
        }
    );

    let (title, rows, total) = parse_summary(MobileNet::SUMMARY);
    assert_eq!(title, "MobileNet: input 32 x 32 x 8, f32");
    let names: Vec<String> = (0..13).map(|i| format!("b{i}")).collect();
    let expected = [
        row::<Mb0>(&names[0]),
        row::<Mb1>(&names[1]),
        row::<Mb2>(&names[2]),
        row::<Mb3>(&names[3]),
        row::<Mb4>(&names[4]),
        row::<Mb5>(&names[5]),
        row::<Mb6>(&names[6]),
        row::<Mb7>(&names[7]),
        row::<Mb8>(&names[8]),
        row::<Mb9>(&names[9]),
        row::<Mb10>(&names[10]),
        row::<Mb11>(&names[11]),
        row::<Mb12>(&names[12]),
    ];
    assert_eq!(rows, expected);
    assert_eq!(
        (total.output, total.params, total.macs),
        (MobileNet::OUTPUT_SHAPE, MobileNet::PARAMS, MobileNet::MACS)
    );
    // Large counts are grouped in thousands.
    assert!(MobileNet::SUMMARY.contains(','), "{}", MobileNet::SUMMARY);

    let (title, rows, _) = parse_summary(Wide::SUMMARY);
    assert_eq!(title, "Wide: input 16 x 12 x 4, f64");
    assert_eq!(rows.len(), 3);
}

#[test]
fn display_writes_the_summary() {
    assert_eq!(small().to_string(), Small::SUMMARY);
    assert_eq!(wide().to_string(), Wide::SUMMARY);
    assert_eq!(Single::zeroed().to_string(), Single::SUMMARY);
    // The derives of the network reach the blocks (the network's impls need them).
    let net = small();
    let copy = net.clone();
    assert!(copy == net);
    assert_eq!(
        copy.forward(&Tensor::filled(0.5)),
        net.forward(&Tensor::filled(0.5))
    );
    assert!(format!("{net:?}").starts_with("Small {"));
}

/// A safetensors file of `F64` tensors (`(name, shape, values)`), as `safetensors.torch.save`
/// writes one.
fn safetensors(tensors: &[(String, Vec<usize>, Vec<f64>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F64", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(data);
    bytes
}

/// A block's four tensors in PyTorch's names and shapes after `prefix`.
fn state_dict<L: Layer<Elem = f64>>(
    layer: &L,
    prefix: &str,
) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let w = layer.to_pytorch();
    let spec = L::SPEC;
    let cm = L::SHAPE.depthwise[2];
    let n = spec.output_channels;
    let mut tensors = vec![
        (
            format!("{prefix}depthwise.weight"),
            vec![cm, 1, spec.kernel[0], spec.kernel[1]],
            w.depthwise_weight.clone(),
        ),
        (
            format!("{prefix}pointwise.weight"),
            vec![n, cm, 1, 1],
            w.pointwise_weight.clone(),
        ),
    ];
    if let Some(b) = &w.depthwise_bias {
        tensors.push((format!("{prefix}depthwise.bias"), vec![cm], b.clone()));
    }
    if let Some(b) = &w.pointwise_bias {
        tensors.push((format!("{prefix}pointwise.bias"), vec![n], b.clone()));
    }
    tensors
}

#[test]
fn from_safetensors_reads_each_block_from_its_prefix() {
    let net = wide();
    // `first` and `third` set their prefixes; `second` is the network's block 1.
    let mut tensors = state_dict(&net.first, "model.stem.");
    tensors.extend(state_dict(&net.second, "model.1."));
    tensors.extend(state_dict(&net.third, "model.head.proj."));
    let bytes = safetensors(&tensors);
    let loaded = ok(Wide::from_safetensors(&bytes, "model."), "Wide");
    let file = ok(SafetensorsFile::parse(&bytes), "file");
    let again = ok(Wide::from_safetensors_file(&file, "model."), "Wide");
    let x = Tensor::<16, 12, 4, f64>::from_fn(|h, w, c| (h * 48 + w * 4 + c) as f64 / 100.0);
    let want = net.forward(&x);
    assert_eq!(loaded.forward(&x), want);
    assert_eq!(again.forward(&x), want);
    assert_eq!(loaded.second.to_pytorch(), net.second.to_pytorch());

    // Errors name the network's function and the tensor's full key.
    let e = ok_err(Wide::from_safetensors(&bytes, "features."));
    assert_eq!(
        e.to_string(),
        "Wide::from_safetensors: `features.stem.depthwise.weight` is not in the file"
    );
    let e = ok_err(Wide::from_safetensors_file(&file, ""));
    assert_eq!(
        e.to_string(),
        "Wide::from_safetensors_file: `stem.depthwise.weight` is not in the file"
    );
    let e = ok_err(Wide::from_safetensors(&bytes[..bytes.len() - 1], "model."));
    assert!(
        e.to_string()
            .starts_with("Wide::from_safetensors: not a valid safetensors file"),
        "{e}"
    );
    // A file whose block 1 is missing its tensors.
    let mut partial = state_dict(&net.first, "model.stem.");
    partial.extend(state_dict(&net.third, "model.head.proj."));
    let e = ok_err(Wide::from_safetensors(&safetensors(&partial), "model."));
    assert_eq!(
        e.to_string(),
        "Wide::from_safetensors: `model.1.depthwise.weight` is not in the file"
    );
}

/// The error of a call that must fail (networks need not implement `Debug`).
#[track_caller]
fn ok_err<T>(r: Result<T, Error>) -> Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// A `[1, C, H, W]` tensor of the I/O file as a tensor.
fn io_tensor<const H: usize, const W: usize, const C: usize>(
    io: &SafetensorsFile<'_>,
    key: &str,
) -> Tensor<H, W, C> {
    let chw = ok(io.read_shaped::<f32>(key, Dims::new([1, C, H, W])), key);
    ok(Tensor::from_chw(&chw), key)
}

/// `max |got - want|`, failing on a NaN.
fn max_diff<X: TensorData<f32>>(got: &X, want: &X) -> f64 {
    got.as_slice()
        .iter()
        .zip(want.as_slice())
        .map(|(&g, &w)| {
            let d = (f64::from(g) - f64::from(w)).abs();
            assert!(!d.is_nan(), "NaN: got {g}, want {w}");
            d
        })
        .fold(0.0, f64::max)
}

/// The largest accepted `|ours - PyTorch|` of one block.
const TOLERANCE: f64 = 1e-4;

/// The largest accepted `|ours - PyTorch|` after all 13 blocks. Chained, float32 rounding is
/// amplified from block to block (per-channel BatchNorm after a depthwise stage scales small
/// differences up; `scripts/export_pytorch.py` notes it): PyTorch's own float32 output is
/// 2.2e-3 from the float64 chain of the same folded weights, so no float32 implementation can
/// match it end to end within [`TOLERANCE`]. Ours is 1.1e-3 from the float64 chain and 1.9e-3
/// from PyTorch's output.
const END_TO_END_TOLERANCE: f64 = 5e-3;

separable_net! {
    /// The same body in `f64`: the exact result of the folded weights, up to float64 rounding.
    pub struct MobileNet64 {
        input: 32 x 32 x 8,
        defaults: { kernel: 3, padding: 1, bias: both, activation: relu, dtype: f64 },
        blocks: {
            b0: Mf0 { output: 16 },
            b1: Mf1 { output: 32, stride: 2 },
            b2: Mf2 { output: 32 },
            b3: Mf3 { output: 64, stride: 2 },
            b4: Mf4 { output: 64 },
            b5: Mf5 { output: 128, stride: 2 },
            b6: Mf6 { output: 128 },
            b7: Mf7 { output: 128 },
            b8: Mf8 { output: 128 },
            b9: Mf9 { output: 128 },
            b10: Mf10 { output: 128 },
            b11: Mf11 { output: 256, stride: 2 },
            b12: Mf12 { output: 256 },
        }
    }
}

#[test]
fn mobilenet_body_from_safetensors_matches_pytorch() {
    // `features.` and the default block prefixes `0.` to `12.`: PyTorch's `nn.Sequential`.
    let net = ok(
        MobileNet::from_safetensors(FOLDED, "features."),
        "MobileNet",
    );
    let io = ok(SafetensorsFile::parse(IO), "io file");

    // Every block of the loaded network on PyTorch's input to it.
    let mut errors = Vec::new();
    macro_rules! per_block {
        ($($field:ident $i:literal $h:literal $c:literal $oh:literal $n:literal),*) => {$(
            let input_key = if $i == 0 { "input".to_owned() } else { format!("features.{}.output", $i - 1) };
            let x: Tensor<$h, $h, $c> = io_tensor(&io, &input_key);
            let want: Tensor<$oh, $oh, $n> = io_tensor(&io, &format!("features.{}.output", $i));
            errors.push(max_diff(&net.$field.forward(&x), &want));
        )*};
    }
    per_block!(b0 0 32 8 32 16, b1 1 32 16 16 32, b2 2 16 32 16 32, b3 3 16 32 8 64,
        b4 4 8 64 8 64, b5 5 8 64 4 128, b6 6 4 128 4 128, b7 7 4 128 4 128,
        b8 8 4 128 4 128, b9 9 4 128 4 128, b10 10 4 128 4 128, b11 11 4 128 2 256,
        b12 12 2 256 2 256);
    let listed: Vec<String> = errors.iter().map(|e| format!("{e:.1e}")).collect();
    println!("max |block - PyTorch| per block: {}", listed.join(" "));
    for (i, e) in errors.iter().enumerate() {
        assert!(
            *e <= TOLERANCE,
            "block {i}: max |diff| {e:e} > {TOLERANCE:e}"
        );
    }

    // The whole network from PyTorch's input.
    let x: Tensor<32, 32, 8> = io_tensor(&io, "input");
    let want: Tensor<2, 2, 256> = io_tensor(&io, "features.12.output");
    let y = net.forward(&x);
    let net64 = ok(
        MobileNet64::from_safetensors(FOLDED, "features."),
        "MobileNet64",
    );
    let x64 = ok(
        Tensor::<32, 32, 8, f64>::from_hwc(
            &x.to_vec().into_iter().map(f64::from).collect::<Vec<_>>(),
        ),
        "x64",
    );
    let y64 = net64.forward(&x64);
    let from64 = |t: &Tensor<2, 2, 256>| {
        t.as_slice()
            .iter()
            .zip(y64.as_slice())
            .map(|(&a, &b)| (f64::from(a) - b).abs())
            .fold(0.0, f64::max)
    };
    let (ours, theirs, ours64) = (max_diff(&y, &want), from64(&want), from64(&y));
    println!(
        "13 blocks: max |ours - PyTorch| {ours:.2e}; from the float64 network: PyTorch {theirs:.2e}, ours {ours64:.2e}"
    );
    for (what, e) in [
        ("ours - PyTorch", ours),
        ("PyTorch - float64", theirs),
        ("ours - float64", ours64),
    ] {
        assert!(e <= END_TO_END_TOLERANCE, "{what}: max |diff| {e:e}");
    }
    // PyTorch's output is not degenerate: ReLU leaves many zeros, not all.
    assert!(want.as_slice().iter().any(|&v| v > 0.1));
}

//! Tests of the whole pipeline on `proc_macro2` tokens, outside the compiler: the committed
//! expansion snapshot, the bound on emitted size and error messages. That no input panics is
//! `fuzz.rs`'s subject.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Invocation;
use crate::model::{Dtype, Layer};

fn tokens(src: &str) -> TokenStream {
    src.parse().expect("test input lexes")
}

/// An expansion function: `crate::expand` for layers, `crate::net::expand` for networks.
type Expand = fn(&TokenStream, TokenStream) -> TokenStream;

/// The expansion pretty-printed, as a reviewer reads it.
fn expand_pretty(src: &str) -> String {
    pretty(crate::expand, src)
}

fn pretty(expand: Expand, src: &str) -> String {
    let out = expand(&quote!(::separable), tokens(src));
    let file: syn::File = syn::parse2(out).expect("the expansion is a Rust file");
    prettyplease::unparse(&file)
}

/// Validates an invocation and returns the layer or the error messages.
fn validate(src: &str) -> Result<Layer, Vec<String>> {
    let invocation: Invocation = syn::parse2(tokens(src)).map_err(|e| vec![e.to_string()])?;
    Layer::from_ast(&invocation).map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
}

fn errors(src: &str) -> Vec<String> {
    match validate(src) {
        Ok(layer) => panic!("expected an error for {src}, got {layer:?}"),
        Err(errors) => errors,
    }
}

const SEED: &str = "
    /// The seed layer of the README.
    #[derive(Clone, Debug)]
    pub struct Seed { input: 5 x 5 x 3, output: 4, kernel: 3 x 3, padding: same }
";

/// A MobileNet v1 block: interior and border loops instead of one block per pixel.
const MOBILENET_BLOCK: &str = "
    /// MobileNet v1, block 2.
    pub struct Block2 {
        input: 112 x 112 x 64, output: 128, stride: 2, padding: same, bias: both, activation: relu
    }
";

/// A network of two small blocks: defaults, an override, a block prefix, derives.
const SMALL_NET: &str = r#"
    /// Two small blocks.
    #[derive(Clone, Debug)]
    pub struct Tiny {
        input: 4 x 4 x 2,
        defaults: { kernel: 1, bias: both, activation: relu },
        blocks: {
            /// The first block.
            stem: TinyStem { output: 4 },
            head: TinyHead { output: 3, bias: none, prefix: "classifier." },
        }
    }
"#;

/// Compares an expansion with `separable-macros/tests/expand/<name>.expanded.rs`;
/// `SNAPSHOTS=overwrite cargo test -p separable-macros` rewrites the files.
fn check_snapshot(name: &str, src: &str) {
    check_snapshot_of(crate::expand, name, src);
}

fn check_snapshot_of(expand: Expand, name: &str, src: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/expand")
        .join(format!("{name}.expanded.rs"));
    let actual = pretty(expand, src);
    if std::env::var_os("SNAPSHOTS").is_some_and(|v| v == "overwrite") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "the expansion of {name} changed; review it with `SNAPSHOTS=overwrite cargo test -p separable-macros` and `git diff`\n{actual}"
    );
}

#[test]
fn seed_expansion_matches_the_snapshot() {
    check_snapshot("seed", SEED);
}

#[test]
fn mobilenet_block_expansion_matches_the_snapshot() {
    check_snapshot("mobilenet_block2", MOBILENET_BLOCK);
}

#[test]
fn small_net_expansion_matches_the_snapshot() {
    check_snapshot_of(crate::net::expand, "small_net", SMALL_NET);
}

#[test]
fn defaults_follow_the_readme() {
    let layer = validate("struct L { input: 5 x 5 x 3, output: 4 }").unwrap();
    let spec = layer.spec;
    assert_eq!(spec.kernel, [3, 3]);
    assert_eq!(spec.stride, [1, 1]);
    assert_eq!(spec.dilation, [1, 1]);
    assert_eq!(spec.multiplier, 1);
    assert_eq!(spec.padding, separable_shape::Padding::Valid);
    assert_eq!(spec.bias, separable_shape::Bias::None);
    assert_eq!(layer.dtype, Dtype::F32);
    assert_eq!(layer.shape.output, [3, 3, 4]);
}

#[test]
fn every_spelling_of_a_shape_is_accepted() {
    for input in ["5 x 5 x 3", "5x5x3", "5 x5x3", "5x 5 x3", "5 x 5x3"] {
        let layer = validate(&format!("struct L {{ input: {input}, output: 4, }}")).unwrap();
        assert_eq!(layer.spec.input, [5, 5, 3], "{input}");
    }
    let layer =
        validate("struct L { input: 9x9x2, output: 1, kernel: 3x5, stride: 2 x 1, padding: 1x2 }")
            .unwrap();
    assert_eq!(layer.spec.kernel, [3, 5]);
    assert_eq!(layer.spec.stride, [2, 1]);
    assert_eq!(
        layer.spec.padding,
        separable_shape::Padding::Explicit {
            height: 1,
            width: 2
        }
    );
}

/// Any integer literal without a suffix is a size: decimal with or without underscores,
/// hexadecimal, octal or binary; glued to it with `x`, the following sizes are decimal.
#[test]
fn sizes_are_integer_literals_in_any_base() {
    for (input, want) in [
        ("0xE x 0o7 x 0b11", [14, 7, 3]),
        ("1_0 x 0x_A x 0b1_1", [10, 10, 3]),
        ("0x5x5x3", [5, 5, 3]),
        ("0b101x5x3", [5, 5, 3]),
        ("0x1_0000_0000 x 1 x 1", [1 << 32, 1, 1]),
    ] {
        let layer = validate(&format!(
            "struct L {{ input: {input}, output: 0b1, kernel: 1 }}"
        ))
        .unwrap_or_else(|e| panic!("{input}: {e:?}"));
        assert_eq!(layer.spec.input, want, "{input}");
        assert_eq!(layer.spec.output_channels, 1, "{input}");
    }
    // Glued on, `0x10` reads as the sizes `0` and `10`.
    let found = errors("struct L { input: 5x0x10, output: 4 }");
    assert!(found.iter().any(|e| e.contains("at least 1")), "{found:?}");
    // Past 2^32, in any base.
    let found = errors("struct L { input: 0x1_0000_0001 x 1 x 1, output: 4 }");
    assert!(
        found
            .iter()
            .any(|e| e.contains("larger than the largest size")),
        "{found:?}"
    );
    let found = errors("struct L { input: 5 x 5 x 3, output: 0x4u8 }");
    assert!(
        found.iter().any(|e| e.contains("remove the suffix `u8`")),
        "{found:?}"
    );
}

#[test]
fn per_stage_activations() {
    use separable_shape::Activation;
    let layer =
        validate("struct L { input: 5x5x3, output: 4, depthwise_activation: relu6 }").unwrap();
    assert_eq!(layer.depthwise_activation, Activation::Relu6);
    assert_eq!(layer.pointwise_activation, Activation::None);
    let layer = validate("struct L { input: 5x5x3, output: 4, activation: relu }").unwrap();
    assert_eq!(
        (layer.depthwise_activation, layer.pointwise_activation),
        (Activation::Relu, Activation::Relu)
    );
}

#[test]
#[allow(clippy::too_many_lines)] // one line per message
fn messages_name_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("struct L { output: 4 }", "missing `input`"),
        ("struct L { input: 5x5x3 }", "missing `output`"),
        (
            "struct L { input: 5x5x3, output: 4, kernal: 3 }",
            "unknown key `kernal`; did you mean `kernel`?",
        ),
        (
            "struct L { input: 5x5x3, output: 4, output: 5 }",
            "duplicate key `output`",
        ),
        (
            "struct L { input: 5x0x3, output: 4 }",
            "`input` must be at least 1, found 0",
        ),
        (
            "struct L { input: 5x5, output: 4 }",
            "`input` takes `H x W x C`",
        ),
        ("struct L { input: 5x5x3x2, output: 4 }", "found 4 sizes"),
        (
            "struct L { input: 5.0 x 5 x 3, output: 4 }",
            "expected a whole number, found `5.0`",
        ),
        (
            "struct L { input: -3 x 5 x 3, output: 4 }",
            "a size cannot be negative",
        ),
        (
            "struct L { input: 5 x 5 x, output: 4 }",
            "expected a size after `x`",
        ),
        (
            "struct L { input: 5 * 5 * 3, output: 4 }",
            "write `x` between sizes",
        ),
        (
            "struct L { input: 5x5x3, output: 4, stride: 0 }",
            "`stride` must be at least 1",
        ),
        (
            "struct L { input: 5x5x3, output: 4, padding: sane }",
            "unknown padding `sane`; expected `same`, `valid`, or a size `P` / `PH x PW`; did you mean `same`?",
        ),
        (
            "struct L { input: 5x5x3, output: 4, bias: pointwize }",
            "did you mean `pointwise`?",
        ),
        (
            "struct L { input: 5x5x3, output: 4, dtype: f16 }",
            "unknown dtype `f16`; expected `f32` or `f64`",
        ),
        (
            "struct L { input: 2x5x3, output: 4 }",
            "the output height would be 2 - 3 + 1 = 0",
        ),
        (
            "struct L { input: 5x5x3, output: 4, dilation: 3 }",
            "the kernel spans 7 ((3 - 1) x dilation 3 + 1)",
        ),
        (
            "struct L { input: 99999999999999999999999 x 5 x 3, output: 4 }",
            "does not fit in `usize`",
        ),
        (
            "struct L { input: 5 x 5 x 3, output: 4, dilation: 4294967297 }",
            "is larger than the largest size, 4294967296",
        ),
        (
            "struct L { input: 5 x 5 x 3, output: 4, dilation: 2147483648, padding: same }",
            "the dilated kernel spans 4294967297 along the height",
        ),
        (
            "struct L { input: 18446744073709551615 x 2 x 3, output: 4, padding: same }",
            "is larger than the largest size, 4294967296",
        ),
        (
            "struct L { input: 65536 x 65536 x 2, output: 4, padding: same }",
            "the limit per tensor is 4294967296",
        ),
        (
            "struct L { input: 5x5x3 output: 4 }",
            "expected `,` before `output`",
        ),
        (
            "struct L { input: 5x5x3, output: 4, padding: same valid }",
            "unexpected token after `same`",
        ),
        (
            "struct L { input: 5x5x3, output: 4, activation: relu, depthwise_activation: none }",
            "conflicts with `activation`",
        ),
        (
            "struct L { input: 5x5x3, output: 4u8 }",
            "remove the suffix `u8`",
        ),
        (
            "struct L { input: 5x5x3u8, output: 4 }",
            "remove the suffix `u8`",
        ),
        (
            "struct L { input: 5x5x3, output: 4, activation: ReLU }",
            "did you mean `relu`?",
        ),
        (
            "struct L { input: 5x5x3, output: 4, bias: 3 }",
            "`bias` takes one of `none`, `pointwise` or `both`, found `3`",
        ),
        (
            "struct L { input: 4294967296 x 4294967296 x 3, output: 4, kernel: 1 }",
            "the number of input elements overflows `usize`",
        ),
        (
            "struct L { input: 5x5x3, output: \"4\" }",
            "`output` takes the number of output channels, e.g. `4`, found a string",
        ),
        (
            "struct L { input: 5x5x3, output: 4, prefix: \"a.\" }",
            "`prefix` names tensors in a `weights` file",
        ),
        (
            "struct L { input: 5x5x3, output: 4, weights: \"\" }",
            "`weights` takes the path of a safetensors file, found an empty string",
        ),
        (
            "struct L { input: 5x5x3, output: 4, weights: model.safetensors }",
            "`weights` takes a string in double quotes",
        ),
        (
            "struct L { input:, output: 4 }",
            "expected a value after `input:`",
        ),
        (
            "struct L { input 5x5x3, output: 4 }",
            "expected `:` after `input`",
        ),
    ];
    for (src, expected) in cases {
        let found = errors(src);
        assert!(
            found.iter().any(|m| m.contains(expected)),
            "{src}\n  expected a message containing: {expected}\n  got: {found:?}"
        );
    }
}

/// A malformed value is one message: its key does not also count as missing, and a missing
/// comma does not swallow the next entry.
#[test]
fn one_mistake_one_message() {
    for src in [
        "struct L { input: 5.0 x 5 x 3, output: 4 }",
        "struct L { input: -3 x 5 x 3, output: 4 }",
        "struct L { input: 5 x 5 x, output: 4 }",
        "struct L { input: 5x5x3u8, output: 4 }",
        "struct L { input:, output: 4 }",
        "struct L { input 5x5x3, output: 4 }",
        "struct L { input: 5x5x3 output: 4 }",
        "struct L { input: 5x5x3, padding: same output: 4 }",
        "struct L { input: 99999999999999999999999 x 5 x 3, output: 4 }",
        // A misspelled required key is not reported missing as well.
        "struct L { input: 5x5x3, outptu: 4 }",
        "struct L { inptu: 5x5x3, output: 4 }",
    ] {
        let found = errors(src);
        assert_eq!(found.len(), 1, "{src}: {found:?}");
    }
}

#[test]
fn errors_before_the_braces_still_give_a_stub() {
    for src in [
        "pub struct Seed<T> { input: 5x5x3, output: 4 }",
        "pub struct Seed;",
    ] {
        let text = crate::expand(&quote!(::separable), tokens(src)).to_string();
        assert!(text.contains("pub struct Seed ;"), "{text}");
        assert_eq!(text.matches("compile_error").count(), 1, "{text}");
    }
}

#[test]
fn all_mistakes_are_reported_at_once() {
    let found = errors("struct L { input: 5x0x3, kernal: 3, stride: 0, bias: maybe }");
    assert_eq!(found.len(), 5, "{found:?}"); // zero, unknown key, stride, bias, missing output
}

#[test]
fn errors_come_with_a_stub_struct() {
    let out = crate::expand(
        &quote!(::separable),
        tokens("pub struct Broken { input: 5x5x3 }"),
    );
    let text = out.to_string();
    assert!(text.contains("pub struct Broken ;"), "{text}");
    assert!(text.contains("compile_error"), "{text}");
}

/// The emitted size does not grow with the image: MobileNet v1 layers expand to a bounded
/// number of lines, however many pixels they have.
#[test]
fn expansions_stay_small() {
    let lines = |src: &str| expand_pretty(src).lines().count();
    let seed = lines(SEED);
    let budget = 480;
    for src in [
        "struct B { input: 112 x 112 x 32, output: 64, padding: same, bias: both, activation: relu }",
        "struct B { input: 112 x 112 x 64, output: 128, stride: 2, padding: same }",
        "struct B { input: 14 x 14 x 512, output: 512, padding: same, multiplier: 3 }",
        "struct B { input: 7 x 7 x 1024, output: 1024, padding: same }",
        "struct B { input: 4096 x 4096 x 8, output: 8, kernel: 7, dilation: 2, padding: same }",
        "struct B { input: 512 x 512 x 1, output: 1, kernel: 31, padding: same }",
    ] {
        let n = lines(src);
        assert!(n <= budget, "{src} expands to {n} lines (budget {budget})");
    }
    assert!(seed <= budget, "the seed expands to {seed} lines");
}

/// The messages of the `compile_error!`s of a network's expansion, and the names of the structs
/// it declares with whether each is a stub (no fields).
fn net_expansion(src: &str) -> (Vec<String>, Vec<(String, bool)>) {
    let out = crate::net::expand(&quote!(::separable), tokens(src));
    let file: syn::File =
        syn::parse2(out).unwrap_or_else(|e| panic!("not a Rust file ({e}) for {src}"));
    let mut messages = Vec::new();
    let mut structs = Vec::new();
    for item in file.items {
        match item {
            syn::Item::Macro(m)
                if m.mac
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "compile_error") =>
            {
                let literal: syn::LitStr = syn::parse2(m.mac.tokens).expect("one string");
                messages.push(literal.value());
            }
            syn::Item::Struct(s) => structs.push((s.ident.to_string(), s.fields.is_empty())),
            _ => {}
        }
    }
    (messages, structs)
}

fn net(body: &str) -> String {
    format!("pub struct Body {{ {body} }}")
}

#[test]
#[allow(clippy::too_many_lines)] // one line per message
fn net_messages_name_the_problem() {
    let blocks = "blocks: { b0: B0 { output: 4 }, b1: B1 { output: 8 } }";
    let cases: Vec<(String, &str)> = vec![
        (net(blocks), "missing `input`"),
        (net("input: 8 x 8 x 2"), "missing `blocks`"),
        (net("input: 8 x 8 x 2, blocks: {}"), "`blocks` is empty"),
        (
            net(&format!("input: 8 x 8 x 2, {blocks}, kernel: 3")),
            "`kernel` is a layer key",
        ),
        (
            net(&format!("input: 8 x 8 x 2, {blocks}, inptu: 3")),
            "unknown key `inptu`; did you mean `input`?",
        ),
        (
            net(&format!("input: 8 x 8 x 2, {blocks}, foo: 3")),
            "unknown key `foo`; expected `input`, `defaults` or `blocks`",
        ),
        (
            net(&format!("input: 8 x 8 x 2, input: 8 x 8 x 2, {blocks}")),
            "duplicate key `input`",
        ),
        (
            net(&format!("input: 8 x 8, {blocks}")),
            "`input` takes `H x W x C`",
        ),
        (
            net(&format!("input: 8 x 8 x 2, defaults: 3, {blocks}")),
            "`defaults` takes the layer entries",
        ),
        (
            net("input: 8 x 8 x 2, blocks: 3"),
            "`blocks` takes `{ field: Type",
        ),
        (
            net(&format!(
                "input: 8 x 8 x 2, defaults: {{ input: 8 x 8 x 2 }}, {blocks}"
            )),
            "`input` is not a default",
        ),
        (
            net(&format!(
                "input: 8 x 8 x 2, defaults: {{ prefix: \"a.\" }}, {blocks}"
            )),
            "`prefix` is set per block",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 { output: 4, prefix: 3 } }"),
            "`prefix` takes a string",
        ),
        (
            net(
                "input: 8 x 8 x 2, blocks: { b0: B0 { output: 4, prefix: \"a.\", prefix: \"b.\" } }",
            ),
            "duplicate key `prefix`",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 { output: 4 } b1: B1 { output: 4 } }"),
            "expected `,` after block `b0`",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 { output: 4 } ; }"),
            "unexpected `;` after block `b0`",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0 B0 { output: 4 } }"),
            "expected `:` and the block's type after `b0`",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: { output: 4 } }"),
            "expected the block's type name after `b0:`",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 }"),
            "expected the block's `{ key: value, .. }` after `B0`",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { struct: B0 { output: 4 } }"),
            "expected a block such as",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { # b0: B0 { output: 4 } }"),
            "expected an attribute",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: Body { output: 4 } }"),
            "is the network's own name",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 { output: 4 }, b1: B0 { output: 4 } }"),
            "duplicate block type `B0`: block `b0` declares it already",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 { output: 4 }, b0: B1 { output: 4 } }"),
            "duplicate block field `b0`",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 { input: 8 x 8 x 3, output: 4 } }"),
            "block `B0` declares input `8 x 8 x 3` but the network's input is `8 x 8 x 2`",
        ),
        (
            net(
                "input: 8 x 8 x 2, blocks: { b0: B0 { output: 4 }, b1: B1 { input: 6 x 6 x 5, output: 4 } }",
            ),
            "block `B1` declares input `6 x 6 x 5` but `B0` outputs `6 x 6 x 4`",
        ),
        (
            net(
                "input: 8 x 8 x 2, blocks: { b0: B0 { output: 4, dtype: f64 }, b1: B1 { output: 4 } }",
            ),
            "block `B1` takes `f32` tensors but `B0` outputs `f64` tensors",
        ),
        (
            net(
                "input: 8 x 8 x 2, blocks: { b0: B0 { output: 4 }, b1: B1 { output: 4, kernal: 1 } }",
            ),
            "in block `B1`: unknown key `kernal`; did you mean `kernel`?",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 { } }"),
            "in block `B0`: missing `output`",
        ),
        (
            net(
                "input: 8 x 8 x 2, blocks: { b0: B0 { output: 4 }, b1: B1 { output: 4 }, b2: B2 { output: 4 }, b3: B3 { output: 4 } }",
            ),
            "in block `B3`: the kernel does not fit: the input height is 2",
        ),
        (
            net("input: 8 x 8 x 2, blocks: { b0: B0 { output: 4, output: 5 } }"),
            "in block `B0`: duplicate key `output`",
        ),
        (
            "pub struct Body<T> { input: 8 x 8 x 2 }".to_owned(),
            "take no generic parameters",
        ),
        (
            "pub struct Body;".to_owned(),
            "expected the network's `{ input: .., defaults: { .. }, blocks: { .. } }`",
        ),
        (
            format!("{} extra", net(&format!("input: 8 x 8 x 2, {blocks}"))),
            "unexpected tokens after the network's",
        ),
    ];
    for (src, expected) in &cases {
        let (messages, _) = net_expansion(src);
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{src}\n  expected a message containing: {expected}\n  got: {messages:?}"
        );
        assert_eq!(messages.len(), 1, "{src}: {messages:?}");
    }
}

#[test]
fn net_blocks_override_defaults_and_follow_each_other() {
    let src = net(
        "input: 8 x 8 x 2, defaults: { padding: same, output: 6, bias: both }, \
                   blocks: { b0: B0 { stride: 2 }, b1: B1 { output: 3, bias: none } }",
    );
    let (messages, structs) = net_expansion(&src);
    assert!(messages.is_empty(), "{messages:?}");
    assert_eq!(
        structs,
        [
            ("B0".to_owned(), false),
            ("B1".to_owned(), false),
            ("Body".to_owned(), false)
        ]
    );
    let text = crate::net::expand(&quote!(::separable), tokens(&src)).to_string();
    // B0 takes the network's input and outputs 4 x 4 x 6, which B1 takes.
    assert!(
        text.contains("pub const INPUT_SHAPE : [usize ; 3] = [8 , 8 , 2]"),
        "{text}"
    );
    assert!(
        text.contains("pub const OUTPUT_SHAPE : [usize ; 3] = [4 , 4 , 6]"),
        "{text}"
    );
    assert!(
        text.contains("pub const INPUT_SHAPE : [usize ; 3] = [4 , 4 , 6]"),
        "{text}"
    );
    assert!(
        text.contains("bias : :: separable :: Bias :: None"),
        "{text}"
    );
    assert!(
        text.contains("bias : :: separable :: Bias :: Both"),
        "{text}"
    );
}

/// After a failed block the rest are stubs, and so is the network: no cascade of errors about
/// their inputs, and every type still exists for code that names it.
#[test]
fn net_errors_come_with_stubs() {
    let src = net("input: 8 x 8 x 2, defaults: { padding: same }, \
                   blocks: { b0: B0 { output: 4 }, b1: B1 { output: 4, stride: 0 }, b2: B2 { output: 4 } }");
    let (messages, structs) = net_expansion(&src);
    assert_eq!(
        messages,
        ["in block `B1`: `stride` must be at least 1, found 0"]
    );
    assert_eq!(
        structs,
        [
            ("B0".to_owned(), false),
            ("B1".to_owned(), true),
            ("B2".to_owned(), true),
            ("Body".to_owned(), true)
        ]
    );
    // A block that does not parse breaks the chain the same way.
    let src = net(
        "input: 8 x 8 x 2, blocks: { b0: B0 { output: 4 }, b1: B1 ( output: 4 ), \
                   b2: B2 { input: 6 x 6 x 4, output: 4 } }",
    );
    let (messages, structs) = net_expansion(&src);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        structs,
        [
            ("B0".to_owned(), false),
            ("B1".to_owned(), true),
            ("B2".to_owned(), true),
            ("Body".to_owned(), true)
        ]
    );
}

#[test]
fn net_derives_reach_the_blocks_once() {
    let src = "#[derive(Clone, Debug)] pub struct Body { input: 4 x 4 x 2, \
               blocks: { #[derive(Clone)] b0: B0 { output: 4 }, b1: B1 { output: 4 } } }";
    let out = crate::net::expand(&quote!(::separable), tokens(src));
    let file: syn::File = syn::parse2(out).unwrap();
    let derives = |name: &str| -> Vec<String> {
        file.items
            .iter()
            .filter_map(|item| match item {
                syn::Item::Struct(s) if s.ident == name => Some(s),
                _ => None,
            })
            .flat_map(|s| &s.attrs)
            .filter(|a| a.path().is_ident("derive"))
            .map(|a| quote!(#a).to_string())
            .collect()
    };
    assert_eq!(derives("B0"), ["# [derive (Clone)]", "# [derive (Debug)]"]);
    assert_eq!(derives("B1"), ["# [derive (Clone , Debug)]"]);
    assert_eq!(derives("Body"), ["# [derive (Clone , Debug)]"]);
}

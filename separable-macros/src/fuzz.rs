//! A fuzz test of the whole pipeline (`$crate;` split → parse → validate → plan → codegen) on
//! `proc_macro2` tokens, outside the compiler.
//!
//! Every run tries at least [`DEFAULT_ITERATIONS`] distinct generated invocations:
//!
//! * valid invocations (the seed, MobileNet blocks, every key, the 2^32-element limit) mutated
//!   by dropping, duplicating, swapping, replacing and inserting tokens, wrapping runs of tokens
//!   in groups, truncating, at any depth of nesting;
//! * freshly generated `struct Name { key: value, .. }` bodies whose values are extreme
//!   integers (0, 1, 2^32, `usize::MAX`, past `u128::MAX`), suffixed, hex, octal and binary
//!   literals, words, random identifiers and other literals, some of them mutated as well;
//! * tokens wrapped in invisible (`Delimiter::None`) groups, as `macro_rules!` fragments
//!   (`$n:literal`, `$e:expr`) reach the macro;
//! * one input in [`NET_SHARE`] is a `separable_net!` network instead: valid networks mutated
//!   as above, and fresh ones with random defaults and blocks (explicit inputs, prefixes,
//!   repeated names, misplaced keys), expanded by `net::expand`.
//!
//! Each input is rendered to text and lexed again, so every token carries a span of that text
//! (the `span-locations` feature of `proc-macro2`, a dev-dependency, gives fallback spans a
//! file, a byte range and lines and columns). The test asserts, for every input:
//!
//! * the pipeline does not panic (`catch_unwind` around it; the input is printed if it does);
//! * without errors, the output is at most [`MAX_EXPANSION_BYTES`] of text
//!   ([`MAX_NET_EXPANSION_BYTES`] for a network) and parses as a Rust file (`syn::File`) holding
//!   the struct (a network: its blocks and itself), none of them a stub;
//! * with errors, the output is `compile_error!` invocations plus at most the stub struct (for
//!   a network: the blocks before the first failed one, then stubs, the network's last), it
//!   parses as a Rust file, and every error's span lies inside the input's text (first token's
//!   start to last token's end), or is the call site when the input ended too early for any
//!   token to blame (the compiler shows the call site as the whole macro invocation).
//!
//! It prints how many inputs were tried and accepted. `SEPARABLE_FUZZ_ITERATIONS` sets the
//! number of inputs, `SEPARABLE_FUZZ_SEED` the generator's seed and `SEPARABLE_FUZZ_WORKERS`
//! the number of threads (one per core by default); `SEPARABLE_FUZZ_MESSAGES=1` lists the kinds
//! of error reached, and `SEPARABLE_FUZZ_TRACE=<path>` writes each input to a file before
//! expanding it (for inputs that kill the process). DEVELOPMENT.md has the command for a long run.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use proc_macro2::{Delimiter, Group, LineColumn, Span, TokenStream, TokenTree};
use quote::quote;

/// Inputs per run unless `SEPARABLE_FUZZ_ITERATIONS` says otherwise.
const DEFAULT_ITERATIONS: u64 = 100_000;

/// The generator's seed unless `SEPARABLE_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x5E9A_4AB1_E00F_F022;

/// Each worker remembers the inputs it generated (by hash) so that every input it counts is
/// distinct; the set is cleared when it reaches this size, to bound memory in long runs.
const DISTINCT_WINDOW: usize = 1 << 21;

/// The largest expansion accepted, as text: 40 times the seed's (about 26 KB). The emitted code
/// must not grow with the layer's sizes (`plan.rs`); a layer beyond this is a bug.
const MAX_EXPANSION_BYTES: usize = 1 << 20;

/// Valid invocations the mutations start from.
const BASES: &[&str] = &[
    "/// The seed layer of the README.\n#[derive(Clone, Debug)]\n\
     pub struct Seed { input: 5 x 5 x 3, output: 4, kernel: 3 x 3, padding: same }",
    "pub(crate) struct L { input: 9x7x2, output: 3, kernel: 3x5, stride: 2x1, dilation: 2, \
     padding: 1x2, multiplier: 2, bias: both, activation: relu6, dtype: f64, }",
    "struct T { input: 1 x 1 x 1, output: 1, kernel: 1 }",
    "/// MobileNet v1, block 2.\n#[allow(dead_code)]\npub struct Block2 { input: 112 x 112 x 64, \
     output: 128, stride: 2, padding: same, bias: both, activation: relu }",
    "pub struct W { input: 40x40x8, output: 8, kernel: 9, padding: same, \
     depthwise_activation: relu, pointwise_activation: relu6, bias: pointwise }",
    "pub(in crate::layers) struct E { input: 7 x7x 1024, output: 1024, kernel: 3 x 1, \
     dilation: 1 x 2, padding: valid, multiplier: 1, dtype: f32 }",
    "struct Limit { input: 65536 x 65536 x 1, output: 1, kernel: 1 }",
    "#[derive(Debug)] struct Wide { input: 1 x 4096 x 2, output: 3, kernel: 1 x 31, \
     stride: 1 x 7, dilation: 1 x 3, padding: 0 x 45, multiplier: 5 }",
];

/// The keys `separable_conv!` knows: the validator's own list.
use crate::model::KEYS;

/// Words that are values, keys, keywords, near misses and identifiers the size syntax reads.
const WORDS: &[&str] = &[
    "same",
    "valid",
    "none",
    "pointwise",
    "both",
    "relu",
    "relu6",
    "f32",
    "f64",
    "f16",
    "x",
    "xx",
    "x5",
    "x5x3",
    "xx5",
    "x0",
    "X",
    "struct",
    "pub",
    "crate",
    "in",
    "self",
    "super",
    "Self",
    "r#input",
    "r#struct",
    "r#same",
    "kernal",
    "sane",
    "ReLU",
    "Same",
    "_",
    "__",
    "é",
    "ｘ",
    "input_",
    "inputs",
    "usize",
    "u8",
    "e",
    "E",
    "x_1",
    "ß",
    "depthwise",
    "pointwise_",
];

/// Integers at the edges of every range the macro converts to.
const EXTREME_INTEGERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "7",
    "16",
    "64",
    "255",
    "256",
    "257",
    "1024",
    "65535",
    "65536",
    "65537",
    "2147483648",
    "4294967295",
    "4294967296",
    "4294967297",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "4611686018427387904",
    "4611686018427387905",
    "6148914691236517206",
    "9223372036854775809",
    "340282366920938463463374607431768211455",
    "340282366920938463463374607431768211456",
    "99999999999999999999999999999999999999999999999999999999999",
    "00",
    "007",
    "1_000",
    "1__",
    "0x0",
    "0x10",
    "0xFFFF_FFFF",
    "0xFFFFFFFFFFFFFFFF",
    "0x1_0000_0000_0000_0000",
    "0o777",
    "0b1",
    "0b",
    "0x",
];

/// Suffixes for integer literals: type suffixes, size lists glued on, and garbage.
const SUFFIXES: &[&str] = &[
    "usize", "u8", "u128", "i32", "f32", "_usize", "x5", "x0x3", "x", "xx", "x5x3u8", "e3", "_",
    "abc",
];

/// Literals that are not integers.
const OTHER_LITERALS: &[&str] = &[
    "\"4\"",
    "\"\"",
    "\"5 x 5 x 3\"",
    "r\"raw\"",
    "r#\"x\"#",
    "b\"b\"",
    "c\"c\"",
    "'c'",
    "'\\u{10FFFF}'",
    "b'a'",
    "1.5",
    "5.",
    "1e3",
    "1e999",
    "0.0",
    "1f64",
    "5.0x5",
    "1_f32",
];

/// Punctuation, alone and in the multi-character forms the lexer joins.
const PUNCTS: &[&str] = &[
    ",", ":", ";", "::", "*", "-", "+", "#", "!", ".", "..", "..=", "=>", "->", "<", ">", "?", "@",
    "$", "&", "|", "^", "~", "/", "%", "=", "==", "'a", "#!", ",,", ": :",
];

/// Groups, nested and flat.
const GROUPS: &[&str] = &[
    "()",
    "[]",
    "{}",
    "((((((((((((((((1))))))))))))))))",
    "{ input: 5 x 5 x 3, output: 4 }",
    "[x]",
    "(5 x 5 x 3)",
    "{ { } }",
    "#[derive(Clone)]",
    "#[cfg(any())]",
    "#[doc = \"d\"]",
];

/// A small, fast, deterministic generator (`SplitMix64`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        // `n` is a length or a small constant, far below 2^64.
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    /// True with probability `1 / n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A `usize`-range integer with every bit length equally likely, so small and huge values both
/// come up.
fn any_width(rng: &mut Rng) -> u64 {
    let bits = rng.below(65);
    if bits == 0 {
        0
    } else {
        rng.next() >> (64 - bits)
    }
}

/// An integer literal: extreme, random width, random digits, in any base, maybe suffixed.
fn integer(rng: &mut Rng) -> String {
    let mut text = match rng.below(6) {
        0 | 1 => rng.pick(EXTREME_INTEGERS).to_owned(),
        2 => (1 + rng.below(9)).to_string(),
        3 => any_width(rng).to_string(),
        4 => {
            // Up to 45 digits: past u128::MAX (39 digits).
            let len = 1 + rng.below(45);
            (0..len)
                .map(|_| char::from(b'0' + u8::try_from(rng.below(10)).expect("digit")))
                .collect()
        }
        _ => match rng.below(3) {
            0 => format!("0x{:x}", any_width(rng)),
            1 => format!("0o{:o}", any_width(rng)),
            _ => format!("0b{:b}", any_width(rng)),
        },
    };
    if rng.one_in(8) {
        text.push_str(rng.pick(SUFFIXES));
    }
    text
}

/// A size list such as `5x5x3`, `5 x 5 x 3` or `5 x5x 3`, with one to four sizes.
fn sizes(rng: &mut Rng) -> String {
    let count = 1 + rng.below(4);
    let mut text = String::new();
    for i in 0..count {
        if i > 0 {
            text.push_str(rng.pick(&["x", " x ", "x ", " x"]));
        }
        // Mostly small: a value the layer can accept.
        if rng.one_in(3) {
            text.push_str(&integer(rng));
        } else {
            text.push_str(&(1 + rng.below(12)).to_string());
        }
    }
    text
}

/// An identifier: a known word or random letters, digits and underscores.
fn identifier(rng: &mut Rng) -> String {
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCXYZ_";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_x";
    if rng.one_in(2) {
        return rng.pick(WORDS).to_owned();
    }
    if rng.one_in(3) {
        return rng.pick(KEYS).to_owned();
    }
    let len = 1 + rng.below(8);
    let mut text = String::new();
    text.push(char::from(FIRST[rng.below(FIRST.len())]));
    for _ in 1..len {
        text.push(char::from(REST[rng.below(REST.len())]));
    }
    if text == "_" { "x_".to_owned() } else { text }
}

/// A value for a key: sizes, a word, or anything else.
fn value(rng: &mut Rng) -> String {
    match rng.below(8) {
        0..=3 => sizes(rng),
        4 | 5 => identifier(rng),
        6 => format!("-{}", integer(rng)),
        _ => fragment(rng, 1),
    }
}

/// Source text of a few tokens of any kind.
fn fragment(rng: &mut Rng, depth: usize) -> String {
    match rng.below(11) {
        0 | 1 => integer(rng),
        2 => sizes(rng),
        3 | 4 => identifier(rng),
        5 => rng.pick(OTHER_LITERALS).to_owned(),
        6 | 7 => rng.pick(PUNCTS).to_owned(),
        8 if depth < 4 => {
            let inner: Vec<String> = (0..rng.below(4))
                .map(|_| fragment(rng, depth + 1))
                .collect();
            let inner = inner.join(" ");
            match rng.below(3) {
                0 => format!("({inner})"),
                1 => format!("[{inner}]"),
                _ => format!("{{{inner}}}"),
            }
        }
        8 => rng.pick(GROUPS).to_owned(),
        9 => format!("{}: {}", rng.pick(KEYS), value(rng)),
        _ => format!("{}:", rng.pick(KEYS)),
    }
}

/// A fresh invocation: a header and entries with distinct keys in any order, mostly well
/// formed, with sizes that are mostly small and sometimes at or past a limit.
fn fresh_invocation(rng: &mut Rng) -> String {
    let mut text = String::new();
    if rng.one_in(4) {
        text.push_str(rng.pick(&["/// Doc.\n", "#[derive(Clone)] ", "#[allow(unused)] "]));
    }
    text.push_str(rng.pick(&["", "pub ", "pub(crate) ", "pub(super) "]));
    text.push_str("struct ");
    text.push_str(rng.pick(&["L", "Layer", "Seed", "r#Struct", "É"]));
    text.push_str(" { ");
    let mut keys: Vec<&str> = KEYS.to_vec();
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i + 1));
    }
    let optional = rng.below(6);
    let mut entries = Vec::new();
    for key in keys {
        let required = key == "input" || key == "output";
        // The required keys are almost always there, the others a few at a time.
        if (required && rng.one_in(25)) || (!required && rng.below(KEYS.len()) >= optional) {
            continue;
        }
        let value = entry_value(rng, key);
        entries.push(format!("{key}: {value}"));
    }
    text.push_str(&entries.join(", "));
    if rng.one_in(2) {
        text.push(',');
    }
    text.push_str(" }");
    text
}

/// A value for a layer key: mostly of the right kind and small, sometimes extreme or misspelt.
fn entry_value(rng: &mut Rng, key: &str) -> String {
    match key {
        "input" => {
            let dims: Vec<String> = (0..3).map(|_| small_or_extreme(rng)).collect();
            dims.join(rng.pick(&["x", " x ", "x ", " x"]))
        }
        "output" | "multiplier" => small_or_extreme(rng),
        "kernel" | "stride" | "dilation" => {
            if rng.one_in(2) {
                small_or_extreme(rng)
            } else {
                format!("{} x {}", small_or_extreme(rng), small_or_extreme(rng))
            }
        }
        "padding" => match rng.below(4) {
            0 => small_or_extreme(rng),
            1 => format!("{} x {}", small_or_extreme(rng), small_or_extreme(rng)),
            _ => rng.pick(&["same", "valid", "same", "samee"]).to_owned(),
        },
        "bias" => rng
            .pick(&["none", "pointwise", "both", "both", "bothh"])
            .to_owned(),
        "activation" | "depthwise_activation" | "pointwise_activation" => rng
            .pick(&["none", "relu", "relu6", "relu6", "relu7"])
            .to_owned(),
        "dtype" => rng.pick(&["f32", "f64", "f64", "f16"]).to_owned(),
        // Paths are relative to this crate's manifest directory; the small file mostly,
        // as every input that names a file reads it.
        "weights" => rng
            .pick(&[
                "\"../tests/data/embed_dtypes.safetensors\"",
                "\"../tests/data/embed_dtypes.safetensors\"",
                "\"../tests/data/embed_dtypes.safetensors\"",
                "\"../tests/data/pytorch_vectors.json\"",
                "\"missing.safetensors\"",
                "\"\"",
                "../tests/data/embed_dtypes.safetensors",
            ])
            .to_owned(),
        "prefix" => rng
            .pick(&[
                "\"f32.\"",
                "\"bf16.\"",
                "\"i64.\"",
                "\"shape.\"",
                "\"\"",
                "f32",
            ])
            .to_owned(),
        _ => value(rng),
    }
}

/// A small layer with one size (of `input`, `output`, `kernel`, `stride`, `dilation`,
/// `padding` or `multiplier`) replaced by an extreme integer, so that little but that value
/// stands between validation and the shape arithmetic.
fn one_extreme_value(rng: &mut Rng) -> String {
    const KEYS_AND_ARITY: [(&str, usize); 7] = [
        ("input", 3),
        ("output", 1),
        ("kernel", 2),
        ("stride", 2),
        ("dilation", 2),
        ("padding", 2),
        ("multiplier", 1),
    ];
    let (extreme_key, extreme_slot) = {
        let key = rng.below(KEYS_AND_ARITY.len());
        (key, rng.below(KEYS_AND_ARITY[key].1))
    };
    let extreme = if rng.one_in(3) {
        any_width(rng).to_string()
    } else {
        rng.pick(EXTREME_INTEGERS).to_owned()
    };
    let mut entries = Vec::new();
    for (index, (key, arity)) in KEYS_AND_ARITY.into_iter().enumerate() {
        let mut sizes: Vec<String> = match key {
            // Large enough for strips (unrolled layers expand to much more code).
            "input" => (0..3).map(|_| (9 + rng.below(16)).to_string()).collect(),
            "kernel" | "dilation" => vec!["1".to_owned(), (1 + rng.below(3)).to_string()],
            _ => (0..arity).map(|_| (1 + rng.below(3)).to_string()).collect(),
        };
        if index == extreme_key {
            sizes[extreme_slot] = extreme.clone();
        } else if key == "padding" && rng.one_in(2) {
            sizes = vec![rng.pick(&["same", "valid"]).to_owned()];
        }
        entries.push(format!("{key}: {}", sizes.join(" x ")));
    }
    format!("struct L {{ {} }}", entries.join(", "))
}

/// Mostly a size a layer can have, often one at or past a limit.
fn small_or_extreme(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 | 1 => integer(rng),
        2 => rng
            .pick(&[
                "0",
                "64",
                "112",
                "255",
                "256",
                "1024",
                "65536",
                "4294967296",
                "9223372036854775808",
                "18446744073709551615",
            ])
            .to_owned(),
        _ => (1 + rng.below(9)).to_string(),
    }
}

/// Lexes a generator's text; `None` if the lexer rejects it.
fn lex(text: &str) -> Option<Vec<TokenTree>> {
    text.parse::<TokenStream>()
        .ok()
        .map(|stream| stream.into_iter().collect())
}

/// One structural mutation somewhere in `tokens`, at any depth.
fn mutate(tokens: &mut Vec<TokenTree>, rng: &mut Rng, depth: usize) {
    let groups: Vec<usize> = (0..tokens.len())
        .filter(|&i| matches!(tokens[i], TokenTree::Group(_)))
        .collect();
    // At the top level the layer's body is the last group: go in most of the time.
    let descend = !groups.is_empty() && depth < 6 && rng.below(4) < if depth == 0 { 3 } else { 1 };
    if descend {
        let i = if depth == 0 && !rng.one_in(5) {
            groups[groups.len() - 1]
        } else {
            groups[rng.below(groups.len())]
        };
        if let TokenTree::Group(group) = &tokens[i] {
            let mut inner: Vec<TokenTree> = group.stream().into_iter().collect();
            mutate(&mut inner, rng, depth + 1);
            tokens[i] =
                TokenTree::Group(Group::new(group.delimiter(), inner.into_iter().collect()));
        }
        return;
    }
    let len = tokens.len();
    let i = rng.below(len + 1);
    match rng.below(9) {
        0 if i < len => {
            tokens.remove(i);
        }
        1 if i < len => {
            let copy = tokens[i].clone();
            tokens.insert(i, copy);
        }
        2 if i < len && len > 1 => {
            let j = rng.below(len);
            tokens.swap(i, j);
        }
        3 if i < len => {
            if let Some(new) = lex(&fragment(rng, depth)) {
                tokens.splice(i..=i, new);
            }
        }
        4 if i < len => {
            // Wrap a run of one to three tokens in a group.
            let end = (i + 1 + rng.below(3)).min(len);
            let run: TokenStream = tokens.drain(i..end).collect();
            let delimiter =
                [Delimiter::Parenthesis, Delimiter::Bracket, Delimiter::Brace][rng.below(3)];
            tokens.insert(i, TokenTree::Group(Group::new(delimiter, run)));
        }
        5 if i < len && rng.one_in(3) => tokens.truncate(i),
        6 if i < len => {
            // Replace a literal with an integer or sizes: the values the macro converts.
            if let Some(new) = lex(&if rng.one_in(2) {
                integer(rng)
            } else {
                sizes(rng)
            }) {
                tokens.splice(i..=i, new);
            }
        }
        _ => {
            if let Some(new) = lex(&fragment(rng, depth)) {
                let at = i.min(len);
                tokens.splice(at..at, new);
            }
        }
    }
}

/// Wraps some tokens of the (already lexed) input in invisible groups, as `macro_rules!`
/// fragments reach a proc macro, keeping the tokens' spans.
fn wrap_in_invisible_groups(stream: TokenStream, rng: &mut Rng, depth: usize) -> TokenStream {
    let mut tokens: Vec<TokenTree> = stream.into_iter().collect();
    for token in &mut tokens {
        if let TokenTree::Group(group) = token
            && depth < 4
        {
            let inner = wrap_in_invisible_groups(group.stream(), rng, depth + 1);
            let mut new = Group::new(group.delimiter(), inner);
            new.set_span(group.span());
            *token = TokenTree::Group(new);
        }
    }
    let mut i = 0;
    while i < tokens.len() {
        if rng.one_in(6) {
            // One token (`$n:literal`), or a short run (`$e:expr` holding `-1`), maybe nested.
            let end = (i + if rng.one_in(4) { 2 } else { 1 }).min(tokens.len());
            let run: Vec<TokenTree> = tokens.drain(i..end).collect();
            let span = run[0]
                .span()
                .join(run[run.len() - 1].span())
                .unwrap_or_else(|| run[0].span());
            let mut group = Group::new(Delimiter::None, run.into_iter().collect());
            group.set_span(span);
            let mut token = TokenTree::Group(group);
            if rng.one_in(4) {
                let mut outer = Group::new(Delimiter::None, TokenStream::from(token));
                outer.set_span(span);
                token = TokenTree::Group(outer);
            }
            tokens.insert(i, token);
        }
        i += 1;
    }
    tokens.into_iter().collect()
}

/// One generated input as text, before lexing.
fn generate(rng: &mut Rng) -> String {
    // Accepted inputs cost 20 to 50 times more than rejected ones (the whole expansion is
    // generated and parsed again), so about one input in thirty is accepted.
    let mut tokens = match rng.below(40) {
        // One extreme value in an otherwise valid layer: reaches the shape arithmetic with it.
        0..=2 => return one_extreme_value(rng),
        // Fresh, well formed or nearly: reaches validation and codegen with unusual shapes.
        3..=5 => return fresh_invocation(rng),
        6..=13 => lex(&fresh_invocation(rng)),
        _ => lex(rng.pick(BASES)),
    }
    .unwrap_or_default();
    let mutations = if rng.one_in(10) {
        4 + rng.below(12)
    } else {
        1 + rng.below(3)
    };
    for _ in 0..mutations {
        mutate(&mut tokens, rng, 0);
    }
    tokens.into_iter().collect::<TokenStream>().to_string()
}

/// One input in this many is a `separable_net!` invocation.
const NET_SHARE: usize = 20;

/// The most blocks a generated network has (mutations may add a few more).
const MAX_NET_BLOCKS: usize = 3;

/// The largest network expansion accepted, as text: the bound of one layer per block, with room
/// for blocks that mutations add, and the network around them.
const MAX_NET_EXPANSION_BYTES: usize = MAX_EXPANSION_BYTES * (2 * MAX_NET_BLOCKS + 1);

/// Valid networks the mutations start from: defaults, overrides, explicit inputs, prefixes,
/// attributes, derives, `f64`, keys in any order.
const NET_BASES: &[&str] = &[
    "/// Two blocks.\n#[derive(Clone, Debug)]\npub struct Body { input: 8 x 8 x 4, \
     defaults: { kernel: 3, padding: 1, bias: both, activation: relu }, blocks: { \
     /// The stem.\n b0: Stem { output: 8 }, b1: Down { output: 16, stride: 2, prefix: \"features.1.\" } } }",
    "struct Net { input: 6x6x2, blocks: { a: A { output: 3, padding: same }, \
     b: B { input: 6 x 6 x 3, output: 2, kernel: 1 }, c: C { output: 4, kernel: 1, dtype: f32 }, }, }",
    "pub(crate) struct W { defaults: { dtype: f64, depthwise_activation: relu6, multiplier: 2 }, \
     blocks: { x: X { output: 4, kernel: 1 }, #[allow(dead_code)] y: Y { output: 2, kernel: 3 x 1, \
     dilation: 2, padding: 2 x 0 } }, input: 9 x 7 x 2 }",
];

/// A fresh network: a header, the network's keys in any order (sometimes one missing, unknown
/// or a layer key), defaults and one to [`MAX_NET_BLOCKS`] blocks with layer entries of the
/// kinds [`entry_value`] makes, now and then an explicit input, a prefix, a repeated name.
// The generator follows the network's grammar top to bottom; split, it would read worse.
#[allow(clippy::too_many_lines)]
fn fresh_net(rng: &mut Rng) -> String {
    const LAYER_KEYS: &[&str] = &[
        "kernel",
        "stride",
        "dilation",
        "padding",
        "multiplier",
        "bias",
        "activation",
        "depthwise_activation",
        "pointwise_activation",
        "dtype",
    ];
    let mut text = String::new();
    if rng.one_in(3) {
        text.push_str(rng.pick(&[
            "/// Doc.\n",
            "#[derive(Clone, Debug)] ",
            "#[allow(unused)] ",
        ]));
    }
    text.push_str(rng.pick(&["", "pub ", "pub(crate) "]));
    text.push_str("struct ");
    text.push_str(rng.pick(&["Net", "Body", "B0"]));
    text.push_str(" { ");
    let small = |rng: &mut Rng| {
        if rng.one_in(10) {
            small_or_extreme(rng)
        } else {
            (1 + rng.below(12)).to_string()
        }
    };
    let layer_entries = |rng: &mut Rng, count: usize| -> Vec<String> {
        (0..count)
            .map(|_| {
                let key = rng.pick(LAYER_KEYS);
                format!("{key}: {}", entry_value(rng, key))
            })
            .collect()
    };
    let mut parts = Vec::new();
    if !rng.one_in(20) {
        let dims: Vec<String> = (0..3).map(|_| (3 + rng.below(10)).to_string()).collect();
        parts.push(format!("input: {}", dims.join(rng.pick(&["x", " x "]))));
    }
    if rng.one_in(2) {
        let count = rng.below(4);
        let mut entries = layer_entries(rng, count);
        // Network keys in `defaults` are errors of their own.
        if rng.one_in(12) {
            entries.push(rng.pick(&["input: 4x4x2", "prefix: \"p.\""]).to_owned());
        }
        parts.push(format!("defaults: {{ {} }}", entries.join(", ")));
    }
    if !rng.one_in(20) {
        let count = usize::from(!rng.one_in(20)) * (1 + rng.below(MAX_NET_BLOCKS));
        let blocks: Vec<String> = (0..count)
            .map(|i| {
                let mut entries = Vec::new();
                if !rng.one_in(15) {
                    entries.push(format!("output: {}", small(rng)));
                }
                let count = rng.below(3);
                entries.extend(layer_entries(rng, count));
                if rng.one_in(8) {
                    let dims: Vec<String> = (0..3).map(|_| small(rng)).collect();
                    entries.push(format!("input: {}", dims.join(" x ")));
                }
                if rng.one_in(8) {
                    entries.push(
                        rng.pick(&["prefix: \"p.\"", "prefix: \"\"", "prefix: 3", "prefix: p"])
                            .to_owned(),
                    );
                }
                for j in (1..entries.len()).rev() {
                    entries.swap(j, rng.below(j + 1));
                }
                let attr = if rng.one_in(6) { "/// A block.\n" } else { "" };
                // Now and then a repeated field or type name.
                let (field, ty) = match rng.below(30) {
                    0 => (0, i),
                    1 => (i, 0),
                    _ => (i, i),
                };
                format!("{attr}b{field}: T{ty} {{ {} }}", entries.join(", "))
            })
            .collect();
        parts.push(format!("blocks: {{ {} }}", blocks.join(", ")));
    }
    if rng.one_in(20) {
        parts.push(
            rng.pick(&["kernel: 3", "inputs: 3 x 3 x 3", "blocks: {}", "output: 4"])
                .to_owned(),
        );
    }
    for j in (1..parts.len()).rev() {
        parts.swap(j, rng.below(j + 1));
    }
    text.push_str(&parts.join(", "));
    if rng.one_in(2) {
        text.push(',');
    }
    text.push_str(" }");
    text
}

/// One generated network as text, before lexing: fresh, or a base or a fresh one mutated.
fn generate_net(rng: &mut Rng) -> String {
    let mut tokens = match rng.below(10) {
        0..=3 => return fresh_net(rng),
        4..=6 => lex(&fresh_net(rng)),
        _ => lex(rng.pick(NET_BASES)),
    }
    .unwrap_or_default();
    for _ in 0..=rng.below(2) {
        mutate(&mut tokens, rng, 0);
    }
    tokens.into_iter().collect::<TokenStream>().to_string()
}

/// One `compile_error!` of the output: the message and its span as `to_compile_error` emits it
/// (`::core::compile_error!` at the span's start, `{ "message" }` at its end).
struct Emitted {
    message: String,
    start: Span,
    end: Span,
}

/// The `compile_error!` invocations at the top level of an expansion.
fn compile_errors(out: &TokenStream) -> Vec<Emitted> {
    let tokens: Vec<TokenTree> = out.clone().into_iter().collect();
    let mut found = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let TokenTree::Ident(ident) = token else {
            continue;
        };
        if ident != "compile_error" {
            continue;
        }
        let (Some(TokenTree::Punct(bang)), Some(TokenTree::Group(group))) =
            (tokens.get(i + 1), tokens.get(i + 2))
        else {
            panic!("`compile_error` not followed by `!` and a group in {out}");
        };
        assert_eq!(bang.as_char(), '!');
        let literal = match group.stream().into_iter().collect::<Vec<_>>().as_slice() {
            [TokenTree::Literal(literal)] => literal.to_string(),
            other => panic!("compile_error! holds {other:?}, not one string"),
        };
        found.push(Emitted {
            message: literal,
            start: ident.span(),
            end: group.span(),
        });
    }
    found
}

/// Where the input is: the file the lexer made for it and its first and last positions.
struct InputExtent {
    file: String,
    start: LineColumn,
    end: LineColumn,
}

impl InputExtent {
    fn of(tokens: &TokenStream) -> Option<InputExtent> {
        let first = tokens.clone().into_iter().next()?;
        let last = tokens.clone().into_iter().last()?;
        Some(InputExtent {
            file: first.span().file(),
            start: first.span().start(),
            end: last.span().end(),
        })
    }

    fn contains(&self, span: Span) -> bool {
        let key = |lc: LineColumn| (lc.line, lc.column);
        span.file() == self.file
            && key(self.start) <= key(span.start())
            && key(span.start()) <= key(span.end())
            && key(span.end()) <= key(self.end)
    }
}

/// The messages errors at the call site may carry: the input ended before any token could be
/// blamed (`separable_conv!{}`, `separable_conv!{ pub }`).
fn is_end_of_input(message: &str) -> bool {
    message.contains("unexpected end of input")
}

/// What happened to the inputs of a run (or of one worker).
#[derive(Default)]
struct Tally {
    tried: u64,
    accepted: u64,
    /// Inputs the lexer rejected (not counted in `tried`: the compiler would not call the macro).
    unlexable: u64,
    /// Generated inputs identical to one already tried (not counted either).
    repeated: u64,
    errors: u64,
    call_site_errors: u64,
    invisible_groups: u64,
    /// Error messages with their numbers and quoted parts blanked, and how often each came up.
    messages: BTreeMap<String, u64>,
    /// Which of [`MUST_REACH`] some error contained.
    reached: [bool; MUST_REACH.len()],
    /// `separable_net!` inputs among `tried` and `accepted`.
    net_tried: u64,
    net_accepted: u64,
    /// Which of [`NET_MUST_REACH`] some error contained.
    net_reached: [bool; NET_MUST_REACH.len()],
    slowest: (Duration, String),
    /// Inputs whose expansion and check took over [`SLOW`], and the time they took together.
    slow: (u64, Duration),
}

/// An input slower than this is counted (a hundred times the typical time in debug).
const SLOW: Duration = Duration::from_millis(100);

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.tried += other.tried;
        self.accepted += other.accepted;
        self.unlexable += other.unlexable;
        self.repeated += other.repeated;
        self.errors += other.errors;
        self.call_site_errors += other.call_site_errors;
        self.invisible_groups += other.invisible_groups;
        for (kind, count) in other.messages {
            *self.messages.entry(kind).or_default() += count;
        }
        for (mine, theirs) in self.reached.iter_mut().zip(other.reached) {
            *mine |= theirs;
        }
        self.net_tried += other.net_tried;
        self.net_accepted += other.net_accepted;
        for (mine, theirs) in self.net_reached.iter_mut().zip(other.net_reached) {
            *mine |= theirs;
        }
        self.slow.0 += other.slow.0;
        self.slow.1 += other.slow.1;
        if other.slowest.0 > self.slowest.0 {
            self.slowest = other.slowest;
        }
    }
}

/// The message with the parts that vary (quoted text, numbers) blanked, to count kinds.
fn message_kind(message: &str) -> String {
    let mut kind = String::new();
    let mut quoted = false;
    for c in message.chars() {
        match c {
            '`' => {
                quoted = !quoted;
                kind.push('`');
            }
            _ if quoted => {}
            '0'..='9' => {
                if !kind.ends_with('#') {
                    kind.push('#');
                }
            }
            _ => kind.push(c),
        }
    }
    kind
}

/// Checks one expansion; `Err` describes what is wrong.
fn check(
    input: &TokenStream,
    out: TokenStream,
    tally: &mut Tally,
    is_net: bool,
) -> Result<(), String> {
    let errors = compile_errors(&out);
    if errors.is_empty() {
        let bytes = out.to_string().len();
        let bound = if is_net {
            MAX_NET_EXPANSION_BYTES
        } else {
            MAX_EXPANSION_BYTES
        };
        if bytes > bound {
            return Err(format!(
                "the expansion has {bytes} bytes of text; the bound is {bound}"
            ));
        }
    }
    let file: syn::File =
        syn::parse2(out).map_err(|e| format!("the expansion is not a Rust file: {e}"))?;
    if errors.is_empty() {
        tally.accepted += 1;
        tally.net_accepted += u64::from(is_net);
        return check_accepted(&file, is_net);
    }
    if is_net {
        check_invalid_net(&file)?;
    } else {
        check_invalid_layer(&file)?;
    }
    let extent = InputExtent::of(input);
    for error in errors {
        tally.errors += 1;
        let message = error.message.trim_matches('"');
        if message.trim().is_empty() {
            return Err("an empty error message".to_owned());
        }
        *tally.messages.entry(message_kind(message)).or_default() += 1;
        for (reached, needle) in tally.reached.iter_mut().zip(MUST_REACH) {
            *reached |= message.contains(needle);
        }
        for (reached, needle) in tally.net_reached.iter_mut().zip(NET_MUST_REACH) {
            *reached |= message.contains(needle);
        }
        let at_call_site = error.start.file() == Span::call_site().file()
            && error.end.file() == Span::call_site().file();
        if at_call_site {
            tally.call_site_errors += 1;
            if !is_end_of_input(message) {
                return Err(format!(
                    "error at the call site, not in the input: {message}"
                ));
            }
            continue;
        }
        let inside = extent
            .as_ref()
            .is_some_and(|extent| extent.contains(error.start) && extent.contains(error.end));
        if !inside {
            let (s, e) = (error.start.start(), error.end.end());
            return Err(format!(
                "error `{message}` at {}:{}..{}:{} ({}), outside the input ({:?})",
                s.line,
                s.column,
                e.line,
                e.column,
                error.start.file(),
                extent.map(|x| (
                    x.file,
                    x.start.line,
                    x.start.column,
                    x.end.line,
                    x.end.column
                )),
            ));
        }
    }
    Ok(())
}

/// The items of an accepted invocation: a layer is one struct, a network its blocks and the
/// network around them, none of them a stub.
fn check_accepted(file: &syn::File, is_net: bool) -> Result<(), String> {
    let structs = |stubs: bool| {
        file.items
            .iter()
            .filter(|item| matches!(item, syn::Item::Struct(s) if s.fields.is_empty() == stubs))
            .count()
    };
    let least = if is_net { 2 } else { 1 };
    if structs(false) >= least && structs(true) == 0 {
        Ok(())
    } else {
        Err(format!(
            "an accepted invocation expands to {} structs with fields and {} without",
            structs(false),
            structs(true)
        ))
    }
}

/// The items of an invalid layer: `compile_error!`s and at most the stub struct, nothing that
/// could cascade.
fn check_invalid_layer(file: &syn::File) -> Result<(), String> {
    let mut structs = 0;
    for item in &file.items {
        match item {
            syn::Item::Macro(m) if m.mac.path.is_ident("compile_error") => {}
            syn::Item::Macro(m)
                if m.mac
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "compile_error") => {}
            syn::Item::Struct(s) if s.fields.is_empty() => structs += 1,
            other => {
                return Err(format!(
                    "an invalid invocation expands to more than errors and a stub: {}",
                    quote!(#other)
                ));
            }
        }
    }
    if structs > 1 {
        return Err(format!("{structs} stub structs"));
    }
    Ok(())
}

/// The items of an invalid network: the blocks before the first failed one are whole layers
/// (a struct and its `const _`); the rest, and the network (the last struct), are stubs, so
/// nothing can cascade.
fn check_invalid_net(file: &syn::File) -> Result<(), String> {
    for item in &file.items {
        let allowed = match item {
            syn::Item::Macro(m) => m
                .mac
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "compile_error"),
            syn::Item::Struct(_) | syn::Item::Const(_) => true,
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "an invalid network expands to more than errors, blocks and stubs: {}",
                quote!(#item)
            ));
        }
    }
    match file
        .items
        .iter()
        .rfind(|item| matches!(item, syn::Item::Struct(_)))
    {
        Some(syn::Item::Struct(last)) if !last.fields.is_empty() => Err(format!(
            "an invalid network declares `{}` with fields",
            last.ident
        )),
        _ => Ok(()),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => {
            let text = text.replace('_', "");
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={text}: {e}"))
        }
        Err(_) => default,
    }
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".to_owned())
}

/// Error kinds a run must reach, or the generator has stopped exploring the validator.
const MUST_REACH: &[&str] = &[
    "does not fit in `usize`",
    "is larger than the largest size",
    "overflows `usize`",
    "the limit per tensor is",
    "remove the suffix",
    "must be at least 1, found 0",
    "unknown key",
    "duplicate key",
    "expected `,` before",
    "a size cannot be negative",
    "expected a whole number",
    "expected a size after `x`",
    "the kernel does not fit",
    "conflicts with `activation`",
    "did you mean",
    "unexpected tokens after the layer's",
    "expected `:` after",
    "missing `input`",
    "generic parameters",
];

/// Error kinds the `separable_net!` inputs must reach.
const NET_MUST_REACH: &[&str] = &[
    "declares input",
    "outputs `f",
    "`blocks` is empty",
    "missing `blocks`",
    "the first block's input: height x width x channels",
    "is a layer key",
    "`input` is not a default",
    "`prefix` takes a string",
    "duplicate block type",
    "duplicate block field",
    "expected `,` after block",
    "in block `",
];

/// The inputs one worker has generated so far, by hash.
struct Seen {
    hashes: HashSet<u64, BuildHasherDefault<DefaultHasher>>,
}

impl Seen {
    /// Whether `text` is new (and remembers it).
    fn insert(&mut self, text: &str) -> bool {
        if self.hashes.len() >= DISTINCT_WINDOW {
            self.hashes.clear();
        }
        let hash = self.hashes.hasher().hash_one(text);
        self.hashes.insert(hash)
    }
}

/// Runs `iterations` distinct inputs from the generator seeded with `seed`.
fn run_worker(seed: u64, iterations: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let mut seen = Seen {
        hashes: HashSet::default(),
    };
    // With `SEPARABLE_FUZZ_TRACE=<path>`, each input is written to `<path>.<seed>` before it is
    // expanded, so an input that kills the process (out of memory, stack overflow) is on disk.
    let trace = std::env::var_os("SEPARABLE_FUZZ_TRACE").map(|path| {
        let mut path = path;
        path.push(format!(".{seed:x}"));
        path
    });
    while tally.tried < iterations {
        // Forget the previous inputs' spans: keeps lookups fast and offsets below 2^32.
        proc_macro2::extra::invalidate_current_thread_spans();
        let is_net = rng.one_in(NET_SHARE);
        let text = if is_net {
            generate_net(&mut rng)
        } else {
            generate(&mut rng)
        };
        if !seen.insert(&text) {
            tally.repeated += 1;
            continue;
        }
        // The first line is left empty so that no input token is at the call site's position.
        let Ok(user) = format!("\n{text}").parse::<TokenStream>() else {
            tally.unlexable += 1;
            continue;
        };
        let user = if rng.one_in(5) {
            tally.invisible_groups += 1;
            wrap_in_invisible_groups(user, &mut rng, 0)
        } else {
            user
        };
        // What `separable_conv!` and `separable_net!` pass: `$crate;` and the user's tokens.
        let mut full = quote!(::separable;);
        full.extend(user.clone());
        tally.tried += 1;
        tally.net_tried += u64::from(is_net);
        if let Some(path) = &trace {
            let record = format!(
                "input #{} of the worker seeded {seed:#x}:\n{text}\n",
                tally.tried
            );
            std::fs::write(path, record).expect("writing the trace file");
        }
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let (krate, body) = crate::split_crate_path(full);
            if is_net {
                crate::net::expand(&krate, body)
            } else {
                crate::expand(&krate, body)
            }
        }));
        let out = match result {
            Ok(out) => out,
            Err(payload) => panic!(
                "the pipeline panicked ({}) on input #{} of the worker seeded {seed:#x}:\n{text}\ntokens: {user:?}",
                panic_message(payload.as_ref()),
                tally.tried,
            ),
        };
        if let Err(problem) = check(&user, out, &mut tally, is_net) {
            panic!(
                "input #{} of the worker seeded {seed:#x}: {problem}\ninput:\n{text}\ntokens: {user:?}",
                tally.tried
            );
        }
        // Expanding and checking (parsing the expansion again).
        let took = started.elapsed();
        if took > SLOW {
            tally.slow.0 += 1;
            tally.slow.1 += took;
        }
        if took > tally.slowest.0 {
            tally.slowest = (took, text);
        }
    }
    tally
}

#[test]
fn generated_invocations_never_panic_and_errors_point_into_the_input() {
    let iterations = env_u64("SEPARABLE_FUZZ_ITERATIONS", DEFAULT_ITERATIONS);
    let seed = env_u64("SEPARABLE_FUZZ_SEED", DEFAULT_SEED);
    // One worker per core unless `SEPARABLE_FUZZ_WORKERS` says otherwise (spans and their
    // source map are per thread), each with its own stream of inputs: worker `i` is seeded
    // `seed + i`, so a run is reproducible from the seed and the number of workers.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u64;
    let workers = env_u64("SEPARABLE_FUZZ_WORKERS", cores).max(1);
    let started = Instant::now();
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let share = iterations / workers + u64::from(i < iterations % workers);
                scope.spawn(move || run_worker(seed.wrapping_add(i), share))
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(worker) => tally.merge(worker),
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
    });
    let elapsed = started.elapsed();
    println!(
        "fuzz (seed {seed:#x}, {workers} workers): {} inputs tried, {} accepted, {} rejected \
         ({} networks, {} of them accepted) with {} errors ({} at the call site, all at the end of input), {} with invisible \
         groups; {} generated inputs skipped as repeats and {} as unlexable; {} kinds of error; \
         {:.1?} ({:.0} µs per input per worker; {} expansions over {SLOW:?} took {:.1?}; \
         slowest {:.1?}: {})",
        tally.tried,
        tally.accepted,
        tally.tried - tally.accepted,
        tally.net_tried,
        tally.net_accepted,
        tally.errors,
        tally.call_site_errors,
        tally.invisible_groups,
        tally.repeated,
        tally.unlexable,
        tally.messages.len(),
        elapsed,
        elapsed.as_secs_f64() * 1e6 * workers as f64 / tally.tried.max(1) as f64,
        tally.slow.0,
        tally.slow.1,
        tally.slowest.0,
        tally.slowest.1.replace('\n', " "),
    );
    if std::env::var_os("SEPARABLE_FUZZ_MESSAGES").is_some() {
        for (kind, count) in &tally.messages {
            println!("{count:>9}  {kind}");
        }
    }
    assert_eq!(tally.tried, iterations);
    // Both outcomes are exercised in bulk, and the validator's rules are all reached.
    if iterations >= DEFAULT_ITERATIONS {
        assert!(
            tally.accepted * 50 >= tally.tried && tally.accepted * 2 <= tally.tried,
            "accepted {} of {}: the generator no longer mixes valid and invalid inputs",
            tally.accepted,
            tally.tried
        );
        for (reached, needle) in tally.reached.iter().zip(MUST_REACH) {
            assert!(reached, "no input reached an error containing {needle:?}");
        }
        assert!(
            tally.net_accepted * 50 >= tally.net_tried && tally.net_accepted * 2 <= tally.net_tried,
            "accepted {} of {} networks: the generator no longer mixes valid and invalid ones",
            tally.net_accepted,
            tally.net_tried
        );
        for (reached, needle) in tally.net_reached.iter().zip(NET_MUST_REACH) {
            assert!(
                reached,
                "no network input reached an error containing {needle:?}"
            );
        }
    }
}

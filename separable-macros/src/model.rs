//! Validation: from the parsed entries to a [`Layer`] of plain shapes, or spanned errors.
//!
//! Every rule that rejects input lives here, with an example of what it rejects. The shape
//! arithmetic itself is `separable-shape`'s; this module maps its errors onto the tokens that
//! caused them.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use separable_shape::{Activation, Bias, Dim, LayerShape, LayerSpec, Padding, ShapeError};
use syn::{Error, Ident};

use crate::ast::{Entry, Invocation, Size, Value};

/// The largest number of elements of any one tensor or weight array.
///
/// Beyond it a layer could not be allocated on common targets, and the emitted array types
/// would be rejected by rustc with a less helpful message.
pub(crate) const MAX_ELEMENTS: usize = 1 << 32;

/// The largest kernel height or width: the emitted code lists the window's input rows, so it
/// grows with the kernel, and no convolution network uses windows anywhere near this.
pub(crate) const MAX_KERNEL: usize = 255;

/// A validated layer: only integers and enums, everything derived already computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layer {
    pub(crate) spec: LayerSpec,
    pub(crate) shape: LayerShape,
    pub(crate) dtype: Dtype,
    pub(crate) depthwise_activation: Activation,
    pub(crate) pointwise_activation: Activation,
    /// `weights:` and `prefix:`: the file to bake in at compile time.
    pub(crate) weights: Option<WeightsFile>,
}

/// `weights: "models/block1.safetensors", prefix: "features.1."`, with the tokens they came
/// from for errors about the file.
#[derive(Clone, Debug)]
pub(crate) struct WeightsFile {
    /// The path as written, relative to the manifest directory of the crate being compiled.
    pub(crate) path: String,
    pub(crate) path_span: Span,
    /// The prefix of the tensor names (`""` when not given).
    pub(crate) prefix: String,
    /// The `prefix:` value, if given.
    pub(crate) prefix_span: Option<Span>,
}

impl PartialEq for WeightsFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.prefix == other.prefix
    }
}

impl Eq for WeightsFile {}

/// The element type of tensors and weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// The keys of an invocation, in the order the README documents them.
pub(crate) const KEYS: &[&str] = &[
    "input",
    "output",
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
    "weights",
    "prefix",
];

/// Collects errors so that every mistake of an invocation is reported in one pass.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Keeps the value or records the error.
    fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// Reads an entry's value with `read`, unless it failed to parse (already reported).
    fn read<T>(&mut self, entry: &Entry, read: impl FnOnce(&Entry) -> syn::Result<T>) -> Option<T> {
        if matches!(entry.value, Value::Invalid(_)) {
            return None;
        }
        self.ok(read(entry))
    }
}

/// The entries by key, each at most once.
#[derive(Default)]
struct Entries<'a> {
    by_key: Vec<(&'static str, &'a Entry)>,
    /// Keys suggested for misspelled ones (`outptu` → `output`): not reported missing as well.
    suggested: Vec<&'static str>,
}

impl<'a> Entries<'a> {
    fn get(&self, key: &str) -> Option<&'a Entry> {
        self.by_key.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
    }
}

impl Layer {
    /// Validates an invocation; on failure returns every error found, combined.
    pub(crate) fn from_ast(invocation: &Invocation) -> syn::Result<Layer> {
        let mut errors = Errors::default();
        for error in &invocation.errors {
            errors.push(error.clone());
        }
        let entries = index_entries(&invocation.entries, &mut errors);
        let layer = validate(&entries, invocation.header.name.span(), &mut errors);
        match (errors.0, layer) {
            (None, Some(layer)) => Ok(layer),
            (Some(error), _) => Err(error),
            (None, None) => Err(Error::new(
                invocation.header.body_span,
                "invalid layer description",
            )),
        }
    }
}

/// Rejects unknown and repeated keys: `kernal: 3` (did you mean `kernel`?), `kernel` twice.
fn index_entries<'a>(entries: &'a [Entry], errors: &mut Errors) -> Entries<'a> {
    let mut index = Entries::default();
    for entry in entries {
        let key = entry.key.to_string();
        let Some(&known) = KEYS.iter().find(|k| **k == key) else {
            let message = match suggest(&key, KEYS) {
                Some(near) => {
                    index.suggested.push(near);
                    format!("unknown key `{key}`; did you mean `{near}`?")
                }
                None => format!("unknown key `{key}`; expected one of {}", list(KEYS)),
            };
            errors.push(Error::new(entry.key.span(), message));
            continue;
        };
        if index.get(known).is_some() {
            errors.push(Error::new(
                entry.key.span(),
                format!("duplicate key `{key}`"),
            ));
            continue;
        }
        index.by_key.push((known, entry));
    }
    index
}

fn validate(entries: &Entries<'_>, name_span: Span, errors: &mut Errors) -> Option<Layer> {
    // `input: 5 x 5` (two sizes) / `input: 5 x 0 x 3` (zero)
    let input = if let Some(entry) = entries.get("input") {
        errors.read(entry, |e| sizes::<3>(e, "`H x W x C`, e.g. `5 x 5 x 3`"))
    } else {
        if !entries.suggested.contains(&"input") {
            errors.push(Error::new(
                name_span,
                "missing `input`; add e.g. `input: 5 x 5 x 3` (height x width x channels)",
            ));
        }
        None
    };
    // `output: 4 x 4`
    let output = if let Some(entry) = entries.get("output") {
        errors.read(entry, |e| {
            sizes::<1>(e, "the number of output channels, e.g. `4`")
        })
    } else {
        if !entries.suggested.contains(&"output") {
            errors.push(Error::new(
                name_span,
                "missing `output`; add e.g. `output: 4` (pointwise output channels)",
            ));
        }
        None
    };
    // `kernel: 0`, `stride: 1 x 2 x 3`
    let mut pair = |key, default| match entries.get(key) {
        Some(entry) => errors.read(entry, one_or_two),
        None => Some(default),
    };
    let kernel = pair("kernel", [3, 3]);
    let stride = pair("stride", [1, 1]);
    let dilation = pair("dilation", [1, 1]);
    let multiplier = match entries.get("multiplier") {
        Some(entry) => errors.read(entry, |e| {
            sizes::<1>(e, "a depth multiplier, e.g. `2`").map(|[m]| m)
        }),
        None => Some(1),
    };
    let padding = match entries.get("padding") {
        Some(entry) => errors.read(entry, padding),
        None => Some(Padding::Valid),
    };
    let bias = match entries.get("bias") {
        Some(entry) => errors.read(entry, |entry| {
            word(
                entry,
                "bias",
                &[
                    ("none", Bias::None),
                    ("pointwise", Bias::Pointwise),
                    ("both", Bias::Both),
                ],
            )
        }),
        None => Some(Bias::None),
    };
    let dtype = match entries.get("dtype") {
        Some(entry) => errors.read(entry, |entry| {
            word(entry, "dtype", &[("f32", Dtype::F32), ("f64", Dtype::F64)])
        }),
        None => Some(Dtype::F32),
    };
    let (depthwise_activation, pointwise_activation) = activations(entries, errors);
    let weights = weights_file(entries, errors);

    let spec = LayerSpec {
        input: input?,
        output_channels: output?[0],
        kernel: kernel?,
        stride: stride?,
        dilation: dilation?,
        multiplier: multiplier?,
        padding: padding?,
        bias: bias?,
    };
    let shape = errors.ok(shape(&spec, entries))?;
    Some(Layer {
        spec,
        shape,
        dtype: dtype?,
        depthwise_activation: depthwise_activation?,
        pointwise_activation: pointwise_activation?,
        weights: weights?,
    })
}

/// `weights: "block.safetensors"` and its optional `prefix` (`Some(None)`: no file; `None`:
/// an error was recorded); `prefix` alone has nothing to
/// name: `prefix: "features.1."` without `weights`.
#[allow(clippy::option_option)]
fn weights_file(entries: &Entries<'_>, errors: &mut Errors) -> Option<Option<WeightsFile>> {
    let path = entries
        .get("weights")
        .map(|e| errors.read(e, |e| string(e, "the path of a safetensors file")));
    let prefix = entries
        .get("prefix")
        .map(|e| errors.read(e, |e| string(e, "the prefix of the tensor names")));
    match (path, prefix) {
        (None, None) => Some(None),
        (None, Some(_)) => {
            let entry = entries.get("prefix")?;
            errors.push(Error::new(
                entry.key.span(),
                "`prefix` names tensors in a `weights` file; add `weights: \"<file>.safetensors\"` or remove `prefix`",
            ));
            None
        }
        (Some(path), prefix) => {
            let (path, path_span) = path?;
            if path.is_empty() {
                errors.push(Error::new(
                    path_span,
                    "`weights` takes the path of a safetensors file, found an empty string",
                ));
                return None;
            }
            let (prefix, prefix_span) = match prefix {
                Some(prefix) => {
                    let (text, span) = prefix?;
                    (text, Some(span))
                }
                None => (String::new(), None),
            };
            Some(Some(WeightsFile {
                path,
                path_span,
                prefix,
                prefix_span,
            }))
        }
    }
}

/// `activation` sets both stages; the per-stage keys set one. Both forms at once are ambiguous:
/// `activation: relu, depthwise_activation: relu6`.
fn activations(
    entries: &Entries<'_>,
    errors: &mut Errors,
) -> (Option<Activation>, Option<Activation>) {
    const WORDS: &[(&str, Activation)] = &[
        ("none", Activation::None),
        ("relu", Activation::Relu),
        ("relu6", Activation::Relu6),
    ];
    let mut read = |key: &str| {
        entries
            .get(key)
            .map(|e| errors.read(e, |e| word(e, key, WORDS)))
    };
    let both = read("activation");
    let depthwise = read("depthwise_activation");
    let pointwise = read("pointwise_activation");
    if both.is_some() {
        for key in ["depthwise_activation", "pointwise_activation"] {
            if let Some(entry) = entries.get(key) {
                errors.push(Error::new(
                    entry.key.span(),
                    format!("`{key}` conflicts with `activation`, which sets both stages; give either `activation` or the per-stage keys"),
                ));
            }
        }
    }
    let pick = |stage: Option<Option<Activation>>| match (stage, both) {
        (Some(stage), _) => stage,
        (None, Some(both)) => both,
        (None, None) => Some(Activation::None),
    };
    (pick(depthwise), pick(pointwise))
}

/// Exactly `N` sizes, none zero.
pub(crate) fn sizes<const N: usize>(entry: &Entry, expected: &str) -> syn::Result<[usize; N]> {
    let key = &entry.key;
    let sizes = match &entry.value {
        Value::Sizes(sizes) => sizes,
        Value::Word(word) => {
            return Err(Error::new(
                word.span(),
                format!("`{key}` takes {expected}, found `{word}`"),
            ));
        }
        Value::Str(text) => return Err(found_string(key, expected, text)),
        Value::Invalid(tokens) => return Err(already_reported(tokens)),
    };
    if sizes.sizes.len() != N {
        let found = sizes.sizes.len();
        return Err(Error::new_spanned(
            &sizes.tokens,
            format!(
                "`{key}` takes {expected}; found {found} size{}",
                if found == 1 { "" } else { "s" }
            ),
        ));
    }
    let mut out = [0; N];
    for (slot, size) in out.iter_mut().zip(&sizes.sizes) {
        *slot = nonzero(key, *size)?;
    }
    Ok(out)
}

/// `K` (square) or `KH x KW`, none zero: kernel, stride and dilation.
fn one_or_two(entry: &Entry) -> syn::Result<[usize; 2]> {
    let key = &entry.key;
    let example = match key.to_string().as_str() {
        "kernel" => "`K` or `KH x KW`, e.g. `3` or `3 x 5`",
        "stride" => "`S` or `SH x SW`, e.g. `2` or `2 x 1`",
        _ => "`D` or `DH x DW`, e.g. `2`",
    };
    match &entry.value {
        Value::Sizes(sizes) if sizes.sizes.len() == 1 => {
            let v = nonzero(key, sizes.sizes[0])?;
            Ok([v, v])
        }
        Value::Sizes(sizes) if sizes.sizes.len() == 2 => {
            Ok([nonzero(key, sizes.sizes[0])?, nonzero(key, sizes.sizes[1])?])
        }
        Value::Sizes(sizes) => Err(Error::new_spanned(
            &sizes.tokens,
            format!("`{key}` takes {example}; found {} sizes", sizes.sizes.len()),
        )),
        Value::Word(word) => Err(Error::new(
            word.span(),
            format!("`{key}` takes {example}, found `{word}`"),
        )),
        Value::Str(text) => Err(found_string(key, example, text)),
        Value::Invalid(tokens) => Err(already_reported(tokens)),
    }
}

/// `stride: 0`
fn nonzero(key: &Ident, size: Size) -> syn::Result<usize> {
    if size.value == 0 {
        Err(Error::new(
            size.span,
            format!("`{key}` must be at least 1, found 0"),
        ))
    } else {
        Ok(size.value)
    }
}

/// `same | valid | P | PH x PW`; zeros are fine here (`padding: 0` is `valid`).
fn padding(entry: &Entry) -> syn::Result<Padding> {
    const EXPECTED: &str = "`same`, `valid`, or a size `P` / `PH x PW`";
    match &entry.value {
        Value::Word(word) => match word.to_string().as_str() {
            "same" => Ok(Padding::Same),
            "valid" => Ok(Padding::Valid),
            other => Err(unknown_word(
                word,
                "padding",
                other,
                &["same", "valid"],
                EXPECTED,
            )),
        },
        Value::Sizes(sizes) => match sizes.sizes.as_slice() {
            [p] => Ok(Padding::Explicit {
                height: p.value,
                width: p.value,
            }),
            [h, w] => Ok(Padding::Explicit {
                height: h.value,
                width: w.value,
            }),
            more => Err(Error::new_spanned(
                &sizes.tokens,
                format!("`padding` takes {EXPECTED}; found {} sizes", more.len()),
            )),
        },
        Value::Str(text) => Err(found_string(&entry.key, EXPECTED, text)),
        Value::Invalid(tokens) => Err(already_reported(tokens)),
    }
}

/// One of a fixed set of words: `bias: pointwize` (did you mean `pointwise`?).
fn word<T: Copy>(entry: &Entry, what: &str, words: &[(&str, T)]) -> syn::Result<T> {
    let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
    let expected = list(&names);
    match &entry.value {
        Value::Word(word) => {
            let text = word.to_string();
            match words.iter().find(|(w, _)| *w == text) {
                Some((_, value)) => Ok(*value),
                None => Err(unknown_word(word, what, &text, &names, &expected)),
            }
        }
        Value::Sizes(sizes) => Err(Error::new_spanned(
            &sizes.tokens,
            format!(
                "`{}` takes one of {expected}, found `{}`",
                entry.key, sizes.tokens
            ),
        )),
        Value::Str(text) => Err(found_string(
            &entry.key,
            &format!("one of {expected}"),
            text,
        )),
        Value::Invalid(tokens) => Err(already_reported(tokens)),
    }
}

/// `kernel: "3"`
fn found_string(key: &Ident, expected: &str, text: &syn::LitStr) -> Error {
    Error::new(
        text.span(),
        format!("`{key}` takes {expected}, found a string"),
    )
}

/// A string value: `weights: models/block.safetensors` (no quotes).
fn string(entry: &Entry, expected: &str) -> syn::Result<(String, Span)> {
    let key = &entry.key;
    match &entry.value {
        Value::Str(text) => Ok((text.value(), text.span())),
        Value::Invalid(tokens) => Err(already_reported(tokens)),
        other => Err(Error::new_spanned(
            other.tokens(),
            format!("`{key}` takes {expected} in double quotes"),
        )),
    }
}

/// Never reported: `Errors::read` skips values that failed to parse.
fn already_reported(tokens: &TokenStream) -> Error {
    spanned(tokens, "this value was reported already".to_owned())
}

fn unknown_word(word: &Ident, what: &str, text: &str, words: &[&str], expected: &str) -> Error {
    let hint = suggest(text, words)
        .map(|near| format!("; did you mean `{near}`?"))
        .unwrap_or_default();
    Error::new(
        word.span(),
        format!("unknown {what} `{text}`; expected {expected}{hint}"),
    )
}

/// Maps the shape arithmetic's errors onto the tokens that caused them.
fn shape(spec: &LayerSpec, entries: &Entries<'_>) -> syn::Result<LayerShape> {
    let tokens_of = |key: &str| entries.get(key).map(|e| e.value.tokens());
    let input_tokens = || tokens_of("input").unwrap_or_else(TokenStream::new);
    let shape = spec.shape().map_err(|error| match error {
        // `input: 5 x 2 x 3, kernel: 3` with `valid` padding: no output column fits.
        ShapeError::EmptyOutput {
            dim,
            padded_input,
            effective_kernel,
        } => {
            let (k, d) = match dim {
                Dim::Height => (spec.kernel[0], spec.dilation[0]),
                Dim::Width => (spec.kernel[1], spec.dilation[1]),
            };
            let extent = if d == 1 {
                format!("{effective_kernel}")
            } else {
                format!("{effective_kernel} (({k} - 1) x dilation {d} + 1)")
            };
            let what = if padded_input == spec.input[dim_index(dim)] {
                format!("the input {} is {padded_input}", dim.name())
            } else {
                format!("the padded input {} is {padded_input}", dim.name())
            };
            // `padded_input < effective_kernel` here, so this cannot underflow; the output size
            // is its negation.
            let shortfall = effective_kernel - padded_input - 1;
            let output = if shortfall == 0 {
                "0".to_owned()
            } else {
                format!("-{shortfall}")
            };
            let message = format!(
                "the kernel does not fit: {what} but the kernel spans {extent}, so the output {} would be {padded_input} - {effective_kernel} + 1 = {output}; use `padding: same`, a smaller kernel or a larger input",
                dim.name(),
            );
            spanned(tokens_of("kernel").unwrap_or_else(input_tokens), message)
        }
        ShapeError::Overflow { quantity } => spanned(
            input_tokens(),
            format!("{quantity} overflows `usize`; use smaller sizes"),
        ),
        ShapeError::Zero { quantity } => {
            spanned(input_tokens(), format!("{quantity} must be at least 1"))
        }
    })?;
    for (dim, index) in [(Dim::Height, 0), (Dim::Width, 1)] {
        // `kernel: 1000000 x 1`: each kernel row adds a line to the emitted code.
        if spec.kernel[index] > MAX_KERNEL {
            let tokens = tokens_of("kernel").unwrap_or_else(input_tokens);
            return Err(spanned(
                tokens,
                format!(
                    "the kernel {} is {}; the limit is {MAX_KERNEL}",
                    dim.name(),
                    spec.kernel[index]
                ),
            ));
        }
        // `kernel: 3, dilation: 2147483648`: the window would span more than any input.
        let extent = (spec.kernel[index] - 1).saturating_mul(spec.dilation[index]);
        if extent >= crate::ast::MAX_SIZE {
            let tokens = tokens_of("dilation").unwrap_or_else(input_tokens);
            return Err(spanned(
                tokens,
                format!(
                    "the dilated kernel spans {} along the {}; the limit is {} (2^32)",
                    extent.saturating_add(1),
                    dim.name(),
                    crate::ast::MAX_SIZE
                ),
            ));
        }
    }
    for (what, elements, key) in [
        ("input", shape.input_len, "input"),
        ("depthwise output", shape.depthwise_len, "input"),
        ("output", shape.output_len, "output"),
        ("depthwise weight", shape.depthwise_weights, "kernel"),
        ("pointwise weight", shape.pointwise_packed, "output"),
    ] {
        if elements > MAX_ELEMENTS {
            let tokens = tokens_of(key).unwrap_or_else(input_tokens);
            return Err(spanned(
                tokens,
                format!(
                    "the {what} would have {elements} elements; the limit per tensor is {MAX_ELEMENTS} (2^32)"
                ),
            ));
        }
    }
    Ok(shape)
}

fn dim_index(dim: Dim) -> usize {
    match dim {
        Dim::Height => 0,
        Dim::Width => 1,
    }
}

fn spanned(tokens: impl ToTokens, message: String) -> Error {
    let tokens = tokens.into_token_stream();
    if tokens.is_empty() {
        Error::new(Span::call_site(), message)
    } else {
        Error::new_spanned(tokens, message)
    }
}

/// The nearest of `candidates` to a misspelling, if it is near enough to be a typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&word.to_lowercase(), c), *c))
        .filter(|(distance, c)| *distance <= 2.max(c.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// `` `a`, `b` or `c` ``.
pub(crate) fn list(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

//! `separable_net!`: a stack of layers declared once, each block's input the previous block's
//! output.
//!
//! ```text
//! net       := attribute* visibility "struct" IDENT "{" net_entry ("," net_entry)* ","? "}"
//! net_entry := "input" ":" size "x" size "x" size
//!            | "defaults" ":" "{" entries "}"
//!            | "blocks" ":" "{" block ("," block)* ","? "}"
//! block     := attribute* IDENT ":" IDENT "{" entries "}"      e.g. `b1: Block1 { output: 32 }`
//! ```
//!
//! `entries` are a layer's `key: value` entries (the grammar of `ast`); a block may also write
//! `prefix: "features.3."`, which the network reads itself.
//!
//! The pipeline runs as for one layer, once per block. Each block's layer invocation is
//! assembled from the user's own tokens: the computed `input:` (spanned at the block's type
//! name) unless the block writes one, then every default the block does not override, then the
//! block's entries. `model` validates it (which yields its output shape, the next block's
//! input) and `codegen` emits it, so every block is exactly a `separable_conv!` layer. Then the
//! network struct is emitted around the blocks.
//!
//! Errors: the mistakes of the network's own syntax are all reported, and those of the first
//! block that has any. The blocks after a failed one cannot know their input, so they (and the
//! network) are emitted as stubs: one mistake, one diagnostic.

use proc_macro2::{Delimiter, Group, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Attribute, Error, Ident, LitStr, Path, Token, Visibility};

use crate::ast::{self, Entry, Header, Invocation, Part, Size, Sizes, Value};
use crate::codegen::{self, lit, shape_text, tensor_type};
use crate::embed::Embedded;
use crate::model::{self, Dtype, Layer};

/// The keys of the network itself; layer keys go in `defaults` or in a block.
const NET_KEYS: &[&str] = &["input", "defaults", "blocks"];

/// Collects errors, combined into one `syn::Error`.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }
}

/// A parsed `separable_net!` invocation.
struct Net {
    header: Header,
    /// The network's `input:`.
    input: Option<Entry>,
    /// The entries every block starts from.
    defaults: Vec<Entry>,
    blocks: Vec<BlockItem>,
    /// Mistakes in the network's own syntax (not inside a block's layer entries).
    errors: Errors,
    /// Nothing after the name could be read (`struct Body<T>`, `struct Body;`).
    header_error: bool,
}

/// One entry of `blocks`.
enum BlockItem {
    Parsed(Block),
    /// A block that does not parse; its stub's header if its type name was read.
    Broken(Option<Header>),
}

/// `field: Type { entries }`.
struct Block {
    field: Ident,
    /// The block type's attributes (its own, then the network's derives), the network's
    /// visibility and the type name.
    header: Header,
    /// The layer entries as written, `input:` included if the block writes one.
    entries: Vec<Entry>,
    /// Errors of entries that could not be parsed, reported with the block's layer.
    entry_errors: Vec<Error>,
    /// `prefix: ".."`: where `from_safetensors` finds the block's tensors.
    prefix: Option<LitStr>,
}

impl Parse for Net {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        let mut net = Net {
            header: Header {
                attrs,
                vis,
                name,
                body_span: input.span(),
            },
            input: None,
            defaults: Vec::new(),
            blocks: Vec::new(),
            errors: Errors::default(),
            header_error: false,
        };
        let header_error = if input.peek(Token![<]) {
            Some(input.error(
                "`separable_net!` networks take no generic parameters: every size is written in the network",
            ))
        } else if !input.peek(syn::token::Brace) {
            Some(input.error(
                "expected the network's `{ input: .., defaults: { .. }, blocks: { .. } }` after its name",
            ))
        } else {
            None
        };
        if let Some(error) = header_error {
            input.parse::<TokenStream>()?;
            net.errors.push(error);
            net.header_error = true;
            return Ok(net);
        }
        let content;
        let brace = syn::braced!(content in input);
        net.header.body_span = brace.span.join();
        let body: TokenStream = content.parse()?;
        if !input.is_empty() {
            let rest: TokenStream = input.parse()?;
            net.errors.push(Error::new_spanned(
                rest,
                "unexpected tokens after the network's `{ .. }`",
            ));
        }
        net.parse_body(body);
        Ok(net)
    }
}

impl Net {
    /// `input: .., defaults: { .. }, blocks: { .. }` in any order, each once.
    fn parse_body(&mut self, body: TokenStream) {
        let derives = derives(&self.header.attrs);
        let mut seen: Vec<String> = Vec::new();
        let mut blocks_seen = false;
        for part in ast::split_entries(body) {
            let piece = match part {
                Part::Error(error) => {
                    self.errors.push(error);
                    continue;
                }
                Part::Entry(piece) => piece,
            };
            if let Some(first) = piece.first().filter(|t| !matches!(t, TokenTree::Ident(_))) {
                self.errors.push(Error::new(
                    first.span(),
                    "expected `input`, `defaults` or `blocks`",
                ));
                continue;
            }
            let (key, value) = match ast::parse_key(&piece) {
                Ok(key_value) => key_value,
                Err((_, error)) => {
                    self.errors.push(error);
                    continue;
                }
            };
            let name = key.to_string();
            if !NET_KEYS.contains(&name.as_str()) {
                self.errors.push(unknown_net_key(&key, &name));
                continue;
            }
            if seen.contains(&name) {
                self.errors
                    .push(Error::new(key.span(), format!("duplicate key `{name}`")));
                continue;
            }
            seen.push(name.clone());
            match name.as_str() {
                "input" => {
                    let value = ast::parse_value(value).unwrap_or_else(|error| {
                        self.errors.push(error);
                        Value::Invalid(value.iter().cloned().collect())
                    });
                    self.input = Some(Entry { key, value });
                }
                "defaults" => {
                    let Some(group) = braced(value) else {
                        self.errors.push(Error::new_spanned(
                            value.iter().cloned().collect::<TokenStream>(),
                            "`defaults` takes the layer entries every block starts from, e.g. `{ kernel: 3, padding: 1 }`",
                        ));
                        continue;
                    };
                    self.parse_defaults(group.stream());
                }
                _ => {
                    blocks_seen = true;
                    let Some(group) = braced(value) else {
                        self.errors.push(Error::new_spanned(
                            value.iter().cloned().collect::<TokenStream>(),
                            "`blocks` takes `{ field: Type { key: value, .. }, .. }`, e.g. `{ b0: Block0 { output: 16 } }`",
                        ));
                        continue;
                    };
                    self.parse_blocks(group.stream(), &derives);
                    if self.blocks.is_empty() {
                        self.errors.push(Error::new(
                            group.span(),
                            "`blocks` is empty; declare at least one, e.g. `b0: Block0 { output: 16 }`",
                        ));
                    }
                }
            }
        }
        let name_span = self.header.name.span();
        if !seen.iter().any(|k| k == "input") {
            self.errors.push(Error::new(
                name_span,
                "missing `input`; add e.g. `input: 32 x 32 x 8` (the first block's input: height x width x channels)",
            ));
        }
        if !blocks_seen {
            self.errors.push(Error::new(
                name_span,
                "missing `blocks`; add e.g. `blocks: { b0: Block0 { output: 16 } }`",
            ));
        }
    }

    /// The layer entries of `defaults`. `input` and `prefix` belong to the network and to each
    /// block, not to the defaults.
    fn parse_defaults(&mut self, stream: TokenStream) {
        let mut misplaced = Vec::new();
        let (entries, errors) = ast::parse_entries_except(stream, |key, _| {
            if key == "prefix" {
                misplaced.push(Error::new(
                    key.span(),
                    "`prefix` is set per block (the default is the block's index, `\"0.\"`, `\"1.\"`, ..), not in `defaults`",
                ));
                return true;
            }
            false
        });
        for error in errors.into_iter().chain(misplaced) {
            self.errors.push(error);
        }
        for entry in entries {
            if entry.key == "input" {
                self.errors.push(Error::new(
                    entry.key.span(),
                    "`input` is not a default: the network's `input:` is the first block's input, and every other block's input is the previous block's output",
                ));
            } else {
                self.defaults.push(entry);
            }
        }
    }

    /// `field: Type { .. }` separated by commas. A block that does not parse is reported and
    /// kept as broken, so that the blocks after it are not checked against a wrong input.
    fn parse_blocks(&mut self, stream: TokenStream, derives: &[Path]) {
        let tokens: Vec<TokenTree> = stream.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            let context = BlockContext {
                index: self.blocks.len(),
                net: &self.header.name,
                vis: &self.header.vis,
                derives,
            };
            match parse_block(&tokens, &mut i, &context) {
                Ok(block) => {
                    let (block, errors) = block;
                    for error in errors {
                        self.errors.push(error);
                    }
                    self.blocks.push(BlockItem::Parsed(block));
                }
                Err(broken) => {
                    self.errors.push(broken.error);
                    self.blocks.push(BlockItem::Broken(broken.stub));
                    while i < tokens.len() && !is_punct(&tokens[i], ',') {
                        i += 1;
                    }
                }
            }
            match tokens.get(i) {
                None => break,
                Some(token) if is_punct(token, ',') => i += 1,
                Some(token) => {
                    let after = match self.blocks.last() {
                        Some(BlockItem::Parsed(block)) => format!(" `{}`", block.field),
                        _ => String::new(),
                    };
                    if starts_block(&tokens[i..]) {
                        self.errors.push(Error::new(
                            token.span(),
                            format!("expected `,` after block{after}"),
                        ));
                    } else {
                        self.errors.push(Error::new(
                            token.span(),
                            format!("unexpected `{token}` after block{after}; expected `,`"),
                        ));
                        while i < tokens.len() && !is_punct(&tokens[i], ',') {
                            i += 1;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
}

fn unknown_net_key(key: &Ident, name: &str) -> Error {
    let message = if model::KEYS.contains(&name) {
        format!(
            "`{name}` is a layer key: give it in `defaults: {{ .. }}` for every block, or in a block's `{{ .. }}`"
        )
    } else if let Some(near) = model::suggest(name, NET_KEYS) {
        format!("unknown key `{name}`; did you mean `{near}`?")
    } else {
        format!("unknown key `{name}`; expected {}", model::list(NET_KEYS))
    };
    Error::new(key.span(), message)
}

fn is_punct(token: &TokenTree, c: char) -> bool {
    matches!(token, TokenTree::Punct(p) if p.as_char() == c)
}

/// Whether the tokens start a block: an attribute, or `field:`.
fn starts_block(tokens: &[TokenTree]) -> bool {
    match tokens {
        [first, ..] if is_punct(first, '#') => true,
        [TokenTree::Ident(_), TokenTree::Punct(colon), ..] => {
            colon.as_char() == ':' && colon.spacing() == Spacing::Alone
        }
        _ => false,
    }
}

/// The one `{ .. }` group a value consists of, looking through the invisible groups of
/// `macro_rules!` fragments.
fn braced(value: &[TokenTree]) -> Option<Group> {
    match value {
        [TokenTree::Group(group)] if group.delimiter() == Delimiter::Brace => Some(group.clone()),
        [TokenTree::Group(group)] if group.delimiter() == Delimiter::None => {
            let inner: Vec<TokenTree> = group.stream().into_iter().collect();
            braced(&inner)
        }
        _ => None,
    }
}

/// The paths of the `#[derive(..)]` attributes that parse.
fn derives(attrs: &[Attribute]) -> Vec<Path> {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("derive"))
        .filter_map(|attr| {
            attr.parse_args_with(Punctuated::<Path, Token![,]>::parse_terminated)
                .ok()
        })
        .flatten()
        .collect()
}

/// An identifier that is not a keyword (as a field or type name must be).
fn name(token: Option<&TokenTree>) -> Option<Ident> {
    match token {
        Some(TokenTree::Ident(_)) => syn::parse2::<Ident>(token?.to_token_stream()).ok(),
        Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::None => {
            let mut inner = group.stream().into_iter();
            match (inner.next(), inner.next()) {
                (Some(only), None) => name(Some(&only)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A block parsed with the errors of its `prefix`, or why it is broken.
type ParsedBlock = Result<(Block, Vec<Error>), Box<BrokenBlock>>;

/// A block that does not parse.
struct BrokenBlock {
    /// The stub's header, if the type name was read.
    stub: Option<Header>,
    error: Error,
}

/// What a block takes from the network.
struct BlockContext<'a> {
    /// The block's position, from 0.
    index: usize,
    net: &'a Ident,
    vis: &'a Visibility,
    /// The network's derives, which its fields' types need as well.
    derives: &'a [Path],
}

/// One block starting at `tokens[*i]`; on success `*i` is just after its `{ .. }`.
fn parse_block(tokens: &[TokenTree], i: &mut usize, context: &BlockContext<'_>) -> ParsedBlock {
    // Where to report what is missing: the token at `i`, or the last one if there is none.
    let here = |i: usize| {
        tokens
            .get(i)
            .or(tokens.last())
            .map_or_else(Span::call_site, TokenTree::span)
    };
    let broken = |stub, error| Box::new(BrokenBlock { stub, error });
    let attrs = parse_attrs(tokens, i).map_err(|error| broken(None, error))?;
    let example = "a block such as `b0: Block0 { output: 16 }`";
    let Some(field) = name(tokens.get(*i)) else {
        return Err(broken(
            None,
            Error::new(here(*i), format!("expected {example}")),
        ));
    };
    *i += 1;
    match tokens.get(*i) {
        Some(TokenTree::Punct(colon))
            if colon.as_char() == ':' && colon.spacing() == Spacing::Alone =>
        {
            *i += 1;
        }
        _ => {
            let message =
                format!("expected `:` and the block's type after `{field}`, as in {example}");
            return Err(broken(None, Error::new(here(*i), message)));
        }
    }
    let Some(type_name) = name(tokens.get(*i)) else {
        let message = format!("expected the block's type name after `{field}:`, as in {example}");
        return Err(broken(None, Error::new(here(*i), message)));
    };
    *i += 1;
    let attrs = block_attrs(attrs, &field, context);
    let header = |body_span| Header {
        attrs: attrs.clone(),
        vis: context.vis.clone(),
        name: type_name.clone(),
        body_span,
    };
    let group = match tokens.get(*i) {
        Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => group.clone(),
        _ => {
            let message = format!(
                "expected the block's `{{ key: value, .. }}` after `{type_name}`, as in {example}"
            );
            return Err(broken(
                Some(header(type_name.span())),
                Error::new(here(*i), message),
            ));
        }
    };
    *i += 1;
    let mut prefix: Option<LitStr> = None;
    let mut errors = Vec::new();
    let (entries, entry_errors) = ast::parse_entries_except(group.stream(), |key, value| {
        if key != "prefix" {
            return false;
        }
        match parse_prefix(key, value, prefix.is_some()) {
            Ok(literal) => prefix = Some(literal),
            Err(error) => errors.push(error),
        }
        true
    });
    // `prefix:` without a value was reported as such; it is no layer key.
    let entries = entries.into_iter().filter(|e| e.key != "prefix").collect();
    Ok((
        Block {
            field,
            header: header(group.span()),
            entries,
            entry_errors,
            prefix,
        },
        errors,
    ))
}

/// `#[..]` attributes from `tokens[*i]` on.
fn parse_attrs(tokens: &[TokenTree], i: &mut usize) -> syn::Result<Vec<Attribute>> {
    let mut attr_tokens = TokenStream::new();
    while let Some(hash) = tokens.get(*i).filter(|t| is_punct(t, '#')) {
        match tokens.get(*i + 1) {
            Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Bracket => {
                attr_tokens.extend([hash.clone(), tokens[*i + 1].clone()]);
                *i += 2;
            }
            _ => {
                return Err(Error::new(
                    hash.span(),
                    "expected an attribute `#[..]` before a block",
                ));
            }
        }
    }
    Attribute::parse_outer.parse2(attr_tokens)
}

/// A block's own attributes, then a line of documentation saying where it belongs, then the
/// network's derives it does not have already.
fn block_attrs(
    mut attrs: Vec<Attribute>,
    field: &Ident,
    context: &BlockContext<'_>,
) -> Vec<Attribute> {
    let role = format!(
        " Block {} (`{field}`) of the network `{}`, declared by `separable_net!`.",
        context.index, context.net
    );
    if !attrs.is_empty() {
        attrs.extend(doc_attr(""));
    }
    attrs.extend(doc_attr(&role));
    let own = derives_of(&attrs);
    let missing: Vec<&Path> = context
        .derives
        .iter()
        .filter(|path| !own.contains(&path_text(path)))
        .collect();
    if !missing.is_empty()
        && let Ok(derive) = Attribute::parse_outer.parse2(quote!(#[derive(#(#missing),*)]))
    {
        attrs.extend(derive);
    }
    attrs
}

/// `prefix: "features.3."`, at most once per block.
fn parse_prefix(key: &Ident, value: &[TokenTree], repeated: bool) -> syn::Result<LitStr> {
    let value: TokenStream = value.iter().cloned().collect();
    match syn::parse2::<LitStr>(value.clone()) {
        Ok(_) if repeated => Err(Error::new(key.span(), "duplicate key `prefix`")),
        Ok(literal) => Ok(literal),
        Err(_) => Err(Error::new_spanned(
            value,
            "`prefix` takes a string: where the block's tensors start after the network's prefix, e.g. `prefix: \"features.3.\"`",
        )),
    }
}

/// `#[doc = ".."]`.
fn doc_attr(text: &str) -> Vec<Attribute> {
    Attribute::parse_outer
        .parse2(quote!(#[doc = #text]))
        .unwrap_or_default()
}

/// The derives an attribute list has, as text.
fn derives_of(attrs: &[Attribute]) -> Vec<String> {
    derives(attrs).iter().map(path_text).collect()
}

fn path_text(path: &Path) -> String {
    path.to_token_stream().to_string()
}

/// What feeds the next block.
struct Upstream {
    shape: [usize; 3],
    /// `None` for the network's input, whose element type is the first block's.
    dtype: Option<Dtype>,
    /// The block type that produced it, or `None` for the network's input.
    from: Option<Ident>,
}

/// A block that passed validation.
struct Checked<'a> {
    block: &'a Block,
    layer: Layer,
}

/// Parses, validates every block in turn and generates the blocks and the network; on any
/// error emits the errors with stubs in place of what could not be generated.
pub(crate) fn expand(krate: &TokenStream, input: TokenStream) -> TokenStream {
    let net = match syn::parse2::<Net>(input) {
        Ok(net) => net,
        Err(error) => return error.to_compile_error(),
    };
    let Net {
        header,
        input,
        defaults,
        blocks,
        mut errors,
        header_error,
    } = net;
    if header_error {
        return with_errors(codegen::stub(&header), errors);
    }
    let mut out = TokenStream::new();
    let mut upstream = input
        .as_ref()
        .and_then(|entry| network_input(entry, &mut errors));
    let mut fields: Vec<&Ident> = Vec::new();
    let mut types: Vec<(&Ident, Option<&Ident>)> = vec![(&header.name, None)];
    let mut checked: Vec<Checked<'_>> = Vec::new();
    for (index, item) in blocks.iter().enumerate() {
        let block = match item {
            BlockItem::Parsed(block) => block,
            BlockItem::Broken(stub) => {
                if let Some(stub) = stub
                    && new_type(&stub.name, None, &mut types, &mut errors)
                {
                    out.extend(codegen::stub(stub));
                }
                upstream = None;
                continue;
            }
        };
        if fields.contains(&&block.field) {
            errors.push(Error::new(
                block.field.span(),
                format!("duplicate block field `{}`", block.field),
            ));
        } else {
            fields.push(&block.field);
        }
        let emit = new_type(
            &block.header.name,
            Some(&block.field),
            &mut types,
            &mut errors,
        );
        let stub = || {
            if emit {
                codegen::stub(&block.header)
            } else {
                TokenStream::new()
            }
        };
        // After a block that failed, the input is unknown: a stub, and no further errors.
        let Some(up) = &upstream else {
            out.extend(stub());
            continue;
        };
        if let Some((invocation, layer, embedded)) =
            check_block(block, index, up, &defaults, &mut errors)
        {
            if emit {
                out.extend(codegen::layer(
                    krate,
                    &invocation.header,
                    &layer,
                    embedded.as_ref(),
                ));
            }
            upstream = Some(Upstream {
                shape: layer.shape.output,
                dtype: Some(layer.dtype),
                from: Some(block.header.name.clone()),
            });
            checked.push(Checked { block, layer });
        } else {
            out.extend(stub());
            upstream = None;
        }
    }
    if errors.0.is_none() && !checked.is_empty() && checked.len() == blocks.len() {
        match generate(krate, &header, &checked) {
            Ok(net) => out.extend(net),
            Err(error) => {
                out.extend(codegen::stub(&header));
                errors.push(error);
            }
        }
    } else {
        out.extend(codegen::stub(&header));
    }
    with_errors(out, errors)
}

/// The network's `input:` as the first block's upstream.
fn network_input(entry: &Entry, errors: &mut Errors) -> Option<Upstream> {
    if matches!(entry.value, Value::Invalid(_)) {
        return None;
    }
    match model::sizes::<3>(entry, "`H x W x C`, e.g. `32 x 32 x 8`") {
        Ok(shape) => Some(Upstream {
            shape,
            dtype: None,
            from: None,
        }),
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// Validates a block's layer fed by `up`: its invocation and layer, or `None` (with its
/// errors, unless a default it uses did not parse, which is reported already).
fn check_block(
    block: &Block,
    index: usize,
    up: &Upstream,
    defaults: &[Entry],
    errors: &mut Errors,
) -> Option<(Invocation, Layer, Option<Embedded>)> {
    let invocation = invocation(block, index, up, defaults)?;
    match crate::validate(&invocation) {
        Ok((layer, embedded)) => {
            chain_errors(block, &layer, up, errors);
            Some((invocation, layer, embedded))
        }
        Err(error) => {
            errors.push(in_block(error, &block.header.name));
            None
        }
    }
}

fn with_errors(mut out: TokenStream, errors: Errors) -> TokenStream {
    if let Some(error) = errors.0 {
        out.extend(error.to_compile_error());
    }
    out
}

/// Records a block's type name; false (with an error) if the network or an earlier block has
/// it already, or if it has the prefix reserved for the items of a layer's expansion.
fn new_type<'a>(
    name: &'a Ident,
    field: Option<&'a Ident>,
    types: &mut Vec<(&'a Ident, Option<&'a Ident>)>,
    errors: &mut Errors,
) -> bool {
    if field.is_some() && name.to_string().starts_with(codegen::RESERVED_PREFIX) {
        errors.push(Error::new(
            name.span(),
            format!(
                "`separable_net!` reserves block types starting with `{}` for the items it declares beside them; rename the type",
                codegen::RESERVED_PREFIX
            ),
        ));
        return false;
    }
    match types.iter().find(|(seen, _)| *seen == name) {
        None => {
            types.push((name, field));
            true
        }
        Some((_, None)) => {
            errors.push(Error::new(
                name.span(),
                format!("block type `{name}` is the network's own name; give the block a type of its own"),
            ));
            false
        }
        Some((_, Some(earlier))) => {
            errors.push(Error::new(
                name.span(),
                format!("duplicate block type `{name}`: block `{earlier}` declares it already; every block declares a type of its own"),
            ));
            false
        }
    }
}

/// The block's layer invocation: the computed `input:` unless the block writes one, the
/// defaults it does not override, then its own entries, all with the user's spans. `None` if a
/// default it uses did not parse.
fn invocation(
    block: &Block,
    index: usize,
    up: &Upstream,
    defaults: &[Entry],
) -> Option<Invocation> {
    let written = |key: &str| block.entries.iter().any(|e| e.key == key);
    let mut entries = Vec::new();
    if !written("input") {
        entries.push(input_entry(up.shape, block.header.name.span()));
    }
    for default in defaults {
        if written(&default.key.to_string()) {
            continue;
        }
        if matches!(default.value, Value::Invalid(_)) {
            return None;
        }
        entries.push(default.clone());
    }
    entries.extend(block.entries.iter().cloned());
    // `weights:` (a default or the block's): the block's tensors are where `from_safetensors`
    // finds them with an empty network prefix, `"k."` or the block's `prefix:`.
    if entries.iter().any(|e| e.key == "weights") {
        let span = block.header.name.span();
        let prefix = match &block.prefix {
            Some(prefix) => prefix.clone(),
            None => LitStr::new(&format!("{index}."), span),
        };
        entries.push(Entry {
            key: Ident::new("prefix", span),
            value: Value::Str(prefix),
        });
    }
    Some(Invocation {
        header: block.header.clone(),
        entries,
        errors: block.entry_errors.clone(),
        header_error: None,
    })
}

/// `input: H x W x C` spanned at the block's type name, where errors about the computed input
/// then point.
fn input_entry(shape: [usize; 3], span: Span) -> Entry {
    let sizes = shape.map(|value| Size { value, span });
    let [h, w, c] = shape.map(|n| {
        let mut literal = lit(n);
        literal.set_span(span);
        literal
    });
    Entry {
        key: Ident::new("input", span),
        value: Value::Sizes(Sizes {
            sizes: sizes.to_vec(),
            tokens: quote_spanned!(span=> #h x #w x #c),
        }),
    }
}

/// A written `input:` must be what the block before delivers, and the element types must agree.
fn chain_errors(block: &Block, layer: &Layer, up: &Upstream, errors: &mut Errors) {
    let name = &block.header.name;
    if let Some(entry) = block.entries.iter().find(|e| e.key == "input")
        && layer.shape.input != up.shape
    {
        let upstream = match &up.from {
            Some(from) => format!("`{from}` outputs `{}`", shape_text(up.shape)),
            None => format!("the network's input is `{}`", shape_text(up.shape)),
        };
        errors.push(Error::new_spanned(
            entry.value.tokens(),
            format!(
                "block `{name}` declares input `{}` but {upstream}",
                shape_text(layer.shape.input)
            ),
        ));
    }
    if let (Some(dtype), Some(from)) = (up.dtype, &up.from)
        && dtype != layer.dtype
    {
        let tokens = block
            .entries
            .iter()
            .find(|e| e.key == "dtype")
            .map_or_else(|| name.to_token_stream(), |e| e.value.tokens());
        errors.push(Error::new_spanned(
            tokens,
            format!(
                "block `{name}` takes `{}` tensors but `{from}` outputs `{}` tensors",
                dtype_name(layer.dtype),
                dtype_name(dtype)
            ),
        ));
    }
}

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
    }
}

/// The errors of a block's layer, each saying which block it is about (an error may point
/// into `defaults`, which every block shares), with its span kept whole.
fn in_block(error: Error, name: &Ident) -> Error {
    let mut out = Errors::default();
    for single in error {
        let tokens: Vec<TokenTree> = single.to_compile_error().into_iter().collect();
        // `to_compile_error` puts the start span on the first token and the end span on the
        // last; two tokens with those spans keep the underline.
        let ends: TokenStream = [tokens.first(), tokens.last()]
            .into_iter()
            .flatten()
            .map(|token| {
                let mut punct = Punct::new('.', Spacing::Alone);
                punct.set_span(token.span());
                TokenTree::Punct(punct)
            })
            .collect();
        out.push(Error::new_spanned(
            ends,
            format!("in block `{name}`: {single}"),
        ));
    }
    out.0
        .unwrap_or_else(|| Error::new(name.span(), format!("block `{name}` is invalid")))
}

/// One row of the summary.
struct Row {
    field: String,
    ty: String,
    output: String,
    params: usize,
    macs: usize,
}

/// The network's items around its valid blocks.
// A `quote!` template reads best in one piece, however long.
#[allow(clippy::too_many_lines)]
fn generate(
    krate: &TokenStream,
    header: &Header,
    blocks: &[Checked<'_>],
) -> syn::Result<TokenStream> {
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
        return Err(Error::new(
            header.name.span(),
            "a network needs at least one block",
        ));
    };
    let name = &header.name;
    let overflow = |what: &str| {
        Error::new(
            name.span(),
            format!("the network's {what} overflow `usize`; use fewer or smaller blocks"),
        )
    };
    let sum = |what: &str, f: fn(&Layer) -> usize| {
        blocks
            .iter()
            .try_fold(0usize, |total, b| total.checked_add(f(&b.layer)))
            .ok_or_else(|| overflow(what))
    };
    let params = sum("parameters", |l| l.shape.params)?;
    let macs = sum("multiply-adds", |l| l.shape.macs)?;
    let standard_params = sum("standard parameters", |l| l.shape.standard_params)?;
    let standard_macs = sum("standard multiply-adds", |l| l.shape.standard_macs)?;
    let input = first.layer.shape.input;
    let output = last.layer.shape.output;
    let prefixes: Vec<String> = blocks
        .iter()
        .enumerate()
        .map(|(k, b)| {
            b.block
                .prefix
                .as_ref()
                .map_or_else(|| format!("{k}."), LitStr::value)
        })
        .collect();
    let rows: Vec<Row> = blocks
        .iter()
        .map(|b| Row {
            field: b.block.field.to_string(),
            ty: b.block.header.name.to_string(),
            output: shape_text(b.layer.shape.output),
            params: b.layer.shape.params,
            macs: b.layer.shape.macs,
        })
        .collect();
    let summary = summary(
        &name.to_string(),
        input,
        last.layer.dtype,
        &rows,
        params,
        macs,
    );

    let Header { attrs, vis, .. } = header;
    let fields: Vec<&Ident> = blocks.iter().map(|b| &b.block.field).collect();
    let types: Vec<&Ident> = blocks.iter().map(|b| &b.block.header.name).collect();
    let field_docs: Vec<String> = blocks
        .iter()
        .zip(&prefixes)
        .enumerate()
        .map(|(k, (b, prefix))| {
            format!(
                " Block {k}: `{}` -> `{}`; `from_safetensors` reads it from `{{prefix}}{prefix}`.",
                shape_text(b.layer.shape.input),
                shape_text(b.layer.shape.output),
            )
        })
        .collect();
    let separator = (!attrs.is_empty()).then(|| quote!(#[doc = ""]));
    let doc = format!(
        " Depthwise-separable network `{}` -> `{}` of {} block{}, generated by `separable_net!`: {} parameters, {} multiply-adds per forward pass.",
        shape_text(input),
        shape_text(output),
        blocks.len(),
        if blocks.len() == 1 { "" } else { "s" },
        params,
        macs,
    );
    let doc_table = format!("```text\n{summary}\n```");
    let input_ty = tensor_type(krate, input, first.layer.dtype);
    let output_ty = tensor_type(krate, output, last.layer.dtype);
    let triple = |[a, b, c]: [usize; 3]| {
        let (a, b, c) = (lit(a), lit(b), lit(c));
        quote!([#a, #b, #c])
    };
    let (input_shape, output_shape) = (triple(input), triple(output));
    let (params_lit, macs_lit, std_params_lit, std_macs_lit) = (
        lit(params),
        lit(macs),
        lit(standard_params),
        lit(standard_macs),
    );
    let name_text = name.to_string();
    let (first_field, rest_fields) = fields
        .split_first()
        .map_or((None, &[][..]), |(f, r)| (Some(f), r));
    let forward = match rest_fields.split_last() {
        None => quote!(self.#first_field.forward(input)),
        Some((last_field, middle)) => quote! {
            let x = self.#first_field.forward(input);
            #(let x = self.#middle.forward(&x);)*
            self.#last_field.forward(&x)
        },
    };
    let forward_doc = format!(
        " Runs the blocks in order, each on the previous block's output: {}.",
        fields
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", then ")
    );
    let load_doc = format!(
        " Block prefixes: {}.",
        fields
            .iter()
            .zip(&prefixes)
            .map(|(f, p)| format!("`{f}` `{{prefix}}{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let prefix_lits: Vec<LitStr> = prefixes
        .iter()
        .map(|p| LitStr::new(p, Span::call_site()))
        .collect();
    let dims = |f: &TokenStream, g: &TokenStream| -> Vec<TokenStream> {
        (0..3usize)
            .map(|i| {
                let i = lit(i);
                quote!(#f[#i] == #g[#i])
            })
            .collect()
    };
    let (first_ty, last_ty) = (&first.block.header.name, &last.block.header.name);
    let input_checks = dims(&quote!(#name::INPUT_SHAPE), &quote!(#first_ty::INPUT_SHAPE));
    let output_checks = dims(
        &quote!(#name::OUTPUT_SHAPE),
        &quote!(#last_ty::OUTPUT_SHAPE),
    );
    Ok(quote! {
        #(#attrs)*
        #separator
        #[doc = #doc]
        #[doc = ""]
        #[doc = #doc_table]
        #vis struct #name {
            #(
                #[doc = #field_docs]
                #vis #fields: #types,
            )*
        }

        const _: () = {
            use #krate::__private as __sep;

            #[allow(dead_code)]
            impl #name {
                /// The struct's name.
                pub const NAME: &'static str = #name_text;
                /// `[H, W, C]` of the input: the first block's input.
                pub const INPUT_SHAPE: [usize; 3] = #input_shape;
                /// `[OH, OW, N]` of the output: the last block's output.
                pub const OUTPUT_SHAPE: [usize; 3] = #output_shape;
                /// Parameters of all blocks: the sum of their `PARAMS`.
                pub const PARAMS: usize = #params_lit;
                /// Multiply-adds of one forward pass: the sum of the blocks' `MACS`.
                pub const MACS: usize = #macs_lit;
                /// Parameters of standard convolutions in place of the blocks: the sum of their
                /// `STANDARD_PARAMS`.
                pub const STANDARD_PARAMS: usize = #std_params_lit;
                /// Multiply-adds of standard convolutions in place of the blocks: the sum of
                /// their `STANDARD_MACS`.
                pub const STANDARD_MACS: usize = #std_macs_lit;
                /// A table of the blocks, one row each (field, type, output shape, parameters,
                /// multiply-adds) and a row of totals; what `Display` writes.
                pub const SUMMARY: &'static str = #summary;

                /// Every block with all weights and biases zero.
                #[must_use]
                pub fn zeroed() -> Self {
                    Self { #(#fields: #types::zeroed(),)* }
                }

                #[doc = #forward_doc]
                #[must_use]
                pub fn forward(&self, input: &#input_ty) -> #output_ty {
                    #forward
                }

                __sep::alloc_only! {
                    /// Loads every block from a safetensors file holding a PyTorch state dict, as
                    /// each block's `from_safetensors` does: block `k` reads
                    /// `{prefix}{block prefix}depthwise.weight` and the other tensors of its stages,
                    /// where the block prefix is `"k."` (as `nn.Sequential` names its children)
                    /// unless the block sets `prefix:`.
                    ///
                    #[doc = #load_doc]
                    ///
                    /// # Errors
                    /// `Error::InvalidFile` for bytes that are not a safetensors file, then the first
                    /// block's error, naming the tensor's full key: a missing tensor, a wrong shape or
                    /// dtype, or a bias against the block's `bias:`. (Needs the `alloc` feature.)
                    pub fn from_safetensors(
                        bytes: &[u8],
                        prefix: &str,
                    ) -> ::core::result::Result<Self, #krate::Error> {
                        let file = __sep::net_safetensors_file(#name_text, "from_safetensors", bytes)?;
                        Self::load(&file, prefix, "from_safetensors")
                    }

                    /// [`Self::from_safetensors`] from a file parsed once, e.g. for several
                    /// networks or to read other tensors as well.
                    ///
                    /// # Errors
                    /// As [`Self::from_safetensors`], except that the file is parsed already.
                    pub fn from_safetensors_file(
                        file: &__sep::SafetensorsFile<'_>,
                        prefix: &str,
                    ) -> ::core::result::Result<Self, #krate::Error> {
                        Self::load(file, prefix, "from_safetensors_file")
                    }

                    fn load(
                        file: &__sep::SafetensorsFile<'_>,
                        prefix: &str,
                        function: &'static str,
                    ) -> ::core::result::Result<Self, #krate::Error> {
                        ::core::result::Result::Ok(Self {
                            #(
                                #fields: __sep::net_load_block::<#types>(
                                    #name_text, function, file, prefix, #prefix_lits,
                                )?,
                            )*
                        })
                    }
                }
            }

            impl ::core::fmt::Display for #name {
                /// Writes [`Self::SUMMARY`].
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(Self::SUMMARY)
                }
            }

            // The totals above must be the sums of the blocks' own constants, and the shapes
            // the first block's input and the last block's output.
            const _: () = assert!(
                #name::PARAMS == #(#types::PARAMS)+*
                    && #name::MACS == #(#types::MACS)+*
                    && #name::STANDARD_PARAMS == #(#types::STANDARD_PARAMS)+*
                    && #name::STANDARD_MACS == #(#types::STANDARD_MACS)+*
                    #(&& #input_checks)*
                    #(&& #output_checks)*
            );
        };
    })
}

/// The table of `SUMMARY`:
///
/// ```text
/// Body: input 32 x 32 x 8, f32
/// block  type    output        params     MACs
/// -----  ------  ------------  ------  -------
/// b0     Block0  32 x 32 x 16     288  221,184
/// -----  ------  ------------  ------  -------
/// total          32 x 32 x 16     288  221,184
/// ```
fn summary(
    name: &str,
    input: [usize; 3],
    dtype: Dtype,
    rows: &[Row],
    params: usize,
    macs: usize,
) -> String {
    let total = Row {
        field: "total".to_owned(),
        ty: String::new(),
        output: rows.last().map(|r| r.output.clone()).unwrap_or_default(),
        params,
        macs,
    };
    let cells = |r: &Row| {
        [
            r.field.clone(),
            r.ty.clone(),
            r.output.clone(),
            grouped(r.params),
            grouped(r.macs),
        ]
    };
    let head = ["block", "type", "output", "params", "MACs"].map(str::to_owned);
    let body: Vec<[String; 5]> = rows.iter().chain([&total]).map(cells).collect();
    let mut widths = head.clone().map(|h| h.len());
    for row in &body {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String; 5]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let padded = if i >= 3 {
                format!("{cell:>width$}")
            } else {
                format!("{cell:<width$}")
            };
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(&padded);
        }
        text.trim_end().to_owned()
    };
    let rule = line(&widths.map(|w| "-".repeat(w)));
    let mut lines = vec![
        format!("{name}: input {}, {}", shape_text(input), dtype_name(dtype)),
        line(&head),
        rule.clone(),
    ];
    let (total_row, block_rows) = body
        .split_last()
        .map_or((None, &[][..]), |(t, b)| (Some(t), b));
    lines.extend(block_rows.iter().map(line));
    lines.push(rule);
    lines.extend(total_row.map(line));
    lines.join("\n")
}

/// `3195136` as `3,195,136`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

//! The invocation as written: a struct header and `key: value` entries, every token's span kept.
//!
//! ```text
//! invocation := attribute* visibility "struct" IDENT "{" (entry ("," entry)* ","?)? "}"
//! entry      := IDENT ":" value
//! value      := size ("x" size)*     e.g. `5 x 5 x 3`, `5x5x3`, `3`
//!             | IDENT                e.g. `same`, `relu6`, `f32`
//!             | STRING               e.g. `"models/block.safetensors"`
//! ```
//!
//! Parsing is forgiving between entries: a malformed entry records its error and parsing goes
//! on at the next `,`, so every mistake in an invocation is reported at once.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Error, Ident, LitInt, Token, Visibility};

use crate::codegen::RESERVED_PREFIX;

/// The largest number written anywhere in an invocation. With it, every product the code
/// generator forms (window extents, strided positions, offsets) fits in `usize` and `isize`.
pub(crate) const MAX_SIZE: usize = 1 << 32;

/// A whole `separable_conv!` invocation.
pub(crate) struct Invocation {
    pub(crate) header: Header,
    pub(crate) entries: Vec<Entry>,
    /// Errors of entries that could not be parsed; reported with the validation errors.
    pub(crate) errors: Vec<Error>,
    /// An error after the struct's name (`struct Seed<T> { .. }`): nothing else is checked.
    pub(crate) header_error: Option<Error>,
}

/// Everything before the braces: passed through to the generated struct.
#[derive(Clone)]
pub(crate) struct Header {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) name: Ident,
    /// The span of the braces, for errors about what is missing inside them.
    pub(crate) body_span: Span,
}

/// `key: value`.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) key: Ident,
    pub(crate) value: Value,
}

/// The right-hand side of an entry.
#[derive(Clone)]
pub(crate) enum Value {
    /// `5 x 5 x 3`: one or more sizes.
    Sizes(Sizes),
    /// `same`: one word.
    Word(Ident),
    /// `"models/block.safetensors"`: a string.
    Str(syn::LitStr),
    /// A value that did not parse; its error is in [`Invocation::errors`]. The key is kept so
    /// the key is not reported missing as well.
    Invalid(TokenStream),
}

/// Sizes separated by `x`, with the tokens they came from.
#[derive(Clone)]
pub(crate) struct Sizes {
    pub(crate) sizes: Vec<Size>,
    /// All tokens of the value, to underline it whole.
    pub(crate) tokens: TokenStream,
}

/// One integer of a [`Sizes`]; `span` is the token it was written in (`5x5x3` is one token).
#[derive(Clone, Copy)]
pub(crate) struct Size {
    pub(crate) value: usize,
    pub(crate) span: Span,
}

impl Value {
    /// All tokens of the value, for errors that underline it whole.
    pub(crate) fn tokens(&self) -> TokenStream {
        match self {
            Value::Sizes(sizes) => sizes.tokens.clone(),
            Value::Word(word) => word.to_token_stream(),
            Value::Str(text) => text.to_token_stream(),
            Value::Invalid(tokens) => tokens.clone(),
        }
    }
}

impl Parse for Invocation {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        let mut header = Header {
            attrs,
            vis,
            name,
            body_span: input.span(),
        };
        // From here on, errors still let the expansion emit a stub of the struct.
        let header_error = |header, error| Invocation {
            header,
            entries: Vec::new(),
            errors: Vec::new(),
            header_error: Some(error),
        };
        if header.name.to_string().starts_with(RESERVED_PREFIX) {
            let error = syn::Error::new(
                header.name.span(),
                format!(
                    "`separable_conv!` reserves names starting with `{RESERVED_PREFIX}` for the items it declares beside the layer; rename the struct"
                ),
            );
            input.parse::<TokenStream>()?;
            return Ok(header_error(header, error));
        }
        if input.peek(Token![<]) {
            let error = input.error(
                "`separable_conv!` layers take no generic parameters: every size is written in the layer",
            );
            input.parse::<TokenStream>()?;
            return Ok(header_error(header, error));
        }
        if !input.peek(syn::token::Brace) {
            let error =
                input.error("expected the layer's `{ input: .., output: .. }` after its name");
            input.parse::<TokenStream>()?;
            return Ok(header_error(header, error));
        }
        let content;
        let brace = syn::braced!(content in input);
        header.body_span = brace.span.join();
        let body: TokenStream = content.parse()?;
        let (entries, mut errors) = parse_entries(body);
        if !input.is_empty() {
            let rest: TokenStream = input.parse()?;
            errors.push(Error::new_spanned(
                rest,
                "unexpected tokens after the layer's `{ .. }`",
            ));
        }
        Ok(Invocation {
            header,
            entries,
            errors,
            header_error: None,
        })
    }
}

/// One piece of a body split at its top-level commas.
pub(crate) enum Part {
    /// The tokens between two commas (never empty).
    Entry(Vec<TokenTree>),
    /// A missing comma or an empty entry, in the order it occurs.
    Error(Error),
}

/// Splits a body at top-level commas. A missing comma (`input: 5x5x3 output: 4`) is reported
/// once and the body is still split before the second key, so both entries are read.
pub(crate) fn split_entries(body: TokenStream) -> Vec<Part> {
    let tokens: Vec<TokenTree> = body.into_iter().collect();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i <= tokens.len() {
        let at_comma = matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ',');
        let new_key = i >= start + 3 && is_key_start(&tokens[i..]);
        if i < tokens.len() && !at_comma && !new_key {
            i += 1;
            continue;
        }
        let piece = &tokens[start..i];
        if new_key {
            parts.push(Part::Error(Error::new(
                tokens[i].span(),
                format!("expected `,` before `{}`", tokens[i]),
            )));
        }
        if piece.is_empty() {
            if at_comma {
                parts.push(Part::Error(Error::new(
                    tokens[i].span(),
                    "expected `key: value` before `,`",
                )));
            }
        } else {
            parts.push(Part::Entry(piece.to_vec()));
        }
        start = if new_key { i } else { i + 1 };
        i += 1;
    }
    parts
}

/// Splits the body at top-level commas and parses each piece as an entry. A missing comma
/// (`input: 5x5x3 output: 4`) is reported once and both entries are still read.
fn parse_entries(body: TokenStream) -> (Vec<Entry>, Vec<Error>) {
    parse_entries_except(body, |_, _| false)
}

/// [`parse_entries`], except that pieces `key: value` for which `take(key, value)` returns
/// true are left to the caller (which parses them its own way).
pub(crate) fn parse_entries_except(
    body: TokenStream,
    mut take: impl FnMut(&Ident, &[TokenTree]) -> bool,
) -> (Vec<Entry>, Vec<Error>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for part in split_entries(body) {
        let piece = match part {
            Part::Error(error) => {
                errors.push(error);
                continue;
            }
            Part::Entry(piece) => piece,
        };
        if let Ok((key, value)) = parse_key(&piece)
            && take(&key, value)
        {
            continue;
        }
        match parse_entry(&piece) {
            Ok(entry) => entries.push(entry),
            Err((key, error)) => {
                errors.push(error);
                if let Some(key) = key {
                    let value = Value::Invalid(piece.iter().skip(2).cloned().collect());
                    entries.push(Entry { key, value });
                }
            }
        }
    }
    (entries, errors)
}

/// `IDENT :` (not `::`): where an entry starts.
fn is_key_start(tokens: &[TokenTree]) -> bool {
    matches!(
        tokens,
        [TokenTree::Ident(_), TokenTree::Punct(colon), ..]
            if colon.as_char() == ':' && colon.spacing() == proc_macro2::Spacing::Alone
    )
}

/// A key and its value's tokens, or the error with the key if one was read.
pub(crate) type KeyValue<'a> = Result<(Ident, &'a [TokenTree]), (Option<Ident>, Error)>;

/// The key of a non-empty piece and its value's tokens (never empty), or the error with the key
/// if one was read.
pub(crate) fn parse_key(tokens: &[TokenTree]) -> KeyValue<'_> {
    let key = match tokens.first() {
        Some(TokenTree::Ident(key)) => key.clone(),
        other => {
            let span = other.map_or_else(Span::call_site, TokenTree::span);
            return Err((
                None,
                Error::new(span, "expected a key such as `input`, `output` or `kernel`"),
            ));
        }
    };
    let fail = |error: Error| Err((Some(key.clone()), error));
    match tokens.get(1) {
        Some(TokenTree::Punct(p)) if p.as_char() == ':' => {}
        Some(other) => {
            return fail(Error::new(
                other.span(),
                format!("expected `:` after `{key}`"),
            ));
        }
        None => {
            return fail(Error::new(
                key.span(),
                format!("expected `:` after `{key}`"),
            ));
        }
    }
    let value = &tokens[2..];
    if value.is_empty() {
        return fail(Error::new(
            tokens[1].span(),
            format!("expected a value after `{key}:`"),
        ));
    }
    Ok((key, value))
}

/// An entry, or the error with the key if one was read.
pub(crate) fn parse_entry(tokens: &[TokenTree]) -> Result<Entry, (Option<Ident>, Error)> {
    let (key, value) = parse_key(tokens)?;
    match parse_value(value) {
        Ok(value @ Value::Str(_)) => Ok(Entry { key, value }),
        // `weights: models/block.safetensors`: the path without quotes.
        _ if key == "weights" || key == "prefix" => {
            let tokens: TokenStream = value.iter().cloned().collect();
            Err((
                Some(key.clone()),
                Error::new_spanned(
                    tokens,
                    format!(
                        "`{key}` takes a string in double quotes, e.g. `{key}: \"{}\"`",
                        if key == "weights" {
                            "models/block.safetensors"
                        } else {
                            "features.1."
                        }
                    ),
                ),
            ))
        }
        Ok(value) => Ok(Entry { key, value }),
        Err(error) => Err((Some(key), error)),
    }
}

/// A value: a string, one word, or sizes joined by `x`. `tokens` is not empty.
pub(crate) fn parse_value(tokens: &[TokenTree]) -> syn::Result<Value> {
    // A string passed through a `macro_rules!` fragment arrives in an invisible group.
    if let [TokenTree::Group(group)] = tokens
        && group.delimiter() == Delimiter::None
    {
        let inner: Vec<TokenTree> = group.stream().into_iter().collect();
        if let [TokenTree::Literal(_)] = inner.as_slice()
            && let Ok(syn::Lit::Str(text)) = syn::parse2::<syn::Lit>(group.stream())
        {
            return Ok(Value::Str(text));
        }
    }
    if let TokenTree::Literal(literal) = &tokens[0]
        && let Ok(syn::Lit::Str(text)) = syn::parse2::<syn::Lit>(tokens[0].to_token_stream())
    {
        return match tokens.get(1) {
            None => Ok(Value::Str(text)),
            Some(next) => Err(Error::new(
                next.span(),
                format!("unexpected token after {literal}; expected `,`"),
            )),
        };
    }
    if let TokenTree::Ident(word) = &tokens[0]
        && !starts_with_x_size(&word.to_string())
    {
        return match tokens.get(1) {
            None => Ok(Value::Word(word.clone())),
            Some(next) => Err(Error::new(
                next.span(),
                format!("unexpected token after `{word}`; expected `,`"),
            )),
        };
    }
    parse_sizes(tokens).map(Value::Sizes)
}

/// Whether an identifier continues a size list, as `x5` in `5 x5` or `x` alone.
fn starts_with_x_size(word: &str) -> bool {
    word.strip_prefix('x')
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == 'x'))
}

/// A piece of a size list as the lexer left it: `5x5x3` is one literal, `x5` one identifier.
enum Piece {
    Number(String, Span),
    Times(Span),
}

fn parse_sizes(tokens: &[TokenTree]) -> syn::Result<Sizes> {
    let mut pieces = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Literal(literal) => {
                let span = literal.span();
                let lit = match syn::parse2::<syn::Lit>(token.to_token_stream()) {
                    Ok(syn::Lit::Int(lit)) => lit,
                    Ok(syn::Lit::Float(_)) => {
                        return Err(Error::new(
                            span,
                            format!("expected a whole number, found `{literal}`"),
                        ));
                    }
                    _ => {
                        return Err(Error::new(
                            span,
                            format!("expected a size, found `{literal}`"),
                        ));
                    }
                };
                push_literal(&lit, span, &mut pieces)?;
            }
            TokenTree::Ident(ident) => {
                let text = ident.to_string();
                if !starts_with_x_size(&text) {
                    return Err(Error::new(
                        ident.span(),
                        format!("expected `x` between sizes, found `{text}`"),
                    ));
                }
                split_x(&text, ident.span(), &mut pieces);
            }
            TokenTree::Punct(p) if p.as_char() == '-' => {
                let mut negative = TokenStream::new();
                negative.extend(tokens[i..].iter().take(2).cloned());
                return Err(Error::new_spanned(negative, "a size cannot be negative"));
            }
            TokenTree::Punct(p) if p.as_char() == '*' => {
                return Err(Error::new(p.span(), "write `x` between sizes, not `*`"));
            }
            TokenTree::Group(group) if group.delimiter() == Delimiter::None => {
                // A size passed through a `macro_rules!` fragment: read what is inside.
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                let Sizes { sizes, .. } = parse_sizes(&inner)?;
                for (j, size) in sizes.iter().enumerate() {
                    if j > 0 {
                        pieces.push(Piece::Times(group.span()));
                    }
                    pieces.push(Piece::Number(size.value.to_string(), size.span));
                }
            }
            other => {
                return Err(Error::new(
                    other.span(),
                    format!("expected a size, found `{other}`"),
                ));
            }
        }
    }
    let mut sizes = Vec::new();
    let mut expect_number = true;
    let mut last_span = tokens[0].span();
    for piece in pieces {
        match (piece, expect_number) {
            (Piece::Number(digits, span), true) => {
                let value = digits
                    .parse::<usize>()
                    .map_err(|_| Error::new(span, format!("`{digits}` does not fit in `usize`")))?;
                if value > MAX_SIZE {
                    return Err(Error::new(
                        span,
                        format!("`{digits}` is larger than the largest size, {MAX_SIZE} (2^32)"),
                    ));
                }
                sizes.push(Size { value, span });
                last_span = span;
            }
            (Piece::Number(_, span), false) => {
                return Err(Error::new(span, "expected `x` between sizes"));
            }
            (Piece::Times(span), true) => {
                return Err(Error::new(span, "expected a size before `x`"));
            }
            (Piece::Times(span), false) => last_span = span,
        }
        expect_number = !expect_number;
    }
    if expect_number {
        return Err(Error::new(last_span, "expected a size after `x`"));
    }
    Ok(Sizes {
        sizes,
        tokens: tokens.iter().cloned().collect(),
    })
}

/// An integer literal may carry more sizes in its suffix: `5x5x3` lexes as `5` + `x5x3`.
fn push_literal(lit: &LitInt, span: Span, pieces: &mut Vec<Piece>) -> syn::Result<()> {
    let suffix = lit.suffix();
    if !suffix.is_empty() && !starts_with_x_size(suffix) {
        // `5x5x3u8` lexes as `5` with suffix `x5x3u8`: name only the `u8`.
        let extra = suffix.trim_start_matches(|c: char| c == 'x' || c.is_ascii_digit());
        let extra = if extra.is_empty() { suffix } else { extra };
        return Err(Error::new(
            span,
            format!("sizes are plain integers; remove the suffix `{extra}`"),
        ));
    }
    pieces.push(Piece::Number(lit.base10_digits().to_owned(), span));
    split_x(suffix, span, pieces);
    Ok(())
}

/// Splits `x5x3` into `x`, `5`, `x`, `3`.
fn split_x(text: &str, span: Span, pieces: &mut Vec<Piece>) {
    let mut digits = String::new();
    for c in text.chars() {
        if c == 'x' {
            if !digits.is_empty() {
                pieces.push(Piece::Number(std::mem::take(&mut digits), span));
            }
            pieces.push(Piece::Times(span));
        } else {
            digits.push(c);
        }
    }
    if !digits.is_empty() {
        pieces.push(Piece::Number(digits, span));
    }
}

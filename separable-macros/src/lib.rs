//! The procedural macros behind `separable::separable_conv!` and `separable::separable_net!`.
//!
//! Use them through the `separable` crate, whose macros pass its own path in, so the generated
//! code reaches the runtime whatever name the dependency has.
//!
//! The pipeline runs one way: `ast` parses the invocation keeping every token's span,
//! `model` validates it into plain shapes (all arithmetic lives in `separable-shape`),
//! `plan` chooses how much to unroll, and `codegen` emits the layer. `net` parses a network,
//! builds each block's layer invocation from the user's tokens and runs it through the same
//! pipeline, then emits the network around the blocks.

mod ast;
mod codegen;
mod embed;
mod model;
mod net;
mod plan;

use proc_macro2::{TokenStream, TokenTree};

/// Expands one `separable_conv!` invocation. The input is `<path to separable>; <invocation>`.
#[doc(hidden)]
#[proc_macro]
pub fn separable_conv_impl(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let (krate, body) = split_crate_path(input.into());
    expand(&krate, body).into()
}

/// Expands one `separable_net!` invocation. The input is `<path to separable>; <invocation>`.
#[doc(hidden)]
#[proc_macro]
pub fn separable_net_impl(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let (krate, body) = split_crate_path(input.into());
    net::expand(&krate, body).into()
}

/// Splits the `$crate;` prefix the public `macro_rules!` wrapper adds.
fn split_crate_path(input: TokenStream) -> (TokenStream, TokenStream) {
    let mut krate = TokenStream::new();
    let mut tokens = input.into_iter();
    for token in tokens.by_ref() {
        if matches!(&token, TokenTree::Punct(p) if p.as_char() == ';') {
            return (krate, tokens.collect());
        }
        krate.extend([token]);
    }
    // No `;`: called directly without a crate path; assume the usual name.
    (quote::quote!(::separable), krate)
}

/// Parses, validates and generates; on any error emits the errors plus a stub struct so that
/// one mistake gives one diagnostic.
fn expand(krate: &TokenStream, input: TokenStream) -> TokenStream {
    let invocation = match syn::parse2::<ast::Invocation>(input) {
        Ok(invocation) => invocation,
        Err(error) => return error.to_compile_error(),
    };
    match validate(&invocation) {
        Ok((layer, embedded)) => {
            codegen::layer(krate, &invocation.header, &layer, embedded.as_ref())
        }
        Err(error) => {
            let stub = codegen::stub(&invocation.header);
            let errors = error.to_compile_error();
            quote::quote!(#stub #errors)
        }
    }
}

/// Validates a parsed invocation: every error of its header or its entries, combined.
pub(crate) fn validate(
    invocation: &ast::Invocation,
) -> syn::Result<(model::Layer, Option<embed::Embedded>)> {
    if let Some(error) = &invocation.header_error {
        return Err(error.clone());
    }
    let layer = model::Layer::from_ast(invocation)?;
    let embedded = embed::read(&layer)?;
    Ok((layer, embedded))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

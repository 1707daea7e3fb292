//! Code generation: from a validated [`Layer`] to the struct, its constants and its kernels.
//!
//! Every size, stride and offset is emitted as a literal. The generated code reaches the runtime
//! only through `<crate>::__private` (aliased `__sep`) and the public `<crate>::Tensor`,
//! `<crate>::Error` and `<crate>::Layer`, where `<crate>` is the path the public macro passes in.

// A `quote!` template reads best in one piece, however long.
#![allow(clippy::too_many_lines)]

use proc_macro2::{Literal, TokenStream};
use std::ops::Range;

use quote::quote;
use separable_shape::{Activation, Bias, Padding};

use crate::ast::Header;
use crate::embed::{Embedded, FileDtype, Stored};
use crate::model::{Dtype, Layer};
use crate::plan::{Depthwise, Plan, Planar, Strips};

pub(crate) fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// The stub emitted next to errors, so that uses of the struct do not add a cascade of
/// "cannot find type" errors to the one that matters.
pub(crate) fn stub(header: &Header) -> TokenStream {
    let Header {
        attrs, vis, name, ..
    } = header;
    quote! {
        #(#attrs)*
        #vis struct #name;
    }
}

/// `<crate>::Tensor<H, W, C>` (or `<.., f64>`) for a shape.
pub(crate) fn tensor_type(krate: &TokenStream, [h, w, c]: [usize; 3], dtype: Dtype) -> TokenStream {
    let (h, w, c) = (lit(h), lit(w), lit(c));
    match dtype {
        // The default element type is left out so messages read `Tensor<5, 5, 3>`.
        Dtype::F32 => quote!(#krate::Tensor<#h, #w, #c>),
        Dtype::F64 => quote!(#krate::Tensor<#h, #w, #c, f64>),
    }
}

/// Sizes and names shared by every part of the expansion.
///
/// Inside the expansion's `const _` block the tensor and array types are named by the aliases
/// [`Ctx::aliases`] declares: rustc checks every literal size in a type as a constant of its
/// own, so a type spelled out at each use costs far more to compile than one alias.
struct Ctx<'a> {
    krate: &'a TokenStream,
    layer: &'a Layer,
    plan: Plan,
    elem: TokenStream,
    zero: TokenStream,
    input_ty: TokenStream,
    depthwise_ty: TokenStream,
    output_ty: TokenStream,
    input_array: TokenStream,
    depthwise_array: TokenStream,
    output_array: TokenStream,
    /// `[T; C·M]`: a depthwise pixel, and the depthwise bias.
    depthwise_pixel: TokenStream,
    /// `[T; N]`: an output pixel, and the pointwise bias.
    output_pixel: TokenStream,
    depthwise_weight: TokenStream,
    pointwise_weight: TokenStream,
}

/// Prefix of the names the expansion declares beside the user's struct; the parser rejects a
/// struct named with it.
pub(crate) const RESERVED_PREFIX: &str = "__Sep";

impl<'a> Ctx<'a> {
    fn new(krate: &'a TokenStream, layer: &'a Layer) -> Self {
        let (elem, zero) = match layer.dtype {
            Dtype::F32 => (quote!(f32), quote!(0.0_f32)),
            Dtype::F64 => (quote!(f64), quote!(0.0_f64)),
        };
        Ctx {
            krate,
            layer,
            plan: Plan::new(
                &layer.spec,
                layer.shape.rows,
                layer.shape.cols,
                layer.dtype.bytes(),
            ),
            input_ty: quote!(__SepInput),
            depthwise_ty: quote!(__SepDepthwise),
            output_ty: quote!(__SepOutput),
            input_array: quote!(__SepInputArray),
            depthwise_array: quote!(__SepDepthwiseArray),
            output_array: quote!(__SepOutputArray),
            depthwise_pixel: quote!(__SepDepthwisePixel),
            output_pixel: quote!(__SepOutputPixel),
            depthwise_weight: quote!(__SepDepthwiseWeight),
            pointwise_weight: quote!(__SepPointwiseWeight),
            elem,
            zero,
        }
    }

    /// The aliases the rest of the expansion names its types by, at the top of its `const _`
    /// block (so they are private to it; rustdoc shows what they stand for).
    fn aliases(&self) -> TokenStream {
        let shape = &self.layer.shape;
        let tensor = |dims| tensor_type(self.krate, dims, self.layer.dtype);
        let (input, depthwise, output) = (
            tensor(shape.input),
            tensor(shape.depthwise),
            tensor(shape.output),
        );
        let (input_array, depthwise_array, output_array) = (
            self.array(&shape.input),
            self.array(&shape.depthwise),
            self.array(&shape.output),
        );
        let [kh, kw] = self.layer.spec.kernel;
        let cm = shape.depthwise[2];
        let depthwise_pixel = self.array(&[cm]);
        let output_pixel = self.array(&[self.layer.spec.output_channels]);
        let depthwise_weight = self.array(&[kh, kw, cm]);
        let pointwise_weight = self.array(&[shape.pointwise_packed]);
        quote! {
            type __SepInput = #input;
            type __SepDepthwise = #depthwise;
            type __SepOutput = #output;
            type __SepInputArray = #input_array;
            type __SepDepthwiseArray = #depthwise_array;
            type __SepOutputArray = #output_array;
            type __SepDepthwisePixel = #depthwise_pixel;
            type __SepOutputPixel = #output_pixel;
            type __SepDepthwiseWeight = #depthwise_weight;
            type __SepPointwiseWeight = #pointwise_weight;
        }
    }

    /// `[[[T; C]; W]; H]` for a shape.
    fn array(&self, dims: &[usize]) -> TokenStream {
        let elem = &self.elem;
        dims.iter().rev().fold(quote!(#elem), |inner, &d| {
            let d = lit(d);
            quote!([#inner; #d])
        })
    }

    fn activation(&self, activation: Activation) -> Option<TokenStream> {
        let krate = self.krate;
        let variant = match activation {
            Activation::None => return None,
            Activation::Relu => quote!(Relu),
            Activation::Relu6 => quote!(Relu6),
        };
        Some(quote!(__sep::activate(#krate::Activation::#variant, &mut acc);))
    }
}

/// The whole expansion for a valid layer.
pub(crate) fn layer(
    krate: &TokenStream,
    header: &Header,
    layer: &Layer,
    embedded: Option<&Embedded>,
) -> TokenStream {
    let ctx = Ctx::new(krate, layer);
    let definition = definition(&ctx, header);
    let consts = consts(&ctx, header);
    let constructors = constructors(&ctx, header);
    let embedded = embedded.map(|embedded| embedded_fn(&ctx, header, embedded));
    let stages = stages(&ctx, header);
    let kernels = kernels(&ctx);
    let trait_impl = trait_impl(&ctx, header);
    let name = &header.name;
    let kernel_structs = kernel_structs(&ctx, name);
    let aliases = ctx.aliases();
    quote! {
        #definition

        const _: () = {
            use #krate::__private as __sep;
            #aliases

            #[allow(dead_code)]
            impl #name {
                #consts
                #constructors
                #embedded
                #stages
                #kernels
            }

            #kernel_structs

            #trait_impl

            // Evaluated whether or not the layer is used: the literals above must agree with
            // the runtime's shape arithmetic.
            const _: #krate::LayerShape = #name::SHAPE;
        };
    }
}

/// `embedded()`: the layer in a `static`, its weights decoded from the file's bytes during
/// constant evaluation.
fn embedded_fn(ctx: &Ctx<'_>, header: &Header, embedded: &Embedded) -> TokenStream {
    let layer = ctx.layer;
    let name = &header.name;
    let [kh, kw] = layer.spec.kernel;
    let cm = layer.shape.depthwise[2];
    let n = layer.spec.output_channels;
    let packed = layer.shape.pointwise_packed;
    let suffix = match layer.dtype {
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
    };
    let decoder = |family: &str| quote::format_ident!("{family}_{suffix}");
    let (depthwise, pointwise, vector) = (
        decoder("depthwise"),
        decoder("pointwise"),
        decoder("vector"),
    );
    let source = |stored: &Stored| {
        let offset = lit(stored.offset);
        let dtype = match stored.dtype {
            FileDtype::F32 => quote!(F32),
            FileDtype::F64 => quote!(F64),
            FileDtype::F16 => quote!(F16),
            FileDtype::BF16 => quote!(BF16),
        };
        quote!(BYTES, #offset, __sep::embed::FileDtype::#dtype)
    };
    let (kh_lit, kw_lit, cm_lit, n_lit, packed_lit) =
        (lit(kh), lit(kw), lit(cm), lit(n), lit(packed));
    let dw_ty = ctx.depthwise_weight.clone();
    let pw_ty = ctx.pointwise_weight.clone();
    let dw_source = source(&embedded.depthwise_weight);
    let pw_source = source(&embedded.pointwise_weight);
    let dw_bias = embedded.depthwise_bias.as_ref().map(|stored| {
        let ty = &ctx.depthwise_pixel;
        let source = source(stored);
        (
            quote! {
                #[allow(long_running_const_eval)]
                static DEPTHWISE_BIAS: __sep::Aligned<#ty> =
                    __sep::embed::#vector::<#cm_lit>(#source);
            },
            quote!(depthwise_bias: __sep::Storage::from_static(&DEPTHWISE_BIAS),),
        )
    });
    let pw_bias = embedded.pointwise_bias.as_ref().map(|stored| {
        let ty = &ctx.output_pixel;
        let source = source(stored);
        (
            quote! {
                #[allow(long_running_const_eval)]
                static POINTWISE_BIAS: __sep::Aligned<#ty> =
                    __sep::embed::#vector::<#n_lit>(#source);
            },
            quote!(pointwise_bias: __sep::Storage::from_static(&POINTWISE_BIAS),),
        )
    });
    let (dw_bias_static, dw_bias_field) = dw_bias.unzip();
    let (pw_bias_static, pw_bias_field) = pw_bias.unzip();
    let file = layer.weights.as_ref().map_or("", |w| w.path.as_str());
    let prefix = layer.weights.as_ref().map_or("", |w| w.prefix.as_str());
    let doc = format!(
        " The layer with the weights of `{file}` (tensors `{prefix}depthwise.weight`, ...), baked into the program at compile time: a `static`, with no allocation and no file access at run time."
    );
    let path = &embedded.path;
    let (file_len, header_len) = (
        lit(embedded.file_len),
        Literal::u64_unsuffixed(embedded.header_len),
    );
    let changed = format!("`{file}` changed while `{name}` was being compiled; build again");
    quote! {
        #[doc = #doc]
        ///
        /// Writing through a `_mut` accessor of a clone copies the weights first; the static
        /// layer never changes.
        #[must_use]
        pub fn embedded() -> &'static Self {
            const BYTES: &[u8] = include_bytes!(#path);
            // The offsets below are those of the file the macro read.
            const _: () = assert!(
                BYTES.len() == #file_len && __sep::embed::header_len(BYTES) == #header_len,
                #changed
            );
            // Decoding a large file takes many steps of constant evaluation, and the file's
            // size is bounded (each tensor by `MAX_ELEMENTS`), so the loop always ends.
            #[allow(long_running_const_eval)]
            static DEPTHWISE_WEIGHT: __sep::Aligned<#dw_ty> =
                __sep::embed::#depthwise::<#kh_lit, #kw_lit, #cm_lit>(#dw_source);
            #[allow(long_running_const_eval)]
            static POINTWISE_WEIGHT: __sep::Aligned<#pw_ty> =
                __sep::embed::#pointwise::<#packed_lit>(#pw_source, #cm_lit, #n_lit);
            #dw_bias_static
            #pw_bias_static
            static LAYER: #name = #name {
                depthwise_weight: __sep::Storage::from_static(&DEPTHWISE_WEIGHT),
                #dw_bias_field
                pointwise_weight: __sep::Storage::from_static(&POINTWISE_WEIGHT),
                #pw_bias_field
            };
            &LAYER
        }
    }
}

/// `H x W x C`, as shapes are written in an invocation.
pub(crate) fn shape_text([h, w, c]: [usize; 3]) -> String {
    format!("{h} x {w} x {c}")
}

fn definition(ctx: &Ctx<'_>, header: &Header) -> TokenStream {
    let Header {
        attrs, vis, name, ..
    } = header;
    let krate = ctx.krate;
    let spec = &ctx.layer.spec;
    let shape = &ctx.layer.shape;
    let [kh, kw] = spec.kernel;
    let cm = shape.depthwise[2];
    let n = spec.output_channels;
    let dw = ctx.array(&[kh, kw, cm]);
    let pw = ctx.array(&[shape.pointwise_packed]);
    let dw_bias = spec.bias.depthwise().then(|| {
        let ty = ctx.array(&[cm]);
        quote!(depthwise_bias: #krate::__private::Storage<#ty>,)
    });
    let pw_bias = spec.bias.pointwise().then(|| {
        let ty = ctx.array(&[n]);
        quote!(pointwise_bias: #krate::__private::Storage<#ty>,)
    });
    let summary = format!(
        " Depthwise-separable layer `{}` -> `{}`, generated by `separable_conv!`: {} parameters, {} multiply-adds per forward pass.",
        shape_text(shape.input),
        shape_text(shape.output),
        shape.params,
        shape.macs,
    );
    let separator = (!attrs.is_empty()).then(|| quote!(#[doc = ""]));
    quote! {
        #(#attrs)*
        #separator
        #[doc = #summary]
        #vis struct #name {
            depthwise_weight: #krate::__private::Storage<#dw>,
            #dw_bias
            pointwise_weight: #krate::__private::Storage<#pw>,
            #pw_bias
        }
    }
}

fn padding_tokens(padding: Padding) -> TokenStream {
    match padding {
        Padding::Valid => quote!(Valid),
        Padding::Same => quote!(Same),
        Padding::Explicit { height, width } => {
            let (h, w) = (lit(height), lit(width));
            quote!(Explicit { height: #h, width: #w })
        }
    }
}

fn bias_tokens(bias: Bias) -> TokenStream {
    match bias {
        Bias::None => quote!(None),
        Bias::Pointwise => quote!(Pointwise),
        Bias::Both => quote!(Both),
    }
}

fn activation_tokens(activation: Activation) -> TokenStream {
    match activation {
        Activation::None => quote!(None),
        Activation::Relu => quote!(Relu),
        Activation::Relu6 => quote!(Relu6),
    }
}

fn consts(ctx: &Ctx<'_>, header: &Header) -> TokenStream {
    let krate = ctx.krate;
    let spec = &ctx.layer.spec;
    let s = &ctx.layer.shape;
    let triple = |[a, b, c]: [usize; 3]| {
        let (a, b, c) = (lit(a), lit(b), lit(c));
        quote!([#a, #b, #c])
    };
    let pair = |[a, b]: [usize; 2]| {
        let (a, b) = (lit(a), lit(b));
        quote!([#a, #b])
    };
    let (input, depthwise, output) = (triple(s.input), triple(s.depthwise), triple(s.output));
    let (spec_input, kernel, stride, dilation) = (
        triple(spec.input),
        pair(spec.kernel),
        pair(spec.stride),
        pair(spec.dilation),
    );
    let (n, m) = (lit(spec.output_channels), lit(spec.multiplier));
    let padding = padding_tokens(spec.padding);
    let bias = bias_tokens(spec.bias);
    let dw_act = activation_tokens(ctx.layer.depthwise_activation);
    let pw_act = activation_tokens(ctx.layer.pointwise_activation);
    let count = |n: usize| lit(n);
    let (dwp, pwp, params, stdp, macs, stdm) = (
        count(s.depthwise_params),
        count(s.pointwise_params),
        count(s.params),
        count(s.standard_params),
        count(s.macs),
        count(s.standard_macs),
    );
    let name = header.name.to_string();
    let scratch = lit(ctx
        .plan
        .forward_scratch(&ctx.layer.spec)
        .saturating_mul(ctx.layer.dtype.bytes()));
    quote! {
        /// The struct's name.
        pub const NAME: &'static str = #name;
        /// `[H, W, C]` of the input.
        pub const INPUT_SHAPE: [usize; 3] = #input;
        /// `[OH, OW, C·M]` of the depthwise stage's output.
        pub const DEPTHWISE_SHAPE: [usize; 3] = #depthwise;
        /// `[OH, OW, N]` of the output.
        pub const OUTPUT_SHAPE: [usize; 3] = #output;
        /// Depthwise weights `KH·KW·C·M`, plus `C·M` with `bias: both`.
        pub const DEPTHWISE_PARAMS: usize = #dwp;
        /// Pointwise weights `C·M·N`, plus `N` with any bias.
        pub const POINTWISE_PARAMS: usize = #pwp;
        /// `DEPTHWISE_PARAMS + POINTWISE_PARAMS`.
        pub const PARAMS: usize = #params;
        /// Parameters of a standard `KH x KW` convolution from `C` to `N` channels: `KH·KW·C·N`,
        /// plus `N` with any bias.
        pub const STANDARD_PARAMS: usize = #stdp;
        /// Multiply-adds of one forward pass, every tap counted (padding included):
        /// `OH·OW·C·M·KH·KW + OH·OW·C·M·N`.
        pub const MACS: usize = #macs;
        /// Multiply-adds of the standard convolution: `OH·OW·KH·KW·C·N`.
        pub const STANDARD_MACS: usize = #stdm;
        /// Bytes of the buffer `forward` keeps on the stack in place of the depthwise tensor
        /// (`DEPTHWISE_SHAPE`, which it never stores): the peak extra memory of a forward pass
        /// beyond its input and output, apart from a few call frames.
        pub const FORWARD_SCRATCH_BYTES: usize = #scratch;
        /// The declared layer.
        pub const SPEC: #krate::LayerSpec = #krate::LayerSpec {
            input: #spec_input,
            output_channels: #n,
            kernel: #kernel,
            stride: #stride,
            dilation: #dilation,
            multiplier: #m,
            padding: #krate::Padding::#padding,
            bias: #krate::Bias::#bias,
        };
        /// Every size derived from [`Self::SPEC`] by the runtime's shape arithmetic.
        pub const SHAPE: #krate::LayerShape = __sep::generated_shape(
            &Self::SPEC,
            [Self::PARAMS, Self::MACS, Self::STANDARD_PARAMS, Self::STANDARD_MACS],
        );
        /// The activation after the depthwise stage.
        pub const DEPTHWISE_ACTIVATION: #krate::Activation = #krate::Activation::#dw_act;
        /// The activation after the pointwise stage.
        pub const POINTWISE_ACTIVATION: #krate::Activation = #krate::Activation::#pw_act;
    }
}

fn constructors(ctx: &Ctx<'_>, header: &Header) -> TokenStream {
    let krate = ctx.krate;
    let elem = &ctx.elem;
    let spec = &ctx.layer.spec;
    let shape = &ctx.layer.shape;
    let [kh, kw] = spec.kernel;
    let cm = shape.depthwise[2];
    let n = spec.output_channels;
    let dw = &ctx.depthwise_weight;
    let (cm_lit, n_lit) = (lit(cm), lit(n));
    let dw_bias_ty = &ctx.depthwise_pixel;
    let pw_bias_ty = &ctx.output_pixel;
    let has_dw_bias = spec.bias.depthwise();
    let has_pw_bias = spec.bias.pointwise();
    let init_dw_bias = has_dw_bias.then(|| quote!(depthwise_bias: __sep::Storage::zeroed(),));
    let init_pw_bias = has_pw_bias.then(|| quote!(pointwise_bias: __sep::Storage::zeroed(),));
    let (dw_bias_get, dw_bias_mut, dw_bias_slice) = if has_dw_bias {
        (
            quote!(::core::option::Option::Some(&*self.depthwise_bias)),
            quote!(::core::option::Option::Some(&mut *self.depthwise_bias)),
            quote!(::core::option::Option::Some(__sep::Flat::flat(
                &*self.depthwise_bias
            ))),
        )
    } else {
        let none = quote!(::core::option::Option::None);
        (none.clone(), none.clone(), none)
    };
    let (pw_bias_get, pw_bias_mut, pw_bias_slice) = if has_pw_bias {
        (
            quote!(::core::option::Option::Some(&*self.pointwise_bias)),
            quote!(::core::option::Option::Some(&mut *self.pointwise_bias)),
            quote!(::core::option::Option::Some(__sep::Flat::flat(
                &*self.pointwise_bias
            ))),
        )
    } else {
        let none = quote!(::core::option::Option::None);
        (none.clone(), none.clone(), none)
    };
    // An undeclared bias is `None` of some storage type.
    let load_bias = |present: bool, field: TokenStream| {
        if present {
            quote!(::core::option::Option::Some(&mut layer.#field))
        } else {
            quote!(::core::option::Option::None::<&mut __sep::Storage<[#elem; 0]>>)
        }
    };
    let dw_bias_load = load_bias(has_dw_bias, quote!(depthwise_bias));
    let pw_bias_load = load_bias(has_pw_bias, quote!(pointwise_bias));
    let context = format!("{}::from_pytorch", header.name);
    let from_pytorch_doc = format!(
        " Loads weights in PyTorch's layouts, row-major: `dw_weight` `[{cm}, 1, {kh}, {kw}]` (`[C·M, 1, KH, KW]`), `dw_bias` `[{cm}]`, `pw_weight` `[{n}, {cm}, 1, 1]` (`[N, C·M, 1, 1]`), `pw_bias` `[{n}]`."
    );
    let bias_rule = match spec.bias {
        Bias::None => " This layer is declared `bias: none`: both biases must be `None`.",
        Bias::Pointwise => {
            " This layer is declared `bias: pointwise`: `dw_bias` must be `None`, `pw_bias` given."
        }
        Bias::Both => " This layer is declared `bias: both`: both biases must be given.",
    };
    quote! {
        /// A layer whose weights and biases are all zero (on the heap with the `alloc` feature).
        #[must_use]
        pub fn zeroed() -> Self {
            Self {
                depthwise_weight: __sep::Storage::zeroed(),
                #init_dw_bias
                pointwise_weight: __sep::Storage::zeroed(),
                #init_pw_bias
            }
        }

        #[doc = #from_pytorch_doc]
        #[doc = ""]
        #[doc = #bias_rule]
        ///
        /// # Errors
        /// `Error::Length` naming the tensor, the expected and the actual length if a buffer has
        /// the wrong length; `Error::UnexpectedBias` or `Error::MissingBias` if a bias is given or
        /// missing against the declared `bias:`.
        pub fn from_pytorch(
            dw_weight: &[#elem],
            dw_bias: ::core::option::Option<&[#elem]>,
            pw_weight: &[#elem],
            pw_bias: ::core::option::Option<&[#elem]>,
        ) -> ::core::result::Result<Self, #krate::Error> {
            let mut layer = Self::zeroed();
            __sep::load_pytorch_storage(
                #context,
                &Self::SPEC,
                (dw_weight, dw_bias, pw_weight, pw_bias),
                (
                    &mut layer.depthwise_weight,
                    #dw_bias_load,
                    &mut layer.pointwise_weight,
                    #pw_bias_load,
                ),
            )?;
            ::core::result::Result::Ok(layer)
        }

        // `Vec`s: only when the runtime has a heap.
        __sep::alloc_only! {
            /// The weights and biases in PyTorch's layouts (the inverse of `from_pytorch`; needs
            /// the `alloc` feature).
            #[must_use]
            pub fn to_pytorch(&self) -> #krate::weights::PytorchWeights<#elem> {
                #krate::weights::to_pytorch(
                    &Self::SPEC,
                    __sep::Flat::flat(&*self.depthwise_weight),
                    #dw_bias_slice,
                    __sep::Flat::flat(&*self.pointwise_weight),
                    #pw_bias_slice,
                )
            }
        }

        /// Depthwise weights indexed `[kh][kw][c·M + m]`: tap `(kh, kw)` of depthwise channel
        /// `c·M + m`, which reads input channel `c`.
        #[must_use]
        pub fn depthwise_weight(&self) -> &#dw {
            &self.depthwise_weight
        }

        /// Depthwise weights, mutably; see [`Self::depthwise_weight`].
        pub fn depthwise_weight_mut(&mut self) -> &mut #dw {
            &mut self.depthwise_weight
        }

        /// The depthwise bias, one per depthwise channel; `None` unless `bias: both`.
        #[must_use]
        pub fn depthwise_bias(&self) -> ::core::option::Option<&#dw_bias_ty> {
            #dw_bias_get
        }

        /// The depthwise bias, mutably; `None` unless `bias: both`.
        pub fn depthwise_bias_mut(&mut self) -> ::core::option::Option<&mut #dw_bias_ty> {
            #dw_bias_mut
        }

        /// Pointwise weights, indexed `[(k, n)]`: from depthwise channel `k` to output
        /// channel `n`. They are stored packed for the matrix microkernels.
        #[must_use]
        pub fn pointwise_weight(&self) -> #krate::weights::PointwiseWeights<'_, #elem> {
            #krate::weights::PointwiseWeights::new(__sep::Flat::flat(&*self.pointwise_weight), #cm_lit, #n_lit)
        }

        /// Pointwise weights, mutably; see [`Self::pointwise_weight`].
        pub fn pointwise_weight_mut(&mut self) -> #krate::weights::PointwiseWeightsMut<'_, #elem> {
            #krate::weights::PointwiseWeightsMut::new(__sep::Flat::flat_mut(&mut *self.pointwise_weight), #cm_lit, #n_lit)
        }

        /// The pointwise bias, one per output channel; `None` with `bias: none`.
        #[must_use]
        pub fn pointwise_bias(&self) -> ::core::option::Option<&#pw_bias_ty> {
            #pw_bias_get
        }

        /// The pointwise bias, mutably; `None` with `bias: none`.
        pub fn pointwise_bias_mut(&mut self) -> ::core::option::Option<&mut #pw_bias_ty> {
            #pw_bias_mut
        }
    }
}

/// The public stages. Unrolled tiny layers run per pixel; planar tiny layers run on channel
/// planes under `__sep::dispatch`, which compiles them for the CPU's instruction set (the
/// pointwise stage alone of a tiny layer runs per pixel); the others tile by strips and channel
/// blocks, in loops compiled once for any instruction set around calls of the runtime's
/// kernels, which pick the code for `isa`.
fn stages(ctx: &Ctx<'_>, header: &Header) -> TokenStream {
    let Ctx {
        krate,
        input_ty,
        depthwise_ty,
        output_ty,
        ..
    } = ctx;
    let (forward, depthwise, pointwise) = match &ctx.plan.depthwise {
        Depthwise::Unrolled => (
            quote!(self.forward_pixels(x, out)),
            quote!(self.depthwise_pixels(input.as_array(), output.as_array_mut())),
            quote!(self.pointwise_pixels(depthwise.as_array(), output.as_array_mut())),
        ),
        Depthwise::Planar(_) => (
            quote!(__sep::dispatch_as(
                __sep::planar_isa(isa),
                __SepForward {
                    layer: self,
                    x,
                    out
                }
            )),
            quote!(__sep::dispatch_as(
                __sep::planar_isa(isa),
                __SepDepthwiseStage {
                    layer: self,
                    x: input.as_array(),
                    out: output.as_array_mut()
                }
            )),
            quote!(self.pointwise_pixels(depthwise.as_array(), output.as_array_mut())),
        ),
        Depthwise::InteriorBorder { strips, .. } => {
            let (elem, len) = (
                &ctx.elem,
                lit(strips.stack_len(ctx.layer.shape.depthwise[1])),
            );
            let strip_call = |function: TokenStream, x: TokenStream, out: TokenStream| {
                quote!(#function(
                    isa,
                    &Self::__STRIPS,
                    &self.strip_weights(),
                    __sep::Flat::flat(#x),
                    __sep::Flat::flat_mut(#out),
                ))
            };
            (
                strip_call(
                    quote!(__sep::strips_forward_on_stack::<#elem, #len>),
                    quote!(x),
                    quote!(out),
                ),
                strip_call(
                    quote!(<#elem as __sep::StripLoops>::depthwise),
                    quote!(input.as_array()),
                    quote!(output.as_array_mut()),
                ),
                strip_call(
                    quote!(<#elem as __sep::StripLoops>::pointwise),
                    quote!(depthwise.as_array()),
                    quote!(output.as_array_mut()),
                ),
            )
        }
    };
    let parallel = match &ctx.plan.depthwise {
        Depthwise::Unrolled | Depthwise::Planar(_) => quote!(self.forward_into(input, output);),
        Depthwise::InteriorBorder { strips, .. } => {
            let (elem, len) = (
                &ctx.elem,
                lit(strips.stack_len(ctx.layer.shape.depthwise[1])),
            );
            quote! {
                __sep::strips_forward_parallel::<#elem, #len>(
                    #krate::Isa::detect(),
                    &Self::__STRIPS,
                    &self.strip_weights(),
                    __sep::Flat::flat(input.as_array()),
                    __sep::Flat::flat_mut(output.as_array_mut()),
                );
            }
        }
    };
    // Code that runs with another instruction set than `isa` (per-pixel code on every one,
    // planar stages with at most AVX2) still rejects one this CPU lacks.
    let check_isa = quote! {
        assert!(isa.is_supported(), "instruction set not supported by this CPU");
    };
    let (forward_isa, depthwise_isa, pointwise_isa) = match &ctx.plan.depthwise {
        Depthwise::Unrolled | Depthwise::Planar(_) => {
            (Some(&check_isa), Some(&check_isa), Some(&check_isa))
        }
        Depthwise::InteriorBorder { .. } => (None, None, None),
    };
    let elem = &ctx.elem;
    let shape = &ctx.layer.shape;
    let (input_array, output_array) = (&ctx.input_array, &ctx.output_array);
    let slices_context = format!("{}::forward_slices", header.name);
    let slices_doc = format!(
        " Runs both stages from `input`, {} elements in HWC order (`[{}]`), into `output`, {} elements (`[{}]`): the caller's buffers (a `static` array, a DMA buffer, ...), read and written in place, with no tensor and no copy. Allocates nothing, with or without the `alloc` feature.",
        shape.input_len,
        shape_text(shape.input).replace(" x ", ", "),
        shape.output_len,
        shape_text(shape.output).replace(" x ", ", "),
    );
    quote! {
        /// Runs both stages.
        #[must_use]
        pub fn forward(&self, input: &#input_ty) -> #output_ty {
            let mut output = <#output_ty>::zeros();
            self.forward_into(input, &mut output);
            output
        }

        /// Runs both stages into `output`, allocating nothing: the depthwise output goes
        /// straight into the pointwise stage through a small buffer on the stack.
        pub fn forward_into(&self, input: &#input_ty, output: &mut #output_ty) {
            self.forward_into_with(#krate::Isa::detect(), input, output);
        }

        /// [`Self::forward_into`] with a chosen instruction set.
        ///
        /// # Panics
        /// If this CPU does not support `isa`.
        pub fn forward_into_with(&self, isa: #krate::Isa, input: &#input_ty, output: &mut #output_ty) {
            self.forward_arrays(isa, input.as_array(), output.as_array_mut());
        }

        #[doc = #slices_doc]
        ///
        /// Buffers that start on a 64-byte cache line, as a tensor's data does, run fastest:
        /// the vector loads and stores of the wide layers then never split two lines (a
        /// `Vec<f32>` aligned to 16 bytes made MobileNet v1's layers 2-7 % slower on AVX-512).
        ///
        /// # Errors
        /// `Error::Length` naming `input` or `output` if a buffer has another length; nothing
        /// is written then.
        pub fn forward_slices(
            &self,
            input: &[#elem],
            output: &mut [#elem],
        ) -> ::core::result::Result<(), #krate::Error> {
            // The sizes are inferred from the aliases.
            let (x, out): (&#input_array, &mut #output_array) =
                __sep::hwc_pair(#slices_context, input, output)?;
            self.forward_arrays(#krate::Isa::detect(), x, out);
            ::core::result::Result::Ok(())
        }

        /// Both stages with `isa`, the one path of `forward_into_with` and `forward_slices`.
        fn forward_arrays(&self, isa: #krate::Isa, x: &#input_array, out: &mut #output_array) {
            #forward_isa
            #forward
        }

        /// [`Self::forward_into`] on every core, when `separable` is built with its `rayon`
        /// feature (on the calling thread otherwise). Each strip of output rows is computed the
        /// same way whichever thread runs it, so the result is bit-identical to `forward_into`.
        pub fn forward_into_parallel(&self, input: &#input_ty, output: &mut #output_ty) {
            #parallel
        }

        /// Runs the depthwise stage (with its bias and activation).
        #[must_use]
        pub fn depthwise(&self, input: &#input_ty) -> #depthwise_ty {
            let mut output = <#depthwise_ty>::zeros();
            self.depthwise_into(input, &mut output);
            output
        }

        /// Runs the depthwise stage into `output`, allocating nothing.
        pub fn depthwise_into(&self, input: &#input_ty, output: &mut #depthwise_ty) {
            self.depthwise_into_with(#krate::Isa::detect(), input, output);
        }

        /// [`Self::depthwise_into`] with a chosen instruction set.
        ///
        /// # Panics
        /// If this CPU does not support `isa`.
        pub fn depthwise_into_with(&self, isa: #krate::Isa, input: &#input_ty, output: &mut #depthwise_ty) {
            #depthwise_isa
            #depthwise
        }

        /// Runs the pointwise stage (with its bias and activation) on a depthwise output.
        #[must_use]
        pub fn pointwise(&self, depthwise: &#depthwise_ty) -> #output_ty {
            let mut output = <#output_ty>::zeros();
            self.pointwise_into(depthwise, &mut output);
            output
        }

        /// Runs the pointwise stage into `output`, allocating nothing.
        pub fn pointwise_into(&self, depthwise: &#depthwise_ty, output: &mut #output_ty) {
            self.pointwise_into_with(#krate::Isa::detect(), depthwise, output);
        }

        /// [`Self::pointwise_into`] with a chosen instruction set.
        ///
        /// # Panics
        /// If this CPU does not support `isa`.
        pub fn pointwise_into_with(&self, isa: #krate::Isa, depthwise: &#depthwise_ty, output: &mut #output_ty) {
            #pointwise_isa
            #pointwise
        }
    }
}

/// The private kernels behind [`stages`].
fn kernels(ctx: &Ctx<'_>) -> TokenStream {
    match &ctx.plan.depthwise {
        Depthwise::Unrolled => pixel_kernels(ctx),
        Depthwise::Planar(planar) => planar_kernels(ctx, *planar),
        Depthwise::InteriorBorder { cols, strips } => strip_kernels(ctx, cols, *strips),
    }
}

/// Unrolled tiny layers: every output pixel's depthwise window unrolled with literal indices, and each
/// pixel handed straight to the pointwise stage.
fn pixel_kernels(ctx: &Ctx<'_>) -> TokenStream {
    let layer = ctx.layer;
    let shape = &layer.shape;
    let cm = shape.depthwise[2];
    let zero = &ctx.zero;
    let cm_lit = lit(cm);
    let input = &ctx.input_array;
    let depthwise = &ctx.depthwise_array;
    let output = &ctx.output_array;
    let pixel_in = &ctx.depthwise_pixel;
    let dw_bias = if layer.spec.bias.depthwise() {
        quote!(*self.depthwise_bias)
    } else {
        quote!([#zero; #cm_lit])
    };
    let walk = unrolled(ctx);
    let pointwise = pointwise_pixel_kernels(ctx);
    quote! {
        #[inline(always)]
        fn forward_pixels(&self, x: &#input, out: &mut #output) {
            self.for_each_depthwise_pixel(x, |oh, ow, pixel| {
                out[oh][ow] = self.pointwise_at(pixel);
            });
        }

        #[inline(always)]
        fn depthwise_pixels(&self, x: &#input, out: &mut #depthwise) {
            self.for_each_depthwise_pixel(x, |oh, ow, pixel| {
                out[oh][ow] = *pixel;
            });
        }

        #pointwise

        /// Computes every depthwise output pixel and hands it to `pixel(oh, ow, channels)`.
        #[inline(always)]
        fn for_each_depthwise_pixel(
            &self,
            x: &#input,
            mut pixel: impl FnMut(usize, usize, &#pixel_in),
        ) {
            let w = &*self.depthwise_weight;
            let bias = #dw_bias;
            #walk
        }
    }
}

/// The pointwise stage of tiny layers, pixel by pixel.
fn pointwise_pixel_kernels(ctx: &Ctx<'_>) -> TokenStream {
    let layer = ctx.layer;
    let n = layer.spec.output_channels;
    let zero = &ctx.zero;
    let n_lit = lit(n);
    let depthwise = &ctx.depthwise_array;
    let output = &ctx.output_array;
    let pixel_in = &ctx.depthwise_pixel;
    let pixel_out = &ctx.output_pixel;
    let pw_bias = if layer.spec.bias.pointwise() {
        quote!(*self.pointwise_bias)
    } else {
        quote!([#zero; #n_lit])
    };
    let pw_activation = ctx.activation(layer.pointwise_activation);
    quote! {
        #[inline(always)]
        fn pointwise_pixels(&self, y: &#depthwise, out: &mut #output) {
            for (out, pixel) in out.iter_mut().flatten().zip(y.iter().flatten()) {
                *out = self.pointwise_at(pixel);
            }
        }

        #[inline(always)]
        fn pointwise_at(&self, pixel: &#pixel_in) -> #pixel_out {
            let mut acc = #pw_bias;
            __sep::pointwise_pixel(&mut acc, pixel, &self.pointwise_weight[..]);
            #pw_activation
            acc
        }
    }
}

/// Tiny layers with few channels: both stages in channel planes, vectorised across positions
/// (`separable_runtime::planar`), with the geometry as one constant.
fn planar_kernels(ctx: &Ctx<'_>, planar: Planar) -> TokenStream {
    let krate = ctx.krate;
    let layer = ctx.layer;
    let spec = &layer.spec;
    let shape = &layer.shape;
    let Plan { rows, cols, .. } = &ctx.plan;
    let elem = &ctx.elem;
    let (input, depthwise, output) = (&ctx.input_array, &ctx.depthwise_array, &ctx.output_array);
    let [h, w, c] = shape.input.map(lit);
    let [oh, ow, n] = shape.output.map(lit);
    let (cm, kh, kw) = (lit(shape.depthwise[2]), lit(rows.kernel), lit(cols.kernel));
    let (p, l) = (lit(planar.plane), lit(planar.run));
    let row_stride = lit(planar.row_stride);
    let (pt, pl) = (lit(rows.pad_before), lit(cols.pad_before));
    let (sh, sw) = (lit(rows.stride), lit(cols.stride));
    let (dh, dw) = (lit(rows.dilation), lit(cols.dilation));
    let bias = |present: bool, field: TokenStream| {
        if present {
            quote!(::core::option::Option::Some(&*self.#field))
        } else {
            quote!(::core::option::Option::None)
        }
    };
    let dw_bias = bias(spec.bias.depthwise(), quote!(depthwise_bias));
    let pw_bias = bias(spec.bias.pointwise(), quote!(pointwise_bias));
    let (dw_act, pw_act) = (
        activation_tokens(layer.depthwise_activation),
        activation_tokens(layer.pointwise_activation),
    );
    let generics = quote!(#elem, #h, #w, #c, #cm, #n, #oh, #ow, #kh, #kw, #p, #l);
    let pointwise = pointwise_pixel_kernels(ctx);
    quote! {
        /// Where the input and outputs sit in the channel planes.
        const PLANES: __sep::Planes = __sep::Planes {
            row_stride: #row_stride,
            pad: [#pt, #pl],
            stride: [#sh, #sw],
            dilation: [#dh, #dw],
        };

        #[inline(always)]
        fn planar_weights(&self) -> __sep::PlanarWeights<'_, #elem, #cm, #n, #kh, #kw> {
            __sep::PlanarWeights {
                depthwise: &self.depthwise_weight,
                depthwise_bias: #dw_bias,
                pointwise: &self.pointwise_weight[..],
                pointwise_bias: #pw_bias,
                activations: [#krate::Activation::#dw_act, #krate::Activation::#pw_act],
            }
        }

        #[inline(always)]
        fn forward_planes(&self, isa: __sep::Isa, x: &#input, out: &mut #output) {
            __sep::planar_forward::<#generics>(isa, &Self::PLANES, &self.planar_weights(), x, out);
        }

        #[inline(always)]
        fn depthwise_planes(&self, isa: __sep::Isa, x: &#input, out: &mut #depthwise) {
            __sep::planar_depthwise::<#generics>(isa, &Self::PLANES, &self.planar_weights(), x, out);
        }

        #pointwise
    }
}

/// Larger layers: the runtime's strip loops (`separable_runtime::strips`) with the layer's
/// plan as a constant and a scratch buffer on the stack. Each strip's depthwise output, a block
/// of channels at a time, goes to the buffer and from there to the pointwise microkernel.
fn strip_kernels(ctx: &Ctx<'_>, interior_cols: &Range<usize>, strips: Strips) -> TokenStream {
    let layer = ctx.layer;
    let shape = &layer.shape;
    let (krate, elem) = (ctx.krate, &ctx.elem);
    let plan = {
        let spec = &layer.spec;
        let (input, m, kc) = (
            spec.input.map(lit),
            lit(spec.multiplier),
            lit(strips.channels),
        );
        let (kernel, stride, dilation) = (
            spec.kernel.map(lit),
            spec.stride.map(lit),
            spec.dilation.map(lit),
        );
        let padding = [lit(ctx.plan.rows.pad_before), lit(ctx.plan.cols.pad_before)];
        let output = shape.output.map(lit);
        let rows = lit(strips.rows);
        let [c0, c1] = [interior_cols.start, interior_cols.end].map(lit);
        let [dw_act, pw_act] =
            [layer.depthwise_activation, layer.pointwise_activation].map(activation_tokens);
        quote! {
            __sep::StripPlan {
                geometry: __sep::DepthwiseGeometry {
                    input: [#(#input),*],
                    multiplier: #m,
                    block: #kc,
                    kernel: [#(#kernel),*],
                    stride: [#(#stride),*],
                    dilation: [#(#dilation),*],
                    padding: [#(#padding),*],
                },
                output: [#(#output),*],
                rows: #rows,
                interior_cols: [#c0, #c1],
                activations: [#krate::Activation::#dw_act, #krate::Activation::#pw_act],
            }
        }
    };
    let bias = |present: bool, field: TokenStream| {
        if present {
            quote!(::core::option::Option::Some(__sep::Flat::flat(&*self.#field)))
        } else {
            quote!(::core::option::Option::None)
        }
    };
    let dw_bias = bias(layer.spec.bias.depthwise(), quote!(depthwise_bias));
    let pw_bias = bias(layer.spec.bias.pointwise(), quote!(pointwise_bias));
    quote! {
        /// Output rows in strips and channels in blocks, for the runtime's strip loops.
        const __STRIPS: __sep::StripPlan = #plan;

        /// The weights as the strip loops read them.
        fn strip_weights(&self) -> __sep::StripWeights<'_, #elem> {
            __sep::StripWeights {
                depthwise: __sep::Flat::flat(&*self.depthwise_weight),
                depthwise_bias: #dw_bias,
                pointwise: __sep::Flat::flat(&*self.pointwise_weight),
                pointwise_bias: #pw_bias,
            }
        }
    }
}

/// One tap over all channels of the pixel: `acc += x[row][col] * w[kh][kw]`, `acc` being a
/// `&mut` to the accumulator.
fn tap(
    ctx: &Ctx<'_>,
    acc: &TokenStream,
    (row, col): (&TokenStream, &TokenStream),
    (kh, kw): (&TokenStream, &TokenStream),
) -> TokenStream {
    let spec = &ctx.layer.spec;
    let (x, w) = (quote!(&x[#row][#col]), quote!(&w[#kh][#kw]));
    if spec.multiplier == 1 {
        quote!(__sep::depthwise_tap(#acc, #x, #w);)
    } else {
        let elem = &ctx.elem;
        let m = spec.multiplier;
        let co = ctx.layer.shape.depthwise[2];
        let (ci, m, co) = (lit(co / m), lit(m), lit(co));
        quote!(__sep::depthwise_tap_multiplier::<#elem, #ci, #m, #co>(#acc, #x, #w);)
    }
}

/// The `__sep::Kernel` implementations `dispatch` runs: the planar layout's stages.
fn kernel_structs(ctx: &Ctx<'_>, name: &syn::Ident) -> TokenStream {
    match &ctx.plan.depthwise {
        Depthwise::Planar(_) => planar_kernel_structs(ctx, name),
        // Strip layers call the runtime's kernels, which pick the instruction set themselves.
        Depthwise::Unrolled | Depthwise::InteriorBorder { .. } => TokenStream::new(),
    }
}

/// The `__sep::Kernel` implementations of a planar layer: both stages, and the depthwise stage.
fn planar_kernel_structs(ctx: &Ctx<'_>, name: &syn::Ident) -> TokenStream {
    let input = &ctx.input_array;
    let depthwise = &ctx.depthwise_array;
    let output = &ctx.output_array;
    quote! {
        struct __SepForward<'a> {
            layer: &'a #name,
            x: &'a #input,
            out: &'a mut #output,
        }

        impl __sep::Kernel for __SepForward<'_> {
            type Output = ();
            #[inline(always)]
            fn run(self, isa: __sep::Isa) {
                self.layer.forward_planes(isa, self.x, self.out);
            }
        }

        struct __SepDepthwiseStage<'a> {
            layer: &'a #name,
            x: &'a #input,
            out: &'a mut #depthwise,
        }

        impl __sep::Kernel for __SepDepthwiseStage<'_> {
            type Output = ();
            #[inline(always)]
            fn run(self, isa: __sep::Isa) {
                self.layer.depthwise_planes(isa, self.x, self.out);
            }
        }
    }
}

/// Every output position its own block with literal indices and only its in-bounds taps.
fn unrolled(ctx: &Ctx<'_>) -> TokenStream {
    let Plan { rows, cols, .. } = &ctx.plan;
    let activation = ctx.activation(ctx.layer.depthwise_activation);
    let mut blocks = TokenStream::new();
    for oh in 0..rows.output {
        for ow in 0..cols.output {
            let mut taps = TokenStream::new();
            for kh in rows.taps(oh) {
                for kw in cols.taps(ow) {
                    // In bounds, hence non-negative: `taps` admits only such taps.
                    let row = lit(
                        (oh * rows.stride + kh * rows.dilation).saturating_sub(rows.pad_before)
                    );
                    let col = lit(
                        (ow * cols.stride + kw * cols.dilation).saturating_sub(cols.pad_before)
                    );
                    let (kh, kw) = (lit(kh), lit(kw));
                    taps.extend(tap(
                        ctx,
                        &quote!(&mut acc),
                        (&quote!(#row), &quote!(#col)),
                        (&quote!(#kh), &quote!(#kw)),
                    ));
                }
            }
            let (oh, ow) = (lit(oh), lit(ow));
            blocks.extend(quote! {
                {
                    let mut acc = bias;
                    #taps
                    #activation
                    pixel(#oh, #ow, &acc);
                }
            });
        }
    }
    blocks
}

fn trait_impl(ctx: &Ctx<'_>, header: &Header) -> TokenStream {
    let Ctx {
        krate,
        elem,
        input_ty,
        depthwise_ty,
        output_ty,
        ..
    } = ctx;
    let name = &header.name;
    quote! {
        impl #krate::Layer for #name {
            type Elem = #elem;
            type Input = #input_ty;
            type Depthwise = #depthwise_ty;
            type Output = #output_ty;

            const NAME: &'static str = #name::NAME;
            const SPEC: #krate::LayerSpec = #name::SPEC;
            const SHAPE: #krate::LayerShape = #name::SHAPE;
            const DEPTHWISE_ACTIVATION: #krate::Activation = #name::DEPTHWISE_ACTIVATION;
            const POINTWISE_ACTIVATION: #krate::Activation = #name::POINTWISE_ACTIVATION;

            fn zeroed() -> Self {
                #name::zeroed()
            }

            fn from_pytorch(
                dw_weight: &[#elem],
                dw_bias: ::core::option::Option<&[#elem]>,
                pw_weight: &[#elem],
                pw_bias: ::core::option::Option<&[#elem]>,
            ) -> ::core::result::Result<Self, #krate::Error> {
                #name::from_pytorch(dw_weight, dw_bias, pw_weight, pw_bias)
            }

            __sep::alloc_only! {
                fn to_pytorch(&self) -> #krate::weights::PytorchWeights<#elem> {
                    #name::to_pytorch(self)
                }
            }

            fn forward_slices(
                &self,
                input: &[#elem],
                output: &mut [#elem],
            ) -> ::core::result::Result<(), #krate::Error> {
                #name::forward_slices(self, input, output)
            }

            fn forward_into_with(&self, isa: #krate::Isa, input: &#input_ty, output: &mut #output_ty) {
                #name::forward_into_with(self, isa, input, output)
            }

            fn depthwise_into_with(&self, isa: #krate::Isa, input: &#input_ty, output: &mut #depthwise_ty) {
                #name::depthwise_into_with(self, isa, input, output)
            }

            fn pointwise_into_with(&self, isa: #krate::Isa, depthwise: &#depthwise_ty, output: &mut #output_ty) {
                #name::pointwise_into_with(self, isa, depthwise, output)
            }
        }
    }
}

//! `weights:`: reads the safetensors file at expansion and checks every tensor the layer needs
//! against its declared shapes and `bias:`, so the generated code can bake the bytes in with
//! `include_bytes!` and decode them in constant evaluation.
//!
//! Tensor names and layouts are the run-time loader's (`Layer::from_safetensors`): PyTorch's
//! `{prefix}depthwise.weight` `[C·M, 1, KH, KW]`, `{prefix}depthwise.bias` `[C·M]`,
//! `{prefix}pointwise.weight` `[N, C·M, 1, 1]` and `{prefix}pointwise.bias` `[N]`.

use std::path::{Path, PathBuf};

use proc_macro2::Span;
use safetensors::{Dtype, SafeTensors};
use syn::Error;

use crate::model::{Layer, WeightsFile};

/// Where the layer's tensors are in the file, as the macro read it.
pub(crate) struct Embedded {
    /// The file's absolute path, for `include_bytes!`.
    pub(crate) path: String,
    /// The file's length and its header's length: the generated code checks that the bytes it
    /// includes are still those.
    pub(crate) file_len: usize,
    pub(crate) header_len: u64,
    pub(crate) depthwise_weight: Stored,
    pub(crate) depthwise_bias: Option<Stored>,
    pub(crate) pointwise_weight: Stored,
    pub(crate) pointwise_bias: Option<Stored>,
}

/// One tensor's data: its first byte in the file and its element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) offset: usize,
    pub(crate) dtype: FileDtype,
}

/// The element types the runtime converts from (`separable::embed::FileDtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileDtype {
    F32,
    F64,
    F16,
    BF16,
}

/// Reads and checks the file of a layer declared with `weights:`.
pub(crate) fn read(layer: &Layer) -> syn::Result<Option<Embedded>> {
    let Some(file) = &layer.weights else {
        return Ok(None);
    };
    let path = resolve(&file.path);
    let shown = path.display();
    let bytes = std::fs::read(&path).map_err(|error| {
        Error::new(
            file.path_span,
            format!("cannot read `{}` (at `{shown}`): {error}", file.path),
        )
    })?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|error| {
        Error::new(
            file.path_span,
            format!("`{}` is not a valid safetensors file: {error}", file.path),
        )
    })?;
    let shape = &layer.shape;
    let [kh, kw] = layer.spec.kernel;
    let cm = shape.depthwise[2];
    let n = layer.spec.output_channels;
    let bias = layer.spec.bias;
    let check = Check {
        file,
        bytes: &bytes,
        tensors: &tensors,
    };
    // A wrong prefix is one mistake: say which prefixes the file has, once.
    let has = |name: &str| tensors.tensor(&format!("{}{name}", file.prefix)).is_ok();
    if !has("depthwise.weight") && !has("pointwise.weight") {
        let mut prefixes: Vec<String> = tensors
            .names()
            .into_iter()
            .filter_map(|name| name.strip_suffix("depthwise.weight"))
            .map(|prefix| format!("`{prefix}`"))
            .collect();
        prefixes.sort();
        if prefixes.len() > 8 {
            let more = prefixes.len() - 8;
            prefixes.truncate(8);
            prefixes.push(format!("and {more} more"));
        }
        let found = if prefixes.is_empty() {
            "it has no `depthwise.weight` under any prefix".to_owned()
        } else {
            format!("its prefixes are {}", prefixes.join(", "))
        };
        return Err(Error::new(
            check.name_span(),
            format!(
                "`{}depthwise.weight` and `{}pointwise.weight` are not in `{}`; {found}",
                file.prefix, file.prefix, file.path
            ),
        ));
    }
    let mut errors: Option<Error> = None;
    let mut keep = |result: syn::Result<Option<Stored>>| match result {
        Ok(stored) => stored,
        Err(error) => {
            match &mut errors {
                Some(first) => first.combine(error),
                None => errors = Some(error),
            }
            None
        }
    };
    let depthwise_weight = keep(check.tensor("depthwise.weight", &[cm, 1, kh, kw], true));
    let depthwise_bias = keep(check.tensor("depthwise.bias", &[cm], bias.depthwise()));
    let pointwise_weight = keep(check.tensor("pointwise.weight", &[n, cm, 1, 1], true));
    let pointwise_bias = keep(check.tensor("pointwise.bias", &[n], bias.pointwise()));
    if let Some(errors) = errors {
        return Err(errors);
    }
    let (Some(depthwise_weight), Some(pointwise_weight)) = (depthwise_weight, pointwise_weight)
    else {
        return Err(Error::new(
            file.path_span,
            "the weight tensors could not be read",
        ));
    };
    let header_len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    Ok(Some(Embedded {
        path: path.to_string_lossy().into_owned(),
        file_len: bytes.len(),
        header_len,
        depthwise_weight,
        depthwise_bias,
        pointwise_weight,
        pointwise_bias,
    }))
}

/// The path relative to the manifest directory of the crate being compiled, as
/// `include_bytes!` paths are relative to their file; absolute paths stay as written.
fn resolve(path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        return path.to_owned();
    }
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) => Path::new(&dir).join(path),
        None => path.to_owned(),
    }
}

struct Check<'a> {
    file: &'a WeightsFile,
    bytes: &'a [u8],
    tensors: &'a SafeTensors<'a>,
}

impl Check<'_> {
    /// The span errors about a tensor name point at: the prefix if written, else the path.
    fn name_span(&self) -> Span {
        self.file.prefix_span.unwrap_or(self.file.path_span)
    }

    /// Checks one tensor: present exactly when `wanted`, with shape `dims` and a float dtype.
    fn tensor(&self, name: &str, dims: &[usize], wanted: bool) -> syn::Result<Option<Stored>> {
        let key = format!("{}{name}", self.file.prefix);
        let path = &self.file.path;
        let view = match (self.tensors.tensor(&key), wanted) {
            (Ok(view), true) => view,
            (Err(_), false) => return Ok(None),
            (Ok(_), false) => {
                return Err(Error::new(
                    self.name_span(),
                    format!(
                        "`{key}` is in `{path}`, but the layer's `bias:` declares no {} bias; declare the bias (e.g. `bias: both`) or use a prefix without it",
                        name.split('.').next().unwrap_or(name)
                    ),
                ));
            }
            (Err(_), true) => {
                let hint = if name.ends_with("bias") {
                    "; the layer's `bias:` declares it"
                } else {
                    ""
                };
                return Err(Error::new(
                    self.name_span(),
                    format!("`{key}` is not in `{path}`{hint}"),
                ));
            }
        };
        let dtype = match view.dtype() {
            Dtype::F32 => FileDtype::F32,
            Dtype::F64 => FileDtype::F64,
            Dtype::F16 => FileDtype::F16,
            Dtype::BF16 => FileDtype::BF16,
            other => {
                return Err(Error::new(
                    self.file.path_span,
                    format!(
                        "`{key}` in `{path}` has dtype {other:?}, expected F32, F64, F16 or BF16"
                    ),
                ));
            }
        };
        if view.shape() != dims {
            return Err(Error::new(
                self.file.path_span,
                format!(
                    "`{key}` in `{path}` has shape {:?}, expected {dims:?}",
                    view.shape()
                ),
            ));
        }
        // `deserialize` checked that the data lies inside the file.
        let offset = view.data().as_ptr().addr() - self.bytes.as_ptr().addr();
        Ok(Some(Stored { offset, dtype }))
    }
}

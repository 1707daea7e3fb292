//! Helpers shared by the numerics tests (`framework_vectors` and `grid`).
//!
//! Each test binary uses a different subset, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

use separable::{Element, Layer, LayerSpec, Tensor};

/// A generated layer's tensors as flat HWC buffers, so generic code can build and read them
/// through the associated types of [`Layer`].
pub(crate) trait Buf<T: Element>: Sized {
    /// `[H, W, C]`.
    const DIMS: [usize; 3];
    /// A tensor from HWC data (`Tensor::from_hwc`); panics on a wrong length.
    fn from_hwc_slice(data: &[T]) -> Self;
    /// A tensor with every element `value` (`Tensor::filled`).
    fn filled_with(value: T) -> Self;
    /// The elements in HWC order.
    fn hwc(&self) -> &[T];
}

impl<const H: usize, const W: usize, const C: usize, T: Element> Buf<T> for Tensor<H, W, C, T> {
    const DIMS: [usize; 3] = [H, W, C];

    fn from_hwc_slice(data: &[T]) -> Self {
        match Tensor::from_hwc(data) {
            Ok(t) => t,
            Err(e) => panic!("building a {H} x {W} x {C} tensor: {e}"),
        }
    }

    fn filled_with(value: T) -> Self {
        Tensor::filled(value)
    }

    fn hwc(&self) -> &[T] {
        self.as_slice()
    }
}

/// A layer whose three tensor types are [`Tensor`]s, as every generated layer's are.
pub(crate) trait TestLayer:
    Layer<
        Input: Buf<<Self as Layer>::Elem>,
        Depthwise: Buf<<Self as Layer>::Elem>,
        Output: Buf<<Self as Layer>::Elem>,
    >
{
}

impl<L> TestLayer for L
where
    L: Layer,
    L::Input: Buf<L::Elem>,
    L::Depthwise: Buf<L::Elem>,
    L::Output: Buf<L::Elem>,
{
}

/// The relative tolerance of a comparison: `|got - want| <= tolerance * max(1, |want|)`.
///
/// For `f32` the values under test and the expected ones may sum the same products in a
/// different order (framework kernels block and vectorise their loops); `1e-5` is about 100
/// units in the last place at magnitude 1. For `f64` the same argument gives `1e-12`.
#[must_use]
pub(crate) fn tolerance<T: Element>() -> f64 {
    match T::NAME {
        "f32" => 1e-5,
        "f64" => 1e-12,
        other => panic!("no tolerance for element type {other}"),
    }
}

/// The largest errors seen by one comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Errors {
    /// The largest `|got - want|`.
    pub(crate) abs: f64,
    /// The largest `|got - want| / max(1, |want|)`, the quantity the tolerance bounds.
    pub(crate) scaled: f64,
}

impl Errors {
    /// The larger of two sets of errors, field by field.
    #[must_use]
    pub(crate) fn max(self, other: Errors) -> Errors {
        Errors {
            abs: self.abs.max(other.abs),
            scaled: self.scaled.max(other.scaled),
        }
    }
}

/// `(h, w, c)` of flat HWC index `i` in a tensor of `dims`.
#[must_use]
pub(crate) fn position(i: usize, [_, w, c]: [usize; 3]) -> (usize, usize, usize) {
    (i / (w * c), i / c % w, i % c)
}

/// Asserts that `got` (the generated layer's result) matches `want` element by element within
/// [`tolerance`]; a NaN on either side fails. The message names the case, what was compared and
/// the first bad element (flat index and `(h, w, c)`). Returns the largest errors.
///
/// # Panics
/// On a length mismatch or the first element out of tolerance.
#[track_caller]
pub(crate) fn assert_close<T: Element>(
    case: &str,
    what: &str,
    dims: [usize; 3],
    got: &[T],
    want: &[f64],
) -> Errors {
    let tol = tolerance::<T>();
    assert_eq!(
        got.len(),
        want.len(),
        "{case}: {what}: {} values, expected {} (shape {dims:?})",
        got.len(),
        want.len(),
    );
    assert_eq!(
        dims.iter().product::<usize>(),
        want.len(),
        "{case}: {what}: expected values do not fill the shape {dims:?}",
    );
    let mut errors = Errors::default();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        let abs = (g - w).abs();
        let scaled = abs / w.abs().max(1.0);
        // A NaN on either side makes `scaled` NaN.
        if scaled.is_nan() || scaled > tol {
            let (h, x, c) = position(i, dims);
            panic!(
                "{case}: {what}: first bad element at index {i} = (h {h}, w {x}, c {c}) of {dims:?}: \
                 got {g:e}, expected {w:e}, |diff| {abs:e} > {tol:e} * max(1, |expected|)"
            );
        }
        errors.abs = errors.abs.max(abs);
        errors.scaled = errors.scaled.max(scaled);
    }
    errors
}

/// Converts `f64` values to the element type.
#[must_use]
pub(crate) fn elems<T: Element>(values: &[f64]) -> Vec<T> {
    values.iter().map(|&v| T::from_f64(v)).collect()
}

/// Widens values to `f64`.
#[must_use]
pub(crate) fn widen<T: Element>(values: &[T]) -> Vec<f64> {
    values.iter().map(|&v| v.to_f64()).collect()
}

/// Largest `C·M` of a tiny layer computed in channel planes.
const PLANAR_CHANNELS: usize = 8;
/// Largest plane (positions) of a tiny layer computed in channel planes.
const PLANAR_POSITIONS: usize = 256;
/// Runs of a planar layer are a whole number of this many positions.
const PLANAR_LANES: usize = 8;
/// Largest number of output positions of an unrolled layer.
const UNROLL_POSITIONS: usize = 64;
/// Largest number of in-bounds taps (rows times columns) of an unrolled layer.
const UNROLL_TAPS: usize = 256;
/// Stack bytes for one strip of depthwise output.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Largest depthwise channel block.
const MAX_CHANNEL_BLOCK: usize = 256;
/// Smallest channel block worth splitting `C·M` into.
const MIN_CHANNEL_BLOCK: usize = 64;
/// Rows a strip of a block wider than the first choice must hold.
const WIDE_BLOCK_ROWS: usize = 2;

/// How `separable_conv!` lays out a layer, recomputed here from the rule documented in
/// `separable-macros/src/plan.rs` (not from the macro's code).
///
/// A layer with at most 64 output positions and at most 256 in-bounds taps (rows times columns)
/// is tiny. A tiny layer with `C·M <= 8` whose channel plane (see [`plane_len`]) has at most 256
/// positions is computed in channel planes, vectorised across positions; any other tiny layer is
/// unrolled position by position. Any other layer runs in strips: the depthwise output of
/// `rows` output rows and `channels` depthwise channels at a time goes to a scratch buffer that
/// the pointwise microkernel reads. `channels` is all of `C·M` when that is at most 256, else the
/// largest `d·M` with `d` dividing `C` and `d·M <= 256` if that is at least 64, else all of `C·M`;
/// but the largest `d·M` of which `min(2, OH)` rows fit in 65536 bytes when that is wider.
/// `rows` is `65536 / (OW * channels * bytes per element)` clamped to `1..=OH`. Within a strip,
/// each row's interior run (columns whose whole window is inside the input) goes to the
/// depthwise row microkernel and the border positions to a rolled loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Channel planes, vectorised across positions.
    Planar,
    /// Every output position its own block.
    Unrolled,
    /// Strips of rows and blocks of channels, each row an interior run and a border.
    Strips {
        /// Output rows and columns whose window is entirely inside the input.
        interior: [usize; 2],
        /// All output rows and columns.
        output: [usize; 2],
        /// `C·M` divided by the channel block.
        channel_blocks: usize,
        /// `OH` divided by the rows per strip, rounded up.
        strips: usize,
    },
}

/// The depthwise channels per block of `spec` for `output` = `[OH, OW]` and elements of
/// `elem_bytes` bytes.
#[must_use]
pub(crate) fn channel_block(spec: &LayerSpec, output: [usize; 2], elem_bytes: usize) -> usize {
    let (c, m) = (spec.input[2], spec.multiplier);
    let all = c * m;
    let blocks = (1..=c).filter(|&d| c.is_multiple_of(d)).map(|d| d * m);
    let first = if all <= MAX_CHANNEL_BLOCK {
        all
    } else {
        let best = blocks
            .clone()
            .filter(|&kc| kc <= MAX_CHANNEL_BLOCK)
            .max()
            .unwrap_or(0);
        if best >= MIN_CHANNEL_BLOCK { best } else { all }
    };
    let rows = output[0].clamp(1, WIDE_BLOCK_ROWS);
    let widest = blocks
        .filter(|&kc| rows * output[1] * kc * elem_bytes <= SCRATCH_BYTES)
        .max()
        .unwrap_or(0);
    first.max(widest)
}

/// The output rows per strip for `output` = `[OH, OW]`, `channels` per block and elements of
/// `elem_bytes` bytes.
#[must_use]
pub(crate) fn strip_rows(output: [usize; 2], channels: usize, elem_bytes: usize) -> usize {
    let row_bytes = (output[1] * channels * elem_bytes).max(1);
    (SCRATCH_BYTES / row_bytes).clamp(1, output[0].max(1))
}

/// The bytes of one element of the type named `dtype` (`Element::NAME`).
#[must_use]
pub(crate) fn elem_bytes(dtype: &str) -> usize {
    match dtype {
        "f32" => 4,
        "f64" => 8,
        other => panic!("no element size for {other}"),
    }
}

/// The positions of one channel plane of a planar layer: rows of `left padding + W` positions,
/// or more if a window reaches further right; as many rows as the top padding and the input,
/// or more if the taps of the run need them. The run covers every output position `(oh, ow)`
/// at `oh·SH·stride + ow·SW`, rounded up to whole vectors of 8, and the plane every tap of it.
#[must_use]
pub(crate) fn plane_len(spec: &LayerSpec) -> usize {
    let shape = spec
        .shape()
        .unwrap_or_else(|e| panic!("{spec:?} has no shape: {e}"));
    let (rows, cols) = (shape.rows, shape.cols);
    let ([h, w, _], [kh, kw], [sh, sw], [dh, dw]) =
        (spec.input, spec.kernel, spec.stride, spec.dilation);
    let stride = (cols.pad_before + w).max((cols.output - 1) * sw + (kw - 1) * dw + 1);
    let run = ((rows.output - 1) * sh * stride + (cols.output - 1) * sw + 1)
        .next_multiple_of(PLANAR_LANES);
    (run + (kh - 1) * dh * stride + (kw - 1) * dw).max((rows.pad_before + h) * stride)
}

/// Per axis (rows, columns) of a layer: the in-bounds taps summed over the output positions, and
/// the number of output positions whose every tap is in bounds.
#[must_use]
pub(crate) fn taps_and_interior(spec: &LayerSpec) -> ([usize; 2], [usize; 2]) {
    let shape = spec
        .shape()
        .unwrap_or_else(|e| panic!("{spec:?} has no shape: {e}"));
    let axes = [shape.rows, shape.cols];
    let mut taps = [0; 2];
    let mut interior = [0; 2];
    for d in 0..2 {
        let (input, kernel) = (spec.input[d], spec.kernel[d]);
        for o in 0..axes[d].output {
            let inside = (0..kernel)
                .filter(|&k| {
                    let p = o * spec.stride[d] + k * spec.dilation[d];
                    p >= axes[d].pad_before && p - axes[d].pad_before < input
                })
                .count();
            taps[d] += inside;
            interior[d] += usize::from(inside == kernel);
        }
    }
    (taps, interior)
}

impl Layout {
    /// The layout of `L`.
    #[must_use]
    pub(crate) fn of<L: Layer>() -> Layout {
        Layout::from_spec(&L::SPEC, <L::Elem as Element>::NAME)
    }

    /// The layout of a layer declared as `spec` with elements of type `dtype` (`Element::NAME`).
    #[must_use]
    pub(crate) fn from_spec(spec: &LayerSpec, dtype: &str) -> Layout {
        let shape = spec
            .shape()
            .unwrap_or_else(|e| panic!("{spec:?} has no shape: {e}"));
        let (taps, interior) = taps_and_interior(spec);
        let output = [shape.rows.output, shape.cols.output];
        if output[0] * output[1] <= UNROLL_POSITIONS && taps[0] * taps[1] <= UNROLL_TAPS {
            let planar = spec.input[2] * spec.multiplier <= PLANAR_CHANNELS
                && plane_len(spec) <= PLANAR_POSITIONS;
            return if planar {
                Layout::Planar
            } else {
                Layout::Unrolled
            };
        }
        let all = spec.input[2] * spec.multiplier;
        let channels = channel_block(spec, output, elem_bytes(dtype));
        assert_eq!(all % channels, 0, "{channels} does not divide {all}");
        let rows = strip_rows(output, channels, elem_bytes(dtype));
        Layout::Strips {
            interior,
            output,
            channel_blocks: all / channels,
            strips: output[0].div_ceil(rows),
        }
    }

    /// Strips whose interior is every output position (no border code runs).
    #[must_use]
    pub(crate) fn interior_covers_all(self) -> bool {
        matches!(self, Layout::Strips { interior, output, .. } if interior == output)
    }

    /// Strips with an empty interior (only the border loop runs).
    #[must_use]
    pub(crate) fn no_interior(self) -> bool {
        matches!(self, Layout::Strips { interior, .. } if interior[0] == 0 || interior[1] == 0)
    }

    /// The number of channel blocks (1 when unrolled).
    #[must_use]
    pub(crate) fn channel_blocks(self) -> usize {
        match self {
            Layout::Planar | Layout::Unrolled => 1,
            Layout::Strips { channel_blocks, .. } => channel_blocks,
        }
    }

    /// The number of strips (1 when unrolled).
    #[must_use]
    pub(crate) fn strips(self) -> usize {
        match self {
            Layout::Planar | Layout::Unrolled => 1,
            Layout::Strips { strips, .. } => strips,
        }
    }

    /// A short description for test logs.
    #[must_use]
    pub(crate) fn describe(self) -> String {
        match self {
            Layout::Planar => "planar".to_owned(),
            Layout::Unrolled => "unrolled".to_owned(),
            Layout::Strips {
                interior,
                output,
                channel_blocks,
                strips,
            } => {
                let extent = if self.interior_covers_all() {
                    "interior covers all".to_owned()
                } else if self.no_interior() {
                    "no interior".to_owned()
                } else {
                    format!(
                        "interior {}x{} of {}x{}",
                        interior[0], interior[1], output[0], output[1]
                    )
                };
                format!("strips, {strips} strip(s) x {channel_blocks} channel block(s), {extent}")
            }
        }
    }
}

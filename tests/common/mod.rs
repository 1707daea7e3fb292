//! Helpers shared by the numerics tests (`framework_vectors` and `grid`).
//!
//! Each test binary uses a different subset, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

use separable::{Element, Layer, Tensor};

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

/// How `separable_conv!` lays out a layer's depthwise stage, recomputed here from the rule the
/// README documents (not from the macro's code): a layer with at most 64 output positions and at
/// most 256 in-bounds taps (rows times columns) is unrolled position by position; any other
/// layer loops over an interior, where the whole window is inside the input, and a border. The
/// interior's window is unrolled if it has at most 64 taps, else rolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Every output position its own block.
    Unrolled,
    /// Interior and border loops.
    Loops {
        /// Output rows and columns whose window is entirely inside the input.
        interior: [usize; 2],
        /// All output rows and columns.
        output: [usize; 2],
        /// Whether the interior window is written tap by tap (`KH * KW <= 64`).
        window_unrolled: bool,
    },
}

impl Layout {
    /// The layout of `L`.
    #[must_use]
    pub(crate) fn of<L: Layer>() -> Layout {
        let spec = L::SPEC;
        let shape = L::SHAPE;
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
        let output = [shape.rows.output, shape.cols.output];
        if output[0] * output[1] <= 64 && taps[0] * taps[1] <= 256 {
            Layout::Unrolled
        } else {
            Layout::Loops {
                interior,
                output,
                window_unrolled: spec.kernel[0] * spec.kernel[1] <= 64,
            }
        }
    }

    /// Loops whose interior is every output position (no border code runs).
    #[must_use]
    pub(crate) fn interior_covers_all(self) -> bool {
        matches!(self, Layout::Loops { interior, output, .. } if interior == output)
    }

    /// Loops with an empty interior (only the border loop runs).
    #[must_use]
    pub(crate) fn no_interior(self) -> bool {
        matches!(self, Layout::Loops { interior, .. } if interior[0] == 0 || interior[1] == 0)
    }

    /// A short description for test logs.
    #[must_use]
    pub(crate) fn describe(self) -> String {
        match self {
            Layout::Unrolled => "unrolled".to_owned(),
            Layout::Loops {
                interior,
                output,
                window_unrolled,
            } => {
                let window = if window_unrolled {
                    "unrolled window"
                } else {
                    "rolled window"
                };
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
                format!("loops, {window}, {extent}")
            }
        }
    }
}

//! `Tensor<H, W, C, T>`: one image, height x width x channels, channels last.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;
use core::fmt;
use core::ops::{Index, IndexMut};

use crate::storage::Owned;
use crate::{Dims, Element, Error};

/// One image of `H` rows, `W` columns and `C` channels, stored row-major with channels last
/// (HWC, the NHWC layout of TensorFlow and TFLite with batch 1).
///
/// The shape is part of the type, so a layer's `forward` only accepts the tensor it was
/// declared for, and chaining layers whose shapes do not meet is a compile error. The data is
/// aligned to a cache line. With the `alloc` feature it lives on the heap (a 112 x 112 x 64
/// tensor is 3 MiB), allocated without passing through the stack; without it, inline in the
/// tensor (on the stack or in a `static`, sized by the shape).
///
/// ```
/// use separable_runtime::Tensor;
///
/// let t = Tensor::<2, 2, 3>::from_fn(|h, w, c| (100 * h + 10 * w + c) as f32);
/// assert_eq!(t[(1, 0, 2)], 102.0);
/// assert_eq!(&t.as_slice()[..4], &[0.0, 1.0, 2.0, 10.0]);
/// assert_eq!(Tensor::<2, 2, 3>::SHAPE, [2, 2, 3]);
/// ```
#[derive(PartialEq)]
pub struct Tensor<const H: usize, const W: usize, const C: usize, T = f32> {
    data: Owned<[[[T; C]; W]; H]>,
}

impl<const H: usize, const W: usize, const C: usize, T: Element> Tensor<H, W, C, T> {
    /// `[H, W, C]`.
    pub const SHAPE: [usize; 3] = [H, W, C];
    /// `H * W * C`, the number of elements.
    pub const LEN: usize = H * W * C;

    /// A tensor of zeros.
    #[must_use]
    pub fn zeros() -> Self {
        Tensor {
            data: Owned::zeroed(),
        }
    }

    /// A tensor with every element set to `value`.
    #[must_use]
    pub fn filled(value: T) -> Self {
        let mut t = Self::zeros();
        t.as_mut_slice().fill(value);
        t
    }

    /// A tensor whose element `(h, w, c)` is `f(h, w, c)`.
    #[must_use]
    pub fn from_fn(mut f: impl FnMut(usize, usize, usize) -> T) -> Self {
        let mut t = Self::zeros();
        for (h, row) in t.data.iter_mut().enumerate() {
            for (w, pixel) in row.iter_mut().enumerate() {
                for (c, v) in pixel.iter_mut().enumerate() {
                    *v = f(h, w, c);
                }
            }
        }
        t
    }

    /// Copies `H * W * C` values in HWC order (row by row, channels innermost).
    ///
    /// # Errors
    /// [`Error::Length`] if `data` has another length.
    pub fn from_hwc(data: &[T]) -> Result<Self, Error> {
        Error::check_len("Tensor::from_hwc", "data", Dims::new([H, W, C]), data.len())?;
        let mut t = Self::zeros();
        t.as_mut_slice().copy_from_slice(data);
        Ok(t)
    }

    /// Copies `C * H * W` values in CHW order: PyTorch's NCHW layout of one image (`N = 1`).
    ///
    /// # Errors
    /// [`Error::Length`] if `data` has another length.
    pub fn from_chw(data: &[T]) -> Result<Self, Error> {
        Error::check_len("Tensor::from_chw", "data", Dims::new([C, H, W]), data.len())?;
        Ok(Self::from_fn(|h, w, c| data[(c * H + h) * W + w]))
    }

    /// The elements in HWC order.
    #[must_use]
    pub fn as_slice(&self) -> &[T] {
        self.data.as_flattened().as_flattened()
    }

    /// The elements in HWC order, mutably.
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.data.as_flattened_mut().as_flattened_mut()
    }

    /// The elements as nested arrays, indexed `[h][w][c]`.
    #[must_use]
    pub fn as_array(&self) -> &[[[T; C]; W]; H] {
        &self.data
    }

    /// The elements as nested arrays, mutably.
    #[must_use]
    pub fn as_array_mut(&mut self) -> &mut [[[T; C]; W]; H] {
        &mut self.data
    }

    /// A copy in CHW order (PyTorch's NCHW with `N = 1`).
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn to_chw(&self) -> Vec<T> {
        let mut out = Vec::with_capacity(Self::LEN);
        for c in 0..C {
            for row in self.data.iter() {
                out.extend(row.iter().map(|pixel| pixel[c]));
            }
        }
        out
    }

    /// A copy in HWC order.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn to_vec(&self) -> Vec<T> {
        self.as_slice().to_vec()
    }

    /// The element at `(h, w, c)`, or `None` outside the tensor.
    #[must_use]
    pub fn get(&self, h: usize, w: usize, c: usize) -> Option<&T> {
        self.data.get(h)?.get(w)?.get(c)
    }

    /// The largest absolute difference to `other`, as `f64`; NaN if either holds a NaN.
    #[must_use]
    pub fn max_abs_diff(&self, other: &Self) -> f64 {
        self.as_slice()
            .iter()
            .zip(other.as_slice())
            .map(|(&a, &b)| (a.to_f64() - b.to_f64()).abs())
            .fold(0.0, |m, d| {
                if d.is_nan() || m.is_nan() {
                    f64::NAN
                } else {
                    m.max(d)
                }
            })
    }
}

impl<const H: usize, const W: usize, const C: usize, T: Element> Clone for Tensor<H, W, C, T> {
    fn clone(&self) -> Self {
        Tensor {
            data: self.data.clone(),
        }
    }
}

impl<const H: usize, const W: usize, const C: usize, T: Element> Default for Tensor<H, W, C, T> {
    fn default() -> Self {
        Self::zeros()
    }
}

impl<const H: usize, const W: usize, const C: usize, T: Element> Index<(usize, usize, usize)>
    for Tensor<H, W, C, T>
{
    type Output = T;

    /// # Panics
    /// If `(h, w, c)` is outside the tensor, like slice indexing; [`Tensor::get`] does not panic.
    fn index(&self, (h, w, c): (usize, usize, usize)) -> &T {
        &self.data[h][w][c]
    }
}

impl<const H: usize, const W: usize, const C: usize, T: Element> IndexMut<(usize, usize, usize)>
    for Tensor<H, W, C, T>
{
    fn index_mut(&mut self, (h, w, c): (usize, usize, usize)) -> &mut T {
        &mut self.data[h][w][c]
    }
}

impl<const H: usize, const W: usize, const C: usize, T: Element> fmt::Debug for Tensor<H, W, C, T> {
    /// Prints the type with its shape, then the rows; `{:#?}` puts each pixel on a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{H}, {W}, {C}, {}> ", T::NAME)?;
        f.debug_list().entries(self.data.iter()).finish()
    }
}

impl<const H: usize, const W: usize, const C: usize, T: Element> AsRef<[T]> for Tensor<H, W, C, T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

/// The two buffers of a generated layer's `forward_slices`: [`hwc`] of `input` and
/// [`hwc_mut`] of `output`, both checked before either is used.
///
/// # Errors
/// [`Error::Length`] naming `context` and `input` or `output`, whichever has another length
/// (`input` if both do).
#[doc(hidden)]
#[allow(clippy::type_complexity)] // the two nested arrays
pub fn hwc_pair<
    'a,
    'b,
    T,
    const H: usize,
    const W: usize,
    const C: usize,
    const OH: usize,
    const OW: usize,
    const N: usize,
>(
    context: &'static str,
    input: &'a [T],
    output: &'b mut [T],
) -> Result<(&'a [[[T; C]; W]; H], &'b mut [[[T; N]; OW]; OH]), Error> {
    Ok((
        hwc(context, "input", input)?,
        hwc_mut(context, "output", output)?,
    ))
}

/// `data`, `H * W * C` elements in HWC order, as nested arrays indexed `[h][w][c]`: the same
/// memory, no copy. Generated layers' `forward_slices` run their kernels on it.
///
/// # Errors
/// [`Error::Length`] naming `context` and `tensor` if `data` has another length.
pub(crate) fn hwc<'a, T, const H: usize, const W: usize, const C: usize>(
    context: &'static str,
    tensor: &'static str,
    data: &'a [T],
) -> Result<&'a [[[T; C]; W]; H], Error> {
    let error = || length_error(context, tensor, [H, W, C], data.len());
    // Checked first: `as_chunks` drops a remainder, so a longer slice could still fill `H` rows.
    if Dims::new([H, W, C]).elements() != Some(data.len()) {
        return Err(error());
    }
    let (pixels, []) = data.as_chunks::<C>() else {
        return Err(error());
    };
    let (rows, []) = pixels.as_chunks::<W>() else {
        return Err(error());
    };
    rows.try_into().map_err(|_| error())
}

/// [`hwc`], mutably.
///
/// # Errors
/// [`Error::Length`] naming `context` and `tensor` if `data` has another length.
pub(crate) fn hwc_mut<'a, T, const H: usize, const W: usize, const C: usize>(
    context: &'static str,
    tensor: &'static str,
    data: &'a mut [T],
) -> Result<&'a mut [[[T; C]; W]; H], Error> {
    let len = data.len();
    let error = || length_error(context, tensor, [H, W, C], len);
    if Dims::new([H, W, C]).elements() != Some(len) {
        return Err(error());
    }
    let (pixels, []) = data.as_chunks_mut::<C>() else {
        return Err(error());
    };
    let (rows, []) = pixels.as_chunks_mut::<W>() else {
        return Err(error());
    };
    rows.try_into().map_err(|_| error())
}

fn length_error(
    context: &'static str,
    tensor: &'static str,
    shape: [usize; 3],
    actual: usize,
) -> Error {
    let shape = Dims::new(shape);
    Error::Length {
        context,
        tensor,
        shape,
        expected: shape.elements().unwrap_or(usize::MAX),
        actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    #[test]
    #[cfg(feature = "alloc")]
    fn hwc_and_chw_round_trip() {
        let hwc: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t = Tensor::<2, 3, 4>::from_hwc(&hwc).unwrap();
        assert_eq!(t.as_slice(), &hwc[..]);
        assert_eq!(t[(1, 2, 3)], 23.0);
        assert_eq!(t[(0, 1, 0)], 4.0);
        let chw = t.to_chw();
        // Element (c=3, h=1, w=2) in CHW is at (3 * 2 + 1) * 3 + 2 = 23.
        assert_eq!(chw[23], 23.0);
        assert_eq!(chw[1], 4.0); // c=0, h=0, w=1
        assert_eq!(Tensor::<2, 3, 4>::from_chw(&chw).unwrap(), t);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let e = Tensor::<2, 3, 4>::from_hwc(&[0.0; 23]).unwrap_err();
        assert_eq!(
            format!("{e}"),
            "Tensor::from_hwc: `data` has 23 elements, expected 24 (shape [2, 3, 4])"
        );
        let e = Tensor::<2, 3, 4, f64>::from_chw(&[0.0; 25]).unwrap_err();
        assert!(matches!(
            e,
            Error::Length {
                expected: 24,
                actual: 25,
                ..
            }
        ));
    }

    #[test]
    fn chw_is_transposed_to_hwc() {
        let chw: Vec<f64> = (0..24).map(f64::from).collect();
        let t = Tensor::<2, 3, 4, f64>::from_chw(&chw).unwrap();
        // Element (h=1, w=2, c=3) is CHW index (3 * 2 + 1) * 3 + 2 = 23.
        assert_eq!(t[(1, 2, 3)], 23.0);
        assert_eq!(t[(0, 1, 0)], 1.0);
        assert_eq!(t.as_array()[1][0][2], 15.0); // (2 * 2 + 1) * 3 + 0
    }

    #[test]
    fn hwc_views_slices_as_nested_arrays_without_copying() {
        let mut data: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let view = hwc::<_, 2, 3, 4>("f", "input", &data).unwrap();
        assert_eq!(view.as_ptr().cast::<f32>(), data.as_ptr());
        assert_eq!(view[1][2][3], 23.0);
        assert_eq!(view[0][1][0], 4.0);
        let view = hwc_mut::<_, 2, 3, 4>("f", "output", &mut data).unwrap();
        view[1][0][1] = -1.0;
        assert_eq!(data[(3) * 4 + 1], -1.0);
    }

    #[test]
    fn hwc_pair_checks_both_buffers() {
        let (input, mut output) = ([0.0f32; 12], [0.0f32; 12]);
        let (x, out) = hwc_pair::<_, 2, 3, 2, 3, 4, 1>("L", &input, &mut output).unwrap();
        assert_eq!((x.len(), out.len()), (2, 3));
        // Both are checked before either is used; the input is named first.
        let e = hwc_pair::<_, 2, 3, 2, 3, 4, 1>("L", &input[1..], &mut output[1..]);
        assert!(matches!(
            e,
            Err(Error::Length {
                tensor: "input",
                ..
            })
        ));
        let e = hwc_pair::<_, 2, 3, 2, 3, 4, 1>("L", &input, &mut output[1..]);
        assert!(matches!(
            e,
            Err(Error::Length {
                tensor: "output",
                actual: 11,
                ..
            })
        ));
    }

    #[test]
    fn hwc_rejects_every_other_length() {
        let mut data = [0.0f32; 13];
        // With one channel a slice one longer would still fill the rows: lengths are checked
        // before the remainders are dropped.
        for len in [0, 5, 7, 11, 13] {
            let e = hwc::<_, 2, 3, 2>("L::forward_slices", "input", &data[..len]).unwrap_err();
            assert_eq!(
                e,
                Error::Length {
                    context: "L::forward_slices",
                    tensor: "input",
                    shape: Dims::new([2, 3, 2]),
                    expected: 12,
                    actual: len,
                }
            );
            let e = hwc_mut::<_, 3, 4, 1>("L::forward_slices", "output", &mut data[..len]);
            assert!(matches!(
                e,
                Err(Error::Length { tensor: "output", expected: 12, actual, .. }) if actual == len
            ));
        }
        assert!(hwc::<_, 2, 3, 2>("f", "t", &data[..12]).is_ok());
        assert!(hwc_mut::<_, 3, 4, 1>("f", "t", &mut data[1..]).is_ok());
        assert!(hwc::<f32, 1, 1, 1>("f", "t", &[]).is_err());
    }

    #[test]
    fn get_is_checked() {
        let t = Tensor::<1, 2, 3>::filled(1.5);
        assert_eq!(t.get(0, 1, 2), Some(&1.5));
        assert_eq!(t.get(1, 0, 0), None);
        assert_eq!(t.get(0, 0, 3), None);
    }

    #[test]
    #[cfg(feature = "alloc")]
    fn large_tensors_fit_in_a_small_stack() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let t = Tensor::<112, 112, 64>::filled(2.0);
                let u = t.clone();
                assert_eq!(u[(111, 111, 63)], 2.0);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn debug_shows_the_shape() {
        let t = Tensor::<1, 1, 2, f64>::zeros();
        assert_eq!(format!("{t:?}"), "Tensor<1, 1, 2, f64> [[[0.0, 0.0]]]");
    }

    #[test]
    fn max_abs_diff_sees_nan() {
        let a = Tensor::<1, 1, 2>::from_hwc(&[1.0, 2.0]).unwrap();
        let b = Tensor::<1, 1, 2>::from_hwc(&[1.5, f32::NAN]).unwrap();
        assert!(a.max_abs_diff(&b).is_nan());
        assert_eq!(a.max_abs_diff(&a), 0.0);
    }
}

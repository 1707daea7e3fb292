//! `Tensor<H, W, C, T>`: one image, height x width x channels, channels last.

use alloc::vec::Vec;
use core::fmt;
use core::ops::{Index, IndexMut};

use crate::storage::Owned;
use crate::{Dims, Element, Error};

/// One image of `H` rows, `W` columns and `C` channels, stored row-major with channels last
/// (HWC, the NHWC layout of TensorFlow and TFLite with batch 1).
///
/// The shape is part of the type, so a layer's `forward` only accepts the tensor it was
/// declared for, and chaining layers whose shapes do not meet is a compile error. The data
/// lives on the heap (a 112 x 112 x 64 tensor is 3 MiB), aligned to a cache line and allocated
/// without passing through the stack.
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
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
    fn get_is_checked() {
        let t = Tensor::<1, 2, 3>::filled(1.5);
        assert_eq!(t.get(0, 1, 2), Some(&1.5));
        assert_eq!(t.get(1, 0, 0), None);
        assert_eq!(t.get(0, 0, 3), None);
    }

    #[test]
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

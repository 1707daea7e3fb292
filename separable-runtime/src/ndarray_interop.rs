//! Conversions between [`Tensor`] and `ndarray` arrays of shape `(H, W, C)`.

use ndarray::{Array3, ArrayView3, ArrayViewMut3};

use crate::{Dims, Element, Error, Tensor};

impl<const H: usize, const W: usize, const C: usize, T: Element> Tensor<H, W, C, T> {
    /// A view of the tensor as an `ndarray` array of shape `(H, W, C)`, without copying.
    ///
    /// ```
    /// let t = separable_runtime::Tensor::<2, 3, 4>::from_fn(|h, w, c| (h + w + c) as f32);
    /// let v = t.view();
    /// assert_eq!(v.dim(), (2, 3, 4));
    /// assert_eq!(v[[1, 2, 3]], 6.0);
    /// ```
    #[must_use]
    pub fn view(&self) -> ArrayView3<'_, T> {
        // The HWC slice is exactly the standard (row-major) layout of shape (H, W, C).
        match ArrayView3::from_shape((H, W, C), self.as_slice()) {
            Ok(v) => v,
            Err(_) => unreachable!("a tensor's slice always has H * W * C elements"),
        }
    }

    /// A mutable view of the tensor as an `ndarray` array of shape `(H, W, C)`.
    #[must_use]
    pub fn view_mut(&mut self) -> ArrayViewMut3<'_, T> {
        match ArrayViewMut3::from_shape((H, W, C), self.as_mut_slice()) {
            Ok(v) => v,
            Err(_) => unreachable!("a tensor's slice always has H * W * C elements"),
        }
    }

    /// A copy as an owned `ndarray` array of shape `(H, W, C)`.
    #[must_use]
    pub fn to_array(&self) -> Array3<T> {
        self.view().to_owned()
    }

    /// Copies an `ndarray` array of shape `(H, W, C)`, in any memory layout.
    ///
    /// # Errors
    /// [`Error::Shape`] if the array has another shape.
    #[allow(clippy::needless_pass_by_value)] // views are passed by value in ndarray's API
    pub fn from_array(array: ArrayView3<'_, T>) -> Result<Self, Error> {
        let (h, w, c) = array.dim();
        if (h, w, c) != (H, W, C) {
            return Err(Error::Shape {
                context: "Tensor::from_array",
                tensor: "array",
                expected: Dims::new([H, W, C]),
                actual: Dims::new([h, w, c]),
            });
        }
        let mut t = Self::zeros();
        if let Some(src) = array.as_slice() {
            t.as_mut_slice().copy_from_slice(src);
        } else {
            for (dst, &src) in t.as_mut_slice().iter_mut().zip(array.iter()) {
                *dst = src;
            }
        }
        Ok(t)
    }
}

impl<'a, const H: usize, const W: usize, const C: usize, T: Element> TryFrom<ArrayView3<'a, T>>
    for Tensor<H, W, C, T>
{
    type Error = Error;

    fn try_from(array: ArrayView3<'a, T>) -> Result<Self, Error> {
        Self::from_array(array)
    }
}

impl<const H: usize, const W: usize, const C: usize, T: Element> TryFrom<&Array3<T>>
    for Tensor<H, W, C, T>
{
    type Error = Error;

    fn try_from(array: &Array3<T>) -> Result<Self, Error> {
        Self::from_array(array.view())
    }
}

impl<const H: usize, const W: usize, const C: usize, T: Element> From<&Tensor<H, W, C, T>>
    for Array3<T>
{
    fn from(t: &Tensor<H, W, C, T>) -> Self {
        t.to_array()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_share_memory_and_match_indexing() {
        let mut t = Tensor::<2, 3, 4>::from_fn(|h, w, c| (100 * h + 10 * w + c) as f32);
        assert_eq!(t.view()[[1, 2, 3]], t[(1, 2, 3)]);
        assert_eq!(t.view().as_ptr(), t.as_slice().as_ptr());
        t.view_mut()[[0, 1, 2]] = -1.0;
        assert_eq!(t[(0, 1, 2)], -1.0);
    }

    #[test]
    fn arrays_in_any_layout_convert() {
        let t = Tensor::<2, 3, 4>::from_fn(|h, w, c| (100 * h + 10 * w + c) as f32);
        let a = t.to_array();
        assert_eq!(Tensor::<2, 3, 4>::try_from(&a).unwrap(), t);
        // A non-contiguous view: channels-first data permuted to (H, W, C).
        let chw = Array3::from_shape_vec((4, 2, 3), t.to_chw()).unwrap();
        let hwc = chw.view().permuted_axes([1, 2, 0]);
        assert!(hwc.as_slice().is_none());
        assert_eq!(Tensor::<2, 3, 4>::from_array(hwc).unwrap(), t);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let a = Array3::<f32>::zeros((3, 2, 4));
        let e = Tensor::<2, 3, 4>::try_from(&a).unwrap_err();
        assert_eq!(
            e,
            Error::Shape {
                context: "Tensor::from_array",
                tensor: "array",
                expected: Dims::new([2, 3, 4]),
                actual: Dims::new([3, 2, 4]),
            }
        );
    }
}

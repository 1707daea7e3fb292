//! The inlined building blocks of generated layers.
//!
//! `separable_conv!` emits the loop structure of a layer with every size as a literal; the
//! arithmetic on one pixel's channels is one of these functions, monomorphised for the layer's
//! channel counts. Channels are fixed-size arrays, so each call compiles to straight-line or
//! vectorised code with no bounds checks.

use separable_shape::Activation;
pub use separable_shape::tap_range;

use crate::Element;

/// One depthwise tap with multiplier 1: `acc[c] += x[c] * w[c]`.
#[inline(always)]
pub fn depthwise_tap<T: Element, const C: usize>(acc: &mut [T; C], x: &[T; C], w: &[T; C]) {
    for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
        *a = *a + xv * wv;
    }
}

/// One depthwise tap with depth multiplier `M`: `acc[c * M + m] += x[c] * w[c * M + m]`.
#[inline(always)]
pub fn depthwise_tap_multiplier<T: Element, const C: usize, const M: usize, const CM: usize>(
    acc: &mut [T; CM],
    x: &[T; C],
    w: &[T; CM],
) {
    const { assert!(C * M == CM, "CM must equal C * M") };
    for ((acc, w), &xv) in acc.chunks_exact_mut(M).zip(w.chunks_exact(M)).zip(x) {
        for (a, &wv) in acc.iter_mut().zip(w) {
            *a = *a + xv * wv;
        }
    }
}

/// Block `index` of `B` consecutive channels of a pixel.
#[inline(always)]
#[must_use]
pub fn channels<T, const C: usize, const B: usize>(pixel: &[T; C], index: usize) -> &[T; B] {
    const { assert!(B > 0 && C.is_multiple_of(B), "B must divide C") };
    &pixel.as_chunks::<B>().0[index]
}

/// Applies `activation` to every element of `values`; see [`activate`].
#[inline(always)]
pub fn activate_slice<T: Element>(activation: Activation, values: &mut [T]) {
    // One flat loop per activation, so each vectorises over consecutive elements.
    match activation {
        Activation::None => {}
        Activation::Relu => values.iter_mut().for_each(|v| *v = relu(*v)),
        Activation::Relu6 => values.iter_mut().for_each(|v| *v = relu6(*v)),
    }
}

/// `max(v, 0)`, keeping NaN.
#[inline(always)]
fn relu<T: Element>(v: T) -> T {
    if v < T::ZERO { T::ZERO } else { v }
}

/// `min(max(v, 0), 6)`, keeping NaN.
#[inline(always)]
fn relu6<T: Element>(v: T) -> T {
    if v < T::ZERO {
        T::ZERO
    } else if v > T::SIX {
        T::SIX
    } else {
        v
    }
}

/// One pixel of the pointwise stage over packed weights (see [`crate::gemm::pack`]):
/// `acc[n] += sum over k of y[k] * w[k][n]`.
#[inline(always)]
pub fn pointwise_pixel<T: Element, const CM: usize, const N: usize>(
    acc: &mut [T; N],
    y: &[T; CM],
    packed: &[T],
) {
    use crate::gemm::PANEL;
    for (panel, acc) in acc.chunks_mut(PANEL).enumerate() {
        let weights = &packed[panel * CM * PANEL..][..CM * PANEL];
        for (&yv, row) in y.iter().zip(weights.chunks_exact(PANEL)) {
            for (a, &wv) in acc.iter_mut().zip(row) {
                *a = *a + yv * wv;
            }
        }
    }
}

/// Block `index` of `B` consecutive channels of a pixel, mutably.
#[inline(always)]
pub fn channels_mut<T, const C: usize, const B: usize>(
    pixel: &mut [T; C],
    index: usize,
) -> &mut [T; B] {
    const { assert!(B > 0 && C.is_multiple_of(B), "B must divide C") };
    &mut pixel.as_chunks_mut::<B>().0[index]
}

/// Applies `activation` to every channel in place. NaN stays NaN (unlike `f32::max`).
///
/// Every element is stored, clipped or not: a select the compiler vectorises. A store of only
/// the clipped elements vectorised, in loops over chunks of a longer slice, across the chunks
/// with gathers and scatters.
#[inline(always)]
pub fn activate<T: Element, const C: usize>(activation: Activation, acc: &mut [T; C]) {
    activate_slice(activation, acc);
}

/// The activation on the vectors of the x86 pointwise microkernels, applied to their sums
/// before the store, as the clip `min(hi, max(lo, v))` with bounds from the activation: the
/// same results as [`activate`], NaN and `-0.0` included, since `max(lo, v)` and `min(hi, v)`
/// return their second operand when either is NaN or the two are equal, as `relu` and `relu6`
/// return `v`. `relu` and `relu6` share one copy of the stores (a `match` in them made three).
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use core::arch::x86_64::{
        __m256, __m512, _mm256_max_ps, _mm256_min_ps, _mm256_set1_ps, _mm512_max_ps, _mm512_min_ps,
        _mm512_set1_ps,
    };

    use separable_shape::Activation;

    /// `[lo, hi]` of the clip that is `activation` (infinite where it does not clip).
    fn bounds(activation: Activation) -> [f32; 2] {
        match activation {
            Activation::None => [f32::NEG_INFINITY, f32::INFINITY],
            Activation::Relu => [0.0, f32::INFINITY],
            Activation::Relu6 => [0.0, 6.0],
        }
    }

    /// An activation on 16 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Clip512 {
        lo: __m512,
        hi: __m512,
    }

    impl Clip512 {
        #[target_feature(enable = "avx512f")]
        #[inline]
        pub(crate) fn new(activation: Activation) -> Self {
            let [lo, hi] = bounds(activation);
            Clip512 {
                lo: _mm512_set1_ps(lo),
                hi: _mm512_set1_ps(hi),
            }
        }

        #[target_feature(enable = "avx512f")]
        #[inline]
        pub(crate) fn apply(self, v: __m512) -> __m512 {
            _mm512_min_ps(self.hi, _mm512_max_ps(self.lo, v))
        }
    }

    /// An activation on 8 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Clip256 {
        lo: __m256,
        hi: __m256,
    }

    impl Clip256 {
        #[target_feature(enable = "avx")]
        #[inline]
        pub(crate) fn new(activation: Activation) -> Self {
            let [lo, hi] = bounds(activation);
            Clip256 {
                lo: _mm256_set1_ps(lo),
                hi: _mm256_set1_ps(hi),
            }
        }

        #[target_feature(enable = "avx")]
        #[inline]
        pub(crate) fn apply(self, v: __m256) -> __m256 {
            _mm256_min_ps(self.hi, _mm256_max_ps(self.lo, v))
        }
    }
}

/// `A` aligned to a cache line (64 bytes), so vector loads of tensors and weights never
/// straddle two lines. Dereferences to `A`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct Aligned<A>(pub A);

impl<A> core::ops::Deref for Aligned<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.0
    }
}

impl<A> core::ops::DerefMut for Aligned<A> {
    fn deref_mut(&mut self) -> &mut A {
        &mut self.0
    }
}

/// Types whose all-zero bit pattern is a valid value: `f32`, `f64` and nested arrays of them.
pub trait Zeroable: zeroable::Sealed {}
impl<T: Element> Zeroable for T {}
impl<A: Zeroable, const N: usize> Zeroable for [A; N] {}

mod zeroable {
    use crate::Element;
    pub trait Sealed {}
    impl<T: Element> Sealed for T {}
    impl<A: Sealed, const N: usize> Sealed for [A; N] {}
}

/// The arrays of generated layers seen flat: `[T; N]`, and `[[[T; C]; W]; H]` as `H·W·C`
/// elements in HWC order.
///
/// Generated code calls `Flat::flat(x)` rather than chains of `as_flattened`, and the generic
/// functions of this crate that take its arrays flatten them here: each is written and checked
/// once, not in every layer.
pub trait Flat: Zeroable {
    /// `f32` or `f64`.
    type Elem: Element;
    /// The elements, in order.
    fn flat(&self) -> &[Self::Elem];
    /// The elements, in order, mutably.
    fn flat_mut(&mut self) -> &mut [Self::Elem];
}

impl<T: Element, const N: usize> Flat for [T; N] {
    type Elem = T;

    #[inline(always)]
    fn flat(&self) -> &[T] {
        self
    }

    #[inline(always)]
    fn flat_mut(&mut self) -> &mut [T] {
        self
    }
}

impl<T: Element, const C: usize, const W: usize, const H: usize> Flat for [[[T; C]; W]; H] {
    type Elem = T;

    #[inline(always)]
    fn flat(&self) -> &[T] {
        self.as_flattened().as_flattened()
    }

    #[inline(always)]
    fn flat_mut(&mut self) -> &mut [T] {
        self.as_flattened_mut().as_flattened_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_arrays_are_their_elements_in_hwc_order() {
        let mut x = [[[0.0f32; 3]; 2]; 2];
        for (i, v) in x.iter_mut().flatten().flatten().enumerate() {
            *v = i as f32;
        }
        let want: [f32; 12] = core::array::from_fn(|i| i as f32);
        assert_eq!(Flat::flat(&x), &want);
        Flat::flat_mut(&mut x)[7] = -1.0;
        assert_eq!(x[1][0][1], -1.0);
        let mut bias = [1.0f64, 2.0];
        Flat::flat_mut(&mut bias)[1] = 5.0;
        assert_eq!(Flat::flat(&bias), &[1.0, 5.0]);
        assert!(Flat::flat(&[0.0f32; 0]).is_empty());
    }

    #[test]
    fn multiplier_tap_spreads_each_input_channel() {
        let mut acc = [0.0f32; 6];
        depthwise_tap_multiplier::<f32, 3, 2, 6>(
            &mut acc,
            &[1.0, 2.0, 3.0],
            &[1.0, 10.0, 100.0, 1000.0, 0.5, 0.25],
        );
        assert_eq!(acc, [1.0, 10.0, 200.0, 2000.0, 1.5, 0.75]);
    }

    #[test]
    fn activations_keep_nan() {
        let mut a = [f32::NAN, -1.0, 3.0, 7.0];
        activate(Activation::Relu6, &mut a);
        assert!(a[0].is_nan());
        assert_eq!(&a[1..], &[0.0, 3.0, 6.0]);
        let mut a = [f64::NAN, -1.0, 7.0];
        activate(Activation::Relu, &mut a);
        assert!(a[0].is_nan());
        assert_eq!(&a[1..], &[0.0, 7.0]);
    }

    /// The vector activations of the x86 kernels give the scalar ones' bits on the values
    /// where `max`/`min` instructions and comparisons can differ.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_activations_match_the_scalar_ones() {
        use core::arch::x86_64::{
            _mm256_loadu_ps, _mm256_storeu_ps, _mm512_loadu_ps, _mm512_storeu_ps,
        };
        let special = [
            f32::NAN,
            -f32::NAN,
            -0.0,
            0.0,
            6.0,
            6.000_001,
            5.999_999,
            -1.0e-45,
            1.0e-45,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -3.5,
            2.25,
            100.0,
            -100.0,
            1.0,
        ];
        let bits = |v: &[f32]| -> alloc::vec::Vec<u32> { v.iter().map(|v| v.to_bits()).collect() };
        for activation in [Activation::None, Activation::Relu, Activation::Relu6] {
            let mut want = special;
            activate_slice(activation, &mut want);
            if std::is_x86_feature_detected!("avx512f") {
                let mut got = [0.0f32; 16];
                // SAFETY: AVX-512F is available; both arrays hold 16 lanes.
                unsafe {
                    let v = _mm512_loadu_ps(special.as_ptr());
                    let v = x86::Clip512::new(activation).apply(v);
                    _mm512_storeu_ps(got.as_mut_ptr(), v);
                }
                assert_eq!(bits(&got), bits(&want), "{activation:?} (AVX-512)");
            }
            if std::is_x86_feature_detected!("avx") {
                let mut got = [0.0f32; 16];
                for half in 0..2 {
                    // SAFETY: AVX is available; lanes `8 * half ..` of both arrays hold 8.
                    unsafe {
                        let v = _mm256_loadu_ps(special.as_ptr().add(8 * half));
                        let v = x86::Clip256::new(activation).apply(v);
                        _mm256_storeu_ps(got.as_mut_ptr().add(8 * half), v);
                    }
                }
                assert_eq!(bits(&got), bits(&want), "{activation:?} (AVX)");
            }
        }
    }
}

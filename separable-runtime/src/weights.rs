//! Conversions between framework weight layouts and the layouts generated layers store.
//!
//! A generated layer keeps its depthwise weights as `[KH][KW][C·M]` (channels innermost, so one
//! tap is a vector operation over channels) and its pointwise weights as `[C·M][N]` (one input
//! channel scales a row of `N` outputs). These functions move PyTorch's layouts in and out of
//! them; generated `from_pytorch` and `to_pytorch` call them with the layer's spec.
//!
//! [`load_pytorch`] and the weight views need no heap; [`PytorchWeights`] and [`to_pytorch`],
//! which return `Vec`s, need the `alloc` feature.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

use separable_shape::LayerSpec;

use crate::kernel::Flat;
use crate::storage::Storage;
use crate::{Dims, Element, Error};

/// The four tensors of a layer in PyTorch's layouts, in the argument order of generated
/// `from_pytorch`: depthwise weight, depthwise bias, pointwise weight, pointwise bias.
pub type PytorchSlices<'a, T> = (&'a [T], Option<&'a [T]>, &'a [T], Option<&'a [T]>);

/// A layer's weights in PyTorch's layouts, row-major.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
pub struct PytorchWeights<T> {
    /// `depthwise.weight`, shape `[C·M, 1, KH, KW]`.
    pub depthwise_weight: Vec<T>,
    /// `depthwise.bias`, shape `[C·M]`; present with `bias: both`.
    pub depthwise_bias: Option<Vec<T>>,
    /// `pointwise.weight`, shape `[N, C·M, 1, 1]`.
    pub pointwise_weight: Vec<T>,
    /// `pointwise.bias`, shape `[N]`; present with `bias: pointwise` or `both`.
    pub pointwise_bias: Option<Vec<T>>,
}

#[cfg(feature = "alloc")]
impl<T: Element> PytorchWeights<T> {
    /// Borrows the four tensors in the argument order of generated `from_pytorch`.
    #[must_use]
    pub fn as_slices(&self) -> PytorchSlices<'_, T> {
        (
            &self.depthwise_weight,
            self.depthwise_bias.as_deref(),
            &self.pointwise_weight,
            self.pointwise_bias.as_deref(),
        )
    }
}

/// The PyTorch shape of `depthwise.weight`: `[C·M, 1, KH, KW]`.
#[must_use]
pub const fn pytorch_depthwise_dims(spec: &LayerSpec) -> Dims {
    Dims::new([
        spec.input[2] * spec.multiplier,
        1,
        spec.kernel[0],
        spec.kernel[1],
    ])
}

/// The PyTorch shape of `pointwise.weight`: `[N, C·M, 1, 1]`.
#[must_use]
pub const fn pytorch_pointwise_dims(spec: &LayerSpec) -> Dims {
    Dims::new([spec.output_channels, spec.input[2] * spec.multiplier, 1, 1])
}

/// Checks the four PyTorch tensors against `spec` (lengths, and biases against the declared
/// `bias:`) and copies them into a layer's storage: `dw` as `[KH][KW][C·M]` flattened and `pw`
/// packed for the pointwise microkernels (see [`crate::gemm::pack`]).
///
/// # Errors
/// The first tensor whose length is wrong, or whose presence disagrees with `spec.bias`.
///
/// # Panics
/// If the destination slices do not match `spec` (a bug in the caller, not bad user data).
///
/// The work is compiled once, in this crate, for `f32` and for `f64`: a program with many
/// layers calls one loader rather than compiling a copy of it.
pub fn load_pytorch<T: Element>(
    context: &'static str,
    spec: &LayerSpec,
    src: PytorchSlices<'_, T>,
    dw: &mut [T],
    dw_bias: Option<&mut [T]>,
    pw: &mut [T],
    pw_bias: Option<&mut [T]>,
) -> Result<(), Error> {
    T::load_pytorch(context, spec, src, [dw, pw], [dw_bias, pw_bias])
}

/// [`load_pytorch`] into a generated layer's storages, which it overwrites whole (static
/// storage is replaced, not copied): a generated `from_pytorch` is this one call on a zeroed
/// layer. A bias the layer does not declare is `None`.
///
/// # Errors
/// As [`load_pytorch`]; the storages may then hold anything.
#[doc(hidden)]
#[allow(clippy::type_complexity)] // the layer's four storages, in `PytorchSlices`' order
pub fn load_pytorch_storage<T, Dw, DwBias, Pw, PwBias>(
    context: &'static str,
    spec: &LayerSpec,
    src: PytorchSlices<'_, T>,
    (dw, dw_bias, pw, pw_bias): (
        &mut Storage<Dw>,
        Option<&mut Storage<DwBias>>,
        &mut Storage<Pw>,
        Option<&mut Storage<PwBias>>,
    ),
) -> Result<(), Error>
where
    T: Element,
    Dw: Flat<Elem = T>,
    DwBias: Flat<Elem = T>,
    Pw: Flat<Elem = T>,
    PwBias: Flat<Elem = T>,
{
    T::load_pytorch(
        context,
        spec,
        src,
        [dw.overwrite().flat_mut(), pw.overwrite().flat_mut()],
        [
            dw_bias.map(|b| b.overwrite().flat_mut()),
            pw_bias.map(|b| b.overwrite().flat_mut()),
        ],
    )
}

/// The body of [`load_pytorch`], instantiated here by `Element`'s (sealed) implementations.
pub(crate) fn load_pytorch_into<T: Element>(
    context: &'static str,
    spec: &LayerSpec,
    src: PytorchSlices<'_, T>,
    [dw, pw]: [&mut [T]; 2],
    [dw_bias, pw_bias]: [Option<&mut [T]>; 2],
) -> Result<(), Error> {
    let (src_dw, src_dw_bias, src_pw, src_pw_bias) = src;
    let [kh, kw] = spec.kernel;
    let cm = spec.input[2] * spec.multiplier;
    let n = spec.output_channels;
    let declared = crate::error::BiasName(spec.bias);

    Error::check_len(
        context,
        "depthwise.weight",
        pytorch_depthwise_dims(spec),
        src_dw.len(),
    )?;
    check_bias(
        context,
        "depthwise.bias",
        spec.bias.depthwise(),
        src_dw_bias,
        cm,
        declared,
    )?;
    Error::check_len(
        context,
        "pointwise.weight",
        pytorch_pointwise_dims(spec),
        src_pw.len(),
    )?;
    check_bias(
        context,
        "pointwise.bias",
        spec.bias.pointwise(),
        src_pw_bias,
        n,
        declared,
    )?;

    assert_eq!(
        dw.len(),
        kh * kw * cm,
        "depthwise storage does not match the spec"
    );
    assert_eq!(
        pw.len(),
        crate::gemm::packed_len(cm, n),
        "pointwise storage does not match the spec"
    );
    // PyTorch [cm][0][y][x] -> [y][x][cm]
    for (k, kernel) in src_dw.chunks_exact(kh * kw).enumerate() {
        for (tap, &v) in kernel.iter().enumerate() {
            dw[tap * cm + k] = v;
        }
    }
    // PyTorch [n][k][0][0] -> packed panels of [k][n]
    pw.fill(T::ZERO);
    for (o, row) in src_pw.chunks_exact(cm).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            pw[packed_index(k, o, cm)] = v;
        }
    }
    if let (Some(dst), Some(src)) = (dw_bias, src_dw_bias) {
        dst.copy_from_slice(src);
    }
    if let (Some(dst), Some(src)) = (pw_bias, src_pw_bias) {
        dst.copy_from_slice(src);
    }
    Ok(())
}

fn check_bias<T>(
    context: &'static str,
    tensor: &'static str,
    declared_present: bool,
    given: Option<&[T]>,
    len: usize,
    declared: crate::error::BiasName,
) -> Result<(), Error> {
    match (declared_present, given) {
        (true, Some(b)) => Error::check_len(context, tensor, Dims::new([len]), b.len()),
        (false, None) => Ok(()),
        (false, Some(_)) => Err(Error::UnexpectedBias {
            context,
            tensor,
            declared,
        }),
        (true, None) => Err(Error::MissingBias {
            context,
            tensor,
            declared,
        }),
    }
}

/// The inverse of [`load_pytorch`]: a layer's storage back in PyTorch's layouts.
///
/// # Panics
/// If the slices do not match `spec` (a bug in the caller, not bad user data).
#[cfg(feature = "alloc")]
#[must_use]
pub fn to_pytorch<T: Element>(
    spec: &LayerSpec,
    dw: &[T],
    dw_bias: Option<&[T]>,
    pw: &[T],
    pw_bias: Option<&[T]>,
) -> PytorchWeights<T> {
    let [kh, kw] = spec.kernel;
    let cm = spec.input[2] * spec.multiplier;
    let n = spec.output_channels;
    assert_eq!(
        dw.len(),
        kh * kw * cm,
        "depthwise storage does not match the spec"
    );
    assert_eq!(
        pw.len(),
        crate::gemm::packed_len(cm, n),
        "pointwise storage does not match the spec"
    );
    let taps = kh * kw;
    let depthwise_weight = (0..cm * taps)
        .map(|i| dw[(i % taps) * cm + i / taps])
        .collect();
    let pointwise_weight = (0..n * cm)
        .map(|i| pw[packed_index(i % cm, i / cm, cm)])
        .collect();
    PytorchWeights {
        depthwise_weight,
        depthwise_bias: dw_bias.map(<[T]>::to_vec),
        pointwise_weight,
        pointwise_bias: pw_bias.map(<[T]>::to_vec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use separable_shape::Bias;

    fn spec() -> LayerSpec {
        LayerSpec::new([4, 4, 2], 3)
            .with_kernel([2, 3])
            .with_multiplier(2)
            .with_bias(Bias::Both)
    }

    #[test]
    fn copy_to_rows_is_the_inverse_of_copy_from_rows() {
        let rows: Vec<f32> = (0..4 * 17).map(|i| i as f32 * 0.5).collect();
        let mut packed = vec![f32::NAN; crate::gemm::packed_len(4, 17)];
        PointwiseWeightsMut::new(&mut packed, 4, 17)
            .copy_from_rows(&rows)
            .unwrap();
        let view = PointwiseWeights::new(&packed, 4, 17);
        let mut back = vec![f32::NAN; 4 * 17];
        view.copy_to_rows(&mut back).unwrap();
        assert_eq!(back, rows);
        assert_eq!(view[(3, 16)], rows[3 * 17 + 16]);
        let e = view.copy_to_rows(&mut back[1..]).unwrap_err();
        assert!(matches!(
            e,
            Error::Length {
                tensor: "rows",
                expected: 68,
                actual: 67,
                ..
            }
        ));
    }

    #[test]
    #[cfg(feature = "alloc")]
    fn a_layer_loads_its_storages_in_one_call() {
        use crate::kernel::Aligned;
        static DW: Aligned<[[[f32; 4]; 3]; 2]> = Aligned([[[9.0; 4]; 3]; 2]);
        let spec = spec();
        let src_dw: Vec<f32> = (0..24).map(|i| i as f32).collect(); // [4][1][2][3]
        let src_pw: Vec<f32> = (0..12).map(|i| 100.0 + i as f32).collect(); // [3][4][1][1]
        let (db, pb) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0]);
        let src = (&src_dw[..], Some(&db[..]), &src_pw[..], Some(&pb[..]));
        // Storages loaded in one call hold what `load_pytorch` writes; static storage is
        // replaced, and the static array keeps its values.
        let mut dw = Storage::from_static(&DW);
        let (mut dw_bias, mut pw) = (
            Storage::<[f32; 4]>::zeroed(),
            Storage::<[f32; 64]>::zeroed(),
        );
        let mut pw_bias = Storage::<[f32; 3]>::zeroed();
        let storages = (&mut dw, Some(&mut dw_bias), &mut pw, Some(&mut pw_bias));
        load_pytorch_storage("L::from_pytorch", &spec, src, storages).unwrap();
        let (mut want_dw, mut want_pw) = ([0.0; 24], [0.0; 64]);
        let (mut want_db, mut want_pb) = ([0.0; 4], [0.0; 3]);
        load_pytorch(
            "t",
            &spec,
            src,
            &mut want_dw,
            Some(&mut want_db),
            &mut want_pw,
            Some(&mut want_pb),
        )
        .unwrap();
        assert!(!dw.is_static());
        assert_eq!(Flat::flat(&*dw), &want_dw);
        assert_eq!(DW.0, [[[9.0; 4]; 3]; 2]);
        assert_eq!((*dw_bias, *pw, *pw_bias), (want_db, want_pw, want_pb));
        // A layer without biases passes none.
        let bare = spec.with_bias(Bias::None);
        let none = None::<&mut Storage<[f32; 0]>>;
        let storages = (&mut dw, none, &mut pw, None::<&mut Storage<[f32; 0]>>);
        load_pytorch_storage(
            "L::from_pytorch",
            &bare,
            (&src_dw, None, &src_pw, None),
            storages,
        )
        .unwrap();
        assert_eq!(*pw, want_pw);
        // Errors name the call and the tensor.
        let storages = (&mut dw, Some(&mut dw_bias), &mut pw, Some(&mut pw_bias));
        let src = (&src_dw[..], Some(&db[..]), &src_pw[1..], Some(&pb[..]));
        let e = load_pytorch_storage("L::from_pytorch", &spec, src, storages).err();
        assert!(matches!(
            e,
            Some(Error::Length {
                context: "L::from_pytorch",
                tensor: "pointwise.weight",
                expected: 12,
                actual: 11,
                ..
            })
        ));
    }

    #[test]
    #[cfg(feature = "alloc")]
    fn pytorch_layout_round_trips_through_storage() {
        let spec = spec();
        let src_dw: Vec<f32> = (0..24).map(|i| i as f32).collect(); // [4][1][2][3]
        let src_pw: Vec<f32> = (0..12).map(|i| 100.0 + i as f32).collect(); // [3][4][1][1]
        let (mut dw, mut pw) = (vec![0.0; 24], vec![0.0; crate::gemm::packed_len(4, 3)]);
        let (mut db, mut pb) = (vec![0.0; 4], vec![0.0; 3]);
        load_pytorch(
            "t",
            &spec,
            (
                &src_dw,
                Some(&[1.0, 2.0, 3.0, 4.0]),
                &src_pw,
                Some(&[5.0, 6.0, 7.0]),
            ),
            &mut dw,
            Some(&mut db),
            &mut pw,
            Some(&mut pb),
        )
        .unwrap();
        // storage [y][x][cm]: tap (1, 2) of channel 3 is PyTorch index 3 * 6 + 1 * 3 + 2 = 23.
        assert_eq!(dw[(3 + 2) * 4 + 3], 23.0);
        // packed: weight from channel 1 to output 2 is PyTorch index 2 * 4 + 1 = 9.
        assert_eq!(pw[crate::gemm::PANEL + 2], 109.0);
        assert_eq!(PointwiseWeights::new(&pw, 4, 3).get(1, 2), Some(109.0));
        assert_eq!(PointwiseWeights::new(&pw, 4, 3).get(4, 0), None);
        let back = to_pytorch(&spec, &dw, Some(&db), &pw, Some(&pb));
        assert_eq!(back.depthwise_weight, src_dw);
        assert_eq!(back.pointwise_weight, src_pw);
        assert_eq!(
            back.depthwise_bias.as_deref(),
            Some(&[1.0, 2.0, 3.0, 4.0][..])
        );
        assert_eq!(back.pointwise_bias.as_deref(), Some(&[5.0, 6.0, 7.0][..]));
    }

    #[test]
    fn bias_presence_follows_the_declaration() {
        let spec = spec().with_bias(Bias::Pointwise);
        let (dw, pw) = (vec![0.0f64; 24], vec![0.0f64; 12]);
        let (mut sdw, mut spw) = (vec![0.0; 24], vec![0.0; crate::gemm::packed_len(4, 3)]);
        let e = load_pytorch(
            "L",
            &spec,
            (&dw, Some(&[0.0; 4]), &pw, Some(&[0.0; 3])),
            &mut sdw,
            None,
            &mut spw,
            None,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Error::UnexpectedBias {
                tensor: "depthwise.bias",
                ..
            }
        ));
        let e = load_pytorch(
            "L",
            &spec,
            (&dw, None, &pw, None),
            &mut sdw,
            None,
            &mut spw,
            None,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Error::MissingBias {
                tensor: "pointwise.bias",
                ..
            }
        ));
        let e = load_pytorch(
            "L",
            &spec,
            (&dw, None, &pw, Some(&[0.0; 2])),
            &mut sdw,
            None,
            &mut spw,
            None,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Error::Length {
                tensor: "pointwise.bias",
                expected: 3,
                actual: 2,
                ..
            }
        ));
        let e = load_pytorch(
            "L",
            &spec,
            (&dw[1..], None, &pw, Some(&[0.0; 3])),
            &mut sdw,
            None,
            &mut spw,
            None,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Error::Length {
                tensor: "depthwise.weight",
                expected: 24,
                actual: 23,
                ..
            }
        ));
    }
}

/// The packed position of pointwise weight `(k, n)` for `k_total` depthwise channels.
pub(crate) const fn packed_index(k: usize, n: usize, k_total: usize) -> usize {
    ((n / crate::gemm::PANEL) * k_total + k) * crate::gemm::PANEL + n % crate::gemm::PANEL
}

/// Read access to a layer's pointwise weights, which are stored packed for the matrix
/// microkernels. Indexed `[(k, n)]`: from depthwise channel `k` to output channel `n`.
#[derive(Clone, Copy, Debug)]
pub struct PointwiseWeights<'a, T> {
    packed: &'a [T],
    k: usize,
    n: usize,
}

/// Write access to a layer's pointwise weights; see [`PointwiseWeights`].
#[derive(Debug)]
pub struct PointwiseWeightsMut<'a, T> {
    packed: &'a mut [T],
    k: usize,
    n: usize,
}

impl<'a, T: Element> PointwiseWeights<'a, T> {
    /// A view of packed weights for `k` depthwise and `n` output channels.
    ///
    /// # Panics
    /// If `packed` does not have [`crate::gemm::packed_len`]`(k, n)` elements.
    #[must_use]
    pub fn new(packed: &'a [T], k: usize, n: usize) -> Self {
        assert_eq!(
            packed.len(),
            crate::gemm::packed_len(k, n),
            "packed weights have the wrong length"
        );
        PointwiseWeights { packed, k, n }
    }

    /// `(depthwise channels, output channels)`.
    #[must_use]
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The weight from depthwise channel `k` to output channel `n`, or `None` outside.
    #[must_use]
    pub fn get(&self, k: usize, n: usize) -> Option<T> {
        (k < self.k && n < self.n).then(|| self.packed[packed_index(k, n, self.k)])
    }

    /// All weights row-major, `[k][n]`.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.k)
            .flat_map(|k| (0..self.n).map(move |n| (k, n)))
            .map(|(k, n)| self.packed[packed_index(k, n, self.k)])
            .collect()
    }

    /// Copies all weights into `rows`, row-major `[k][n]`: [`PointwiseWeights::to_vec`]
    /// into a buffer of the caller's.
    ///
    /// # Errors
    /// [`Error::Length`] if `rows` does not have `k * n` elements.
    pub fn copy_to_rows(&self, rows: &mut [T]) -> Result<(), Error> {
        Error::check_len(
            "PointwiseWeights::copy_to_rows",
            "rows",
            Dims::new([self.k, self.n]),
            rows.len(),
        )?;
        if self.n > 0 {
            for (k, row) in rows.chunks_exact_mut(self.n).enumerate() {
                for (n, v) in row.iter_mut().enumerate() {
                    *v = self.packed[packed_index(k, n, self.k)];
                }
            }
        }
        Ok(())
    }
}

impl<'a, T: Element> PointwiseWeightsMut<'a, T> {
    /// A mutable view of packed weights for `k` depthwise and `n` output channels.
    ///
    /// # Panics
    /// If `packed` does not have [`crate::gemm::packed_len`]`(k, n)` elements.
    pub fn new(packed: &'a mut [T], k: usize, n: usize) -> Self {
        assert_eq!(
            packed.len(),
            crate::gemm::packed_len(k, n),
            "packed weights have the wrong length"
        );
        PointwiseWeightsMut { packed, k, n }
    }

    /// The weight from depthwise channel `k` to output channel `n`, or `None` outside.
    #[must_use]
    pub fn get(&self, k: usize, n: usize) -> Option<T> {
        PointwiseWeights {
            packed: self.packed,
            k: self.k,
            n: self.n,
        }
        .get(k, n)
    }

    /// Sets the weight from depthwise channel `k` to output channel `n`; returns `false` (and
    /// changes nothing) outside the matrix.
    pub fn set(&mut self, k: usize, n: usize, value: T) -> bool {
        let inside = k < self.k && n < self.n;
        if inside {
            self.packed[packed_index(k, n, self.k)] = value;
        }
        inside
    }

    /// Replaces all weights from a row-major `[k][n]` slice.
    ///
    /// # Errors
    /// [`Error::Length`] if `rows` does not have `k * n` elements.
    pub fn copy_from_rows(&mut self, rows: &[T]) -> Result<(), Error> {
        Error::check_len(
            "PointwiseWeightsMut::copy_from_rows",
            "rows",
            Dims::new([self.k, self.n]),
            rows.len(),
        )?;
        crate::gemm::pack(rows, self.k, self.n, self.packed);
        Ok(())
    }
}

impl<T: Element> core::ops::Index<(usize, usize)> for PointwiseWeights<'_, T> {
    type Output = T;

    /// # Panics
    /// Outside the matrix, like slice indexing; [`PointwiseWeights::get`] does not panic.
    fn index(&self, (k, n): (usize, usize)) -> &T {
        assert!(
            k < self.k && n < self.n,
            "pointwise weight ({k}, {n}) is outside {} x {}",
            self.k,
            self.n
        );
        &self.packed[packed_index(k, n, self.k)]
    }
}

impl<T: Element> core::ops::Index<(usize, usize)> for PointwiseWeightsMut<'_, T> {
    type Output = T;

    fn index(&self, (k, n): (usize, usize)) -> &T {
        assert!(
            k < self.k && n < self.n,
            "pointwise weight ({k}, {n}) is outside {} x {}",
            self.k,
            self.n
        );
        &self.packed[packed_index(k, n, self.k)]
    }
}

impl<T: Element> core::ops::IndexMut<(usize, usize)> for PointwiseWeightsMut<'_, T> {
    fn index_mut(&mut self, (k, n): (usize, usize)) -> &mut T {
        assert!(
            k < self.k && n < self.n,
            "pointwise weight ({k}, {n}) is outside {} x {}",
            self.k,
            self.n
        );
        &mut self.packed[packed_index(k, n, self.k)]
    }
}

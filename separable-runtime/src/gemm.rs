//! The pointwise stage as a register-blocked matrix product over pre-packed weights.
//!
//! `out[p][n] = init[p][n] + sum over k of a[p][k] * w[k][n]` for a block of pixels `p`, a block
//! of depthwise channels `k` and all output channels `n`. The weights are packed once, when the
//! layer is built, into panels of [`PANEL`] output channels: `[N / PANEL][K][PANEL]`, the last
//! panel padded with zeros, so a microkernel reads each panel front to back.
//!
//! Microkernels (one template per instruction set, instantiated per tile shape):
//! * AVX-512F: `MR x 32` (12 pixels, two panels: 24 `zmm` accumulators);
//! * AVX2 + FMA: `MR x 16` (6 pixels, one panel: 12 `ymm` accumulators);
//! * portable: `MR x 16` on arrays the compiler vectorises for the baseline target.
//!
//! [`Isa::detect`] picks the best one once per call site; every path computes the same sums
//! in the same order (`k` ascending), so they agree to rounding of the fused multiply-add.

use crate::Element;

pub use separable_shape::POINTWISE_PANEL as PANEL;

/// The length of packed pointwise weights for `k` input and `n` output channels.
///
/// # Panics
/// If it overflows `usize` (no layer `separable_conv!` accepts gets there).
#[must_use]
pub const fn packed_len(k: usize, n: usize) -> usize {
    match separable_shape::packed_pointwise_len(k, n) {
        Some(len) => len,
        None => panic!("packed pointwise weights overflow usize"),
    }
}

/// Packs `w`, row-major `[k][n]`, into `packed`, `[ceil(n / PANEL)][k][PANEL]`.
///
/// # Panics
/// If the slices do not have the lengths `k * n` and [`packed_len`] (a bug in the caller).
pub fn pack<T: Element>(w: &[T], k: usize, n: usize, packed: &mut [T]) {
    assert_eq!(w.len(), k * n, "weights are not k x n");
    assert_eq!(
        packed.len(),
        packed_len(k, n),
        "packed buffer has the wrong length"
    );
    packed.fill(T::ZERO);
    for (panel, dst) in packed.chunks_exact_mut(k * PANEL).enumerate() {
        let n0 = panel * PANEL;
        let width = PANEL.min(n - n0);
        for (row, dst) in w.chunks_exact(n).zip(dst.chunks_exact_mut(PANEL)) {
            dst[..width].copy_from_slice(&row[n0..n0 + width]);
        }
    }
}

/// The instruction sets the microkernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512F.
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// Anything: plain Rust the compiler vectorises for the build's baseline.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports (cached by the standard library).
    #[must_use]
    pub fn detect() -> Isa {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        #[cfg(all(
            not(feature = "std"),
            target_arch = "x86_64",
            target_feature = "avx512f"
        ))]
        {
            return Isa::Avx512;
        }
        #[cfg(all(
            not(feature = "std"),
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))]
        {
            return Isa::Avx2;
        }
        #[allow(unreachable_code)]
        Isa::Portable
    }

    /// Whether this CPU can run `self`.
    #[must_use]
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => matches!(Isa::detect(), Isa::Avx2 | Isa::Avx512),
            Isa::Avx512 => Isa::detect() == Isa::Avx512,
        }
    }
}

/// A computation to run with the best instruction set: generated layers implement it for
/// their stages, with `run` marked `#[inline(always)]`, so the whole stage is inlined into a
/// function compiled for that instruction set and vectorised for it.
pub trait Kernel {
    /// What the computation returns.
    type Output;
    /// Runs the computation; `isa` names the instruction set it is being compiled for.
    fn run(self, isa: Isa) -> Self::Output;
}

/// Runs `kernel` with the best instruction set of this CPU ([`Isa::detect`]).
///
/// This is the only place generated layers reach instruction-set-specific code, and it keeps
/// `unsafe` out of the code users compile.
#[inline]
pub fn dispatch<K: Kernel>(kernel: K) -> K::Output {
    run_as(Isa::detect(), kernel)
}

/// Runs `kernel` with a chosen instruction set, to force one path (tests, comparisons).
///
/// # Panics
/// If this CPU does not support `isa`.
#[inline]
pub fn dispatch_as<K: Kernel>(isa: Isa, kernel: K) -> K::Output {
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    run_as(isa, kernel)
}

#[inline]
fn run_as<K: Kernel>(isa: Isa, kernel: K) -> K::Output {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers pass an `isa` this CPU supports (`detect` or checked).
        Isa::Avx512 => unsafe { with_avx512(kernel) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { with_avx2(kernel) },
        _ => kernel.run(Isa::Portable),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn with_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run(Isa::Avx512)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run(Isa::Avx2)
}

/// One block of the pointwise stage.
///
/// `a` holds `pixels` rows of `k_block` values (row stride `k_block`): depthwise channels
/// `k0 .. k0 + k_block` of each pixel. `packed` is the whole packed weight matrix for `k`
/// depthwise channels and `n` outputs. `out` holds `pixels` rows of `n` values. With `init`
/// `Some(bias)` each output starts from the bias (or zero with an empty bias), else from its
/// current value, so a layer can sum over channel blocks.
pub struct Block<'a, T> {
    /// Depthwise outputs, `pixels x k_block`.
    pub a: &'a [T],
    /// Number of pixels (rows of `a` and `out`).
    pub pixels: usize,
    /// First depthwise channel of the block.
    pub k0: usize,
    /// Depthwise channels in the block.
    pub k_block: usize,
    /// All depthwise channels (rows of the packed matrix).
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// Packed weights, [`packed_len`]`(k, n)` values.
    pub packed: &'a [T],
}

/// Computes one [`Block`] into `out` with the microkernel of `isa`.
///
/// # Panics
/// If `isa` is not supported by this CPU or the slices do not match the block's sizes.
pub fn pointwise_block<T: Element + Microkernels>(
    isa: Isa,
    block: &Block<'_, T>,
    init: Option<&[T]>,
    out: &mut [T],
) {
    assert!(
        block.a.len() >= block.pixels * block.k_block,
        "a is too short"
    );
    assert!(out.len() >= block.pixels * block.n, "out is too short");
    assert!(
        block.k0 + block.k_block <= block.k,
        "channel block out of range"
    );
    assert_eq!(
        block.packed.len(),
        packed_len(block.k, block.n),
        "packed weights have the wrong length"
    );
    if let Some(bias) = init {
        assert!(
            bias.is_empty() || bias.len() == block.n,
            "bias has the wrong length"
        );
    }
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    T::pointwise_block(isa, block, init, out);
}

/// Element types with pointwise microkernels.
pub trait Microkernels: Sized {
    /// See [`pointwise_block`]; arguments already checked.
    fn pointwise_block(isa: Isa, block: &Block<'_, Self>, init: Option<&[Self]>, out: &mut [Self]);
}

impl Microkernels for f32 {
    fn pointwise_block(isa: Isa, block: &Block<'_, f32>, init: Option<&[f32]>, out: &mut [f32]) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pointwise_block` asserted that this CPU supports AVX-512F.
            Isa::Avx512 => unsafe { x86::avx512(block, init, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pointwise_block` asserted that this CPU supports AVX2 and FMA.
            Isa::Avx2 => unsafe { x86::avx2(block, init, out) },
            _ => portable(block, init, out),
        }
    }
}

impl Microkernels for f64 {
    fn pointwise_block(_: Isa, block: &Block<'_, f64>, init: Option<&[f64]>, out: &mut [f64]) {
        portable(block, init, out);
    }
}

/// Rows of pixels per portable microkernel call.
const PORTABLE_MR: usize = 4;

/// The portable path: the same panel order, `PORTABLE_MR x PANEL` tiles on arrays.
fn portable<T: Element>(block: &Block<'_, T>, init: Option<&[T]>, out: &mut [T]) {
    let Block {
        a,
        pixels,
        k0,
        k_block,
        k,
        n,
        packed,
    } = *block;
    for (panel, weights) in packed.chunks_exact(k * PANEL).enumerate() {
        let n0 = panel * PANEL;
        let width = PANEL.min(n - n0);
        let weights = &weights[k0 * PANEL..(k0 + k_block) * PANEL];
        let mut p0 = 0;
        while p0 < pixels {
            let rows = PORTABLE_MR.min(pixels - p0);
            let mut acc = [[T::ZERO; PANEL]; PORTABLE_MR];
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                let dst = &out[(p0 + r) * n + n0..][..width];
                let start: &[T] = match init {
                    Some([]) => &[],
                    Some(bias) => &bias[n0..n0 + width],
                    None => dst,
                };
                acc[..start.len()].copy_from_slice(start);
            }
            for (kk, w) in weights.chunks_exact(PANEL).enumerate() {
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    let av = a[(p0 + r) * k_block + kk];
                    for (acc, &wv) in acc.iter_mut().zip(w) {
                        *acc = *acc + av * wv;
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                out[(p0 + r) * n + n0..][..width].copy_from_slice(&acc[..width]);
            }
            p0 += rows;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{
        _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_set1_ps, _mm512_setzero_ps,
    };

    use super::{Block, PANEL};

    /// Pixels per AVX-512 microkernel call.
    const MR512: usize = 12;
    /// Pixels per AVX2 microkernel call.
    const MR256: usize = 6;

    /// Where a tile's outputs start: bias, nothing (zero), or the current output.
    #[derive(Clone, Copy)]
    enum Start {
        Bias(*const f32),
        Zero,
        Output,
    }

    fn start(init: Option<&[f32]>, n0: usize) -> Start {
        match init {
            // SAFETY of later reads: `n0 < n == bias.len()`, and reads stop at `n`.
            Some(bias) if !bias.is_empty() => Start::Bias(bias[n0..].as_ptr()),
            Some(_) => Start::Zero,
            None => Start::Output,
        }
    }

    /// Rows for the next tile when `left` pixels remain: tiles as even as possible, so 49 pixels
    /// at 12 per tile become 10 + 10 + 10 + 10 + 9, not 12 + 12 + 12 + 12 + 1 (a one-row tile
    /// is bound by weight loads, not by FMAs).
    fn tile_rows(left: usize, max: usize) -> usize {
        left.div_ceil(left.div_ceil(max))
    }

    /// `(1 << width) - 1`: the lanes of a panel that hold real output channels.
    fn lanes(width: usize) -> u16 {
        if width >= 16 {
            u16::MAX
        } else {
            (1u16 << width) - 1
        }
    }

    /// The AVX-512 path: tiles of `MR512` pixels by two panels (32 outputs), then one panel.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the block must satisfy `pointwise_block`'s checks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(block: &Block<'_, f32>, init: Option<&[f32]>, out: &mut [f32]) {
        let panels = block.n.div_ceil(PANEL);
        let mut panel = 0;
        while panel < panels {
            let pair = panel + 1 < panels;
            let mut p0 = 0;
            while p0 < block.pixels {
                let rows = tile_rows(block.pixels - p0, MR512);
                // SAFETY: forwarded from the caller; `rows <= MR512` pixels from `p0` and the
                // panels `panel` (and `panel + 1` when `pair`) are inside the block.
                unsafe {
                    if pair {
                        dispatch_rows_512::<2>(rows, block, init, out, p0, panel);
                    } else {
                        dispatch_rows_512::<1>(rows, block, init, out, p0, panel);
                    }
                }
                p0 += rows;
            }
            panel += if pair { 2 } else { 1 };
        }
    }

    /// Instantiates the microkernel for the number of rows left (`1..=MR512`).
    #[target_feature(enable = "avx512f")]
    unsafe fn dispatch_rows_512<const NP: usize>(
        rows: usize,
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        out: &mut [f32],
        p0: usize,
        panel: usize,
    ) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match rows {
                    // SAFETY: forwarded from `avx512`.
                    $($r => unsafe { tile_512::<$r, NP>(block, init, out, p0, panel) },)*
                    _ => unreachable!("at most MR512 rows per tile"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// One `MR x (16 * NP)` tile: `MR` pixels from `p0`, panels `panel .. panel + NP`.
    ///
    /// # Safety
    /// AVX-512F; `p0 + MR <= pixels`; `panel + NP <= ceil(n / 16)`; slice lengths as checked
    /// by `pointwise_block` (`a >= pixels * k_block`, `out >= pixels * n`, `packed` exact).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_512<const MR: usize, const NP: usize>(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        out: &mut [f32],
        p0: usize,
        panel: usize,
    ) {
        let Block {
            a,
            k0,
            k_block,
            k,
            n,
            packed,
            ..
        } = *block;
        let mut masks = [0u16; NP];
        for (j, mask) in masks.iter_mut().enumerate() {
            *mask = lanes(n - (panel + j) * PANEL);
        }
        let mut acc = [[_mm512_setzero_ps(); NP]; MR];
        let a = a[p0 * k_block..].as_ptr();
        let out = out[p0 * n..].as_mut_ptr();
        // SAFETY: every pointer offset below stays inside the slice it came from: rows
        // `r < MR` of `a` (stride `k_block`) and `out` (stride `n`), lanes masked to `n`,
        // packed rows `k0 .. k0 + k_block` of panels `panel + j < ceil(n / 16)`.
        unsafe {
            for j in 0..NP {
                let n0 = (panel + j) * PANEL;
                match start(init, n0) {
                    Start::Bias(bias) => {
                        let v = _mm512_maskz_loadu_ps(masks[j], bias);
                        for row in &mut acc {
                            row[j] = v;
                        }
                    }
                    Start::Zero => {}
                    Start::Output => {
                        for (r, row) in acc.iter_mut().enumerate() {
                            row[j] = _mm512_maskz_loadu_ps(masks[j], out.add(r * n + n0));
                        }
                    }
                }
            }
            let mut w = [core::ptr::null::<f32>(); NP];
            for (j, w) in w.iter_mut().enumerate() {
                *w = packed.as_ptr().add(((panel + j) * k + k0) * PANEL);
            }
            for kk in 0..k_block {
                let mut wv = [_mm512_setzero_ps(); NP];
                for j in 0..NP {
                    wv[j] = _mm512_loadu_ps(w[j].add(kk * PANEL));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * k_block + kk));
                    for j in 0..NP {
                        row[j] = _mm512_fmadd_ps(av, wv[j], row[j]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for j in 0..NP {
                    let dst = out.add(r * n + (panel + j) * PANEL);
                    _mm512_mask_storeu_ps(dst, masks[j], row[j]);
                }
            }
        }
    }

    /// The AVX2 path: tiles of `MR256` pixels by one panel (16 outputs, two `ymm`).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; the block must satisfy `pointwise_block`'s checks.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(block: &Block<'_, f32>, init: Option<&[f32]>, out: &mut [f32]) {
        let panels = block.n.div_ceil(PANEL);
        for panel in 0..panels {
            let mut p0 = 0;
            while p0 < block.pixels {
                let rows = tile_rows(block.pixels - p0, MR256);
                macro_rules! rows {
                    ($($r:literal)*) => {
                        match rows {
                            // SAFETY: forwarded from the caller.
                            $($r => unsafe { tile_256::<$r>(block, init, out, p0, panel) },)*
                            _ => unreachable!("at most MR256 rows per tile"),
                        }
                    };
                }
                rows!(1 2 3 4 5 6);
                p0 += rows;
            }
        }
    }

    /// One `MR x 16` tile with AVX2; partial panels go through a stack buffer.
    ///
    /// # Safety
    /// As `tile_512`, with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_256<const MR: usize>(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        out: &mut [f32],
        p0: usize,
        panel: usize,
    ) {
        let Block {
            a,
            k0,
            k_block,
            k,
            n,
            packed,
            ..
        } = *block;
        let n0 = panel * PANEL;
        let width = PANEL.min(n - n0);
        let mut start_rows = [[0.0f32; PANEL]; MR];
        for (r, row) in start_rows.iter_mut().enumerate() {
            let src: &[f32] = match init {
                Some([]) => &[],
                Some(bias) => &bias[n0..n0 + width],
                None => &out[(p0 + r) * n + n0..][..width],
            };
            row[..src.len()].copy_from_slice(src);
        }
        let a = a[p0 * k_block..].as_ptr();
        let w = packed[(panel * k + k0) * PANEL..].as_ptr();
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        // SAFETY: rows `r < MR` of `a` (stride `k_block`), packed rows `k0 .. k0 + k_block`
        // of panel `panel`, and the local arrays, all in bounds.
        unsafe {
            for (row, start) in acc.iter_mut().zip(&start_rows) {
                row[0] = _mm256_loadu_ps(start.as_ptr());
                row[1] = _mm256_loadu_ps(start.as_ptr().add(8));
            }
            for kk in 0..k_block {
                let w0 = _mm256_loadu_ps(w.add(kk * PANEL));
                let w1 = _mm256_loadu_ps(w.add(kk * PANEL + 8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r * k_block + kk));
                    row[0] = _mm256_fmadd_ps(av, w0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, w1, row[1]);
                }
            }
            for (r, &[lo, hi]) in acc.iter().enumerate() {
                let mut lanes = [0.0f32; PANEL];
                _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
                out[(p0 + r) * n + n0..][..width].copy_from_slice(&lanes[..width]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every path, over pixel counts around the tile heights and channel counts around the
    /// panel width, against a plain triple loop; outputs start as NaN so an unwritten cell fails.
    #[test]
    fn every_isa_matches_a_plain_product() {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            if !isa.is_supported() {
                continue;
            }
            for pixels in [1, 5, 6, 7, 12, 13, 25] {
                for (k, k0, k_block) in
                    [(1, 0, 1), (3, 0, 3), (17, 0, 17), (40, 8, 16), (33, 32, 1)]
                {
                    for n in [1, 3, 15, 16, 17, 33, 48, 64] {
                        let a = values(pixels * k_block, 1);
                        let w = values(k * n, 2);
                        let bias = values(n, 3);
                        let mut packed = vec![0.0; packed_len(k, n)];
                        pack(&w, k, n, &mut packed);
                        let block = Block {
                            a: &a,
                            pixels,
                            k0,
                            k_block,
                            k,
                            n,
                            packed: &packed,
                        };
                        for init in [Some(&bias[..]), Some(&[][..]), None] {
                            let prior = values(pixels * n, 4);
                            let mut out = match init {
                                None => prior.clone(),
                                Some(_) => vec![f32::NAN; pixels * n],
                            };
                            pointwise_block(isa, &block, init, &mut out);
                            for p in 0..pixels {
                                for o in 0..n {
                                    let mut expected = match init {
                                        Some([]) => 0.0,
                                        Some(b) => b[o],
                                        None => prior[p * n + o],
                                    };
                                    for kk in 0..k_block {
                                        expected += a[p * k_block + kk] * w[(k0 + kk) * n + o];
                                    }
                                    let got = out[p * n + o];
                                    assert!(
                                        (got - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                                        "{isa:?} pixels {pixels} k {k} n {n} at ({p}, {o}): {got} vs {expected}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packing_pads_the_last_panel_with_zeros() {
        let w: Vec<f32> = (0..2 * 17).map(|v| v as f32 + 1.0).collect();
        let mut packed = vec![f32::NAN; packed_len(2, 17)];
        pack(&w, 2, 17, &mut packed);
        assert_eq!(packed.len(), 2 * 2 * PANEL);
        assert_eq!(&packed[..3], &[1.0, 2.0, 3.0]);
        assert_eq!(packed[PANEL], 18.0); // row 1, column 0
        assert_eq!(packed[2 * PANEL], 17.0); // panel 1, row 0: column 16
        assert!(packed[2 * PANEL + 1..3 * PANEL].iter().all(|&v| v == 0.0));
    }
}

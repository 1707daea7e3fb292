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

/// One block of the pointwise stage: `pixels` rows of depthwise outputs for channels
/// `k0 .. k0 + KB` (row stride `KB`), against the packed weights of all `K` depthwise channels
/// and `N` outputs. Every size but the pixel count and the block's position is a const
/// generic, so the microkernels are compiled for the layer with literal strides.
pub struct Block<'a, T> {
    /// Depthwise outputs, `pixels x KB`.
    pub a: &'a [T],
    /// Number of pixels (rows of `a` and `out`).
    pub pixels: usize,
    /// First depthwise channel of the block.
    pub k0: usize,
    /// Packed weights, [`packed_len`]`(K, N)` values.
    pub packed: &'a [T],
}

/// Computes one [`Block`] into `out` (`pixels x N`) with the microkernel of `isa`. With
/// `init` `Some(bias)` each output starts from the bias (zero for an empty bias), else from its
/// current value, so a layer can sum over channel blocks.
///
/// # Panics
/// If `isa` is not supported by this CPU or the slices do not match the block's sizes.
#[inline]
pub fn pointwise_block<T: Microkernels, const KB: usize, const K: usize, const N: usize>(
    isa: Isa,
    block: &Block<'_, T>,
    init: Option<&[T]>,
    out: &mut [T],
) {
    assert!(block.a.len() >= block.pixels * KB, "a is too short");
    assert!(out.len() >= block.pixels * N, "out is too short");
    assert!(block.k0 + KB <= K, "channel block out of range");
    assert_eq!(
        block.packed.len(),
        packed_len(K, N),
        "packed weights have the wrong length"
    );
    if let Some(bias) = init {
        assert!(
            bias.is_empty() || bias.len() == N,
            "bias has the wrong length"
        );
    }
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    T::pointwise_block::<KB, K, N>(isa, block, init, out);
}

/// Element types with pointwise microkernels.
pub trait Microkernels: Element {
    /// See [`pointwise_block`]; arguments already checked.
    fn pointwise_block<const KB: usize, const K: usize, const N: usize>(
        isa: Isa,
        block: &Block<'_, Self>,
        init: Option<&[Self]>,
        out: &mut [Self],
    );
}

impl Microkernels for f32 {
    #[inline]
    fn pointwise_block<const KB: usize, const K: usize, const N: usize>(
        isa: Isa,
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        out: &mut [f32],
    ) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pointwise_block` asserted that this CPU supports AVX-512F and checked
            // the slice lengths.
            Isa::Avx512 => unsafe { x86::avx512::<KB, K, N>(block, init, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, for AVX2 and FMA.
            Isa::Avx2 => unsafe { x86::avx2::<KB, K, N>(block, init, out) },
            _ => portable::<f32, KB, K, N>(block, init, out),
        }
    }
}

impl Microkernels for f64 {
    #[inline]
    fn pointwise_block<const KB: usize, const K: usize, const N: usize>(
        _: Isa,
        block: &Block<'_, f64>,
        init: Option<&[f64]>,
        out: &mut [f64],
    ) {
        portable::<f64, KB, K, N>(block, init, out);
    }
}

/// Rows of pixels per portable microkernel call: `4 x 16` `f32` accumulators take 16 of the 32
/// vector registers of 64-bit Arm, leaving room for a row of weights.
const PORTABLE_MR: usize = 4;

/// The portable path: the same panel order, `MR x PANEL` tiles of fixed-size arrays, so the
/// accumulators stay in registers and the compiler vectorises across the panel's lanes.
fn portable<T: Element, const KB: usize, const K: usize, const N: usize>(
    block: &Block<'_, T>,
    init: Option<&[T]>,
    out: &mut [T],
) {
    let Block {
        a,
        pixels,
        k0,
        packed,
    } = *block;
    let a = &a.as_chunks::<KB>().0[..pixels];
    for (panel, weights) in packed.chunks_exact(K * PANEL).enumerate() {
        let n0 = panel * PANEL;
        let Some(weights) = weights[k0 * PANEL..]
            .as_chunks::<PANEL>()
            .0
            .first_chunk::<KB>()
        else {
            unreachable!("pointwise_block checked the channel block against the weights")
        };
        let mut p0 = 0;
        while p0 < pixels {
            let tile = PortableTile {
                a: &a[p0..],
                weights,
                init,
                p0,
                n0,
            };
            let rows = PORTABLE_MR.min(pixels - p0);
            match rows {
                1 => tile.run::<N, 1>(out),
                2 => tile.run::<N, 2>(out),
                3 => tile.run::<N, 3>(out),
                _ => tile.run::<N, PORTABLE_MR>(out),
            }
            p0 += rows;
        }
    }
}

/// One portable tile: pixels `p0 ..` (rows of `a` from `p0`), outputs `n0 .. n0 + PANEL`.
struct PortableTile<'a, T, const KB: usize> {
    a: &'a [[T; KB]],
    weights: &'a [[T; PANEL]; KB],
    init: Option<&'a [T]>,
    p0: usize,
    n0: usize,
}

impl<T: Element, const KB: usize> PortableTile<'_, T, KB> {
    /// `MR` pixels by one panel into `out` (`pixels x N`).
    #[inline(always)]
    fn run<const N: usize, const MR: usize>(&self, out: &mut [T]) {
        let width = PANEL.min(N - self.n0);
        let Some(a) = self.a.first_chunk::<MR>() else {
            unreachable!("the tile's rows are inside the block")
        };
        let mut acc = [[T::ZERO; PANEL]; MR];
        for (r, acc) in acc.iter_mut().enumerate() {
            let start: &[T] = match self.init {
                Some([]) => &[],
                Some(bias) => &bias[self.n0..self.n0 + width],
                None => &out[(self.p0 + r) * N + self.n0..][..width],
            };
            acc[..start.len()].copy_from_slice(start);
        }
        for (kk, w) in self.weights.iter().enumerate() {
            for (acc, a) in acc.iter_mut().zip(a) {
                let av = a[kk];
                for (acc, &wv) in acc.iter_mut().zip(w) {
                    *acc = *acc + av * wv;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            out[(self.p0 + r) * N + self.n0..][..width].copy_from_slice(&acc[..width]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{
        __m256, __m512, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };

    use super::{Block, PANEL};

    /// Pixels per AVX-512 microkernel call.
    const MR512: usize = 12;
    /// Pixels per AVX2 microkernel call.
    const MR256: usize = 6;

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

    /// The AVX-512 path: tiles of up to `MR512` pixels by two panels (32 outputs), then one.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the block must satisfy `pointwise_block`'s checks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<const KB: usize, const K: usize, const N: usize>(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let panels = N.div_ceil(PANEL);
        let bias = match init {
            Some(bias) if !bias.is_empty() => Some(bias.as_ptr()),
            _ => None,
        };
        let accumulate = init.is_none();
        let a = block.a.as_ptr();
        let out = out.as_mut_ptr();
        let mut panel = 0;
        while panel < panels {
            let pair = panel + 1 < panels;
            // SAFETY: panel `panel` (and `panel + 1` when `pair`) exists; its packed rows
            // `k0 .. k0 + KB` are inside `packed`, whose length `pointwise_block` checked.
            let w = unsafe { block.packed.as_ptr().add((panel * K + block.k0) * PANEL) };
            let mut p0 = 0;
            while p0 < block.pixels {
                let rows = tile_rows(block.pixels - p0, MR512);
                let tile = Tile {
                    // SAFETY: `p0 < pixels`: inside `a` (`pixels x KB`) and `out` (`pixels x N`).
                    a: unsafe { a.add(p0 * KB) },
                    out: unsafe { out.add(p0 * N) },
                    w,
                    bias,
                    accumulate,
                    panel,
                };
                // SAFETY: `rows <= MR512` pixels from `p0` are inside the block.
                unsafe {
                    if pair {
                        rows_512::<KB, K, N, 2>(rows, &tile);
                    } else {
                        rows_512::<KB, K, N, 1>(rows, &tile);
                    }
                }
                p0 += rows;
            }
            panel += if pair { 2 } else { 1 };
        }
    }

    /// Where one tile reads and writes.
    struct Tile {
        /// Row 0 of the tile's depthwise outputs (stride `KB`).
        a: *const f32,
        /// Row 0 of the tile's outputs (stride `N`).
        out: *mut f32,
        /// The first panel's packed rows `k0 ..` (the next panel is `K * PANEL` further).
        w: *const f32,
        /// The bias of output 0, if the tile starts from a bias.
        bias: Option<*const f32>,
        /// Whether the tile adds to the current outputs.
        accumulate: bool,
        /// The tile's first panel.
        panel: usize,
    }

    /// Instantiates the microkernel for the number of rows left (`1..=MR512`).
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_512<const KB: usize, const K: usize, const N: usize, const NP: usize>(
        rows: usize,
        tile: &Tile,
    ) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match rows {
                    // SAFETY: forwarded from `avx512`.
                    $($r => unsafe { tile_512::<KB, K, N, $r, NP>(tile) },)*
                    _ => unreachable!("at most MR512 rows per tile"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// One `MR x (16 * NP)` tile.
    ///
    /// # Safety
    /// AVX-512F; `tile` points inside the block's buffers for `MR` rows and `NP` panels.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_512<
        const KB: usize,
        const K: usize,
        const N: usize,
        const MR: usize,
        const NP: usize,
    >(
        tile: &Tile,
    ) {
        let mut masks = [0u16; NP];
        for (j, mask) in masks.iter_mut().enumerate() {
            *mask = lanes(N - (tile.panel + j) * PANEL);
        }
        // SAFETY: offsets stay inside the buffers per the caller's contract: rows `r < MR` of
        // `a` (stride `KB`) and `out` (stride `N`, lanes masked to `N`), packed rows `< KB` of
        // each panel, the bias masked to `N`.
        unsafe {
            let mut acc: [[__m512; NP]; MR] = [[_mm512_setzero_ps(); NP]; MR];
            for j in 0..NP {
                let n0 = (tile.panel + j) * PANEL;
                if let Some(bias) = tile.bias {
                    let v = _mm512_maskz_loadu_ps(masks[j], bias.add(n0));
                    for row in &mut acc {
                        row[j] = v;
                    }
                } else if tile.accumulate {
                    for (r, row) in acc.iter_mut().enumerate() {
                        row[j] = _mm512_maskz_loadu_ps(masks[j], tile.out.add(r * N + n0));
                    }
                }
            }
            for kk in 0..KB {
                let mut wv = [_mm512_setzero_ps(); NP];
                for (j, wv) in wv.iter_mut().enumerate() {
                    *wv = _mm512_loadu_ps(tile.w.add(j * K * PANEL + kk * PANEL));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*tile.a.add(r * KB + kk));
                    for j in 0..NP {
                        row[j] = _mm512_fmadd_ps(av, wv[j], row[j]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for j in 0..NP {
                    let dst = tile.out.add(r * N + (tile.panel + j) * PANEL);
                    _mm512_mask_storeu_ps(dst, masks[j], row[j]);
                }
            }
        }
    }

    /// The AVX2 path: tiles of up to `MR256` pixels by one panel (16 outputs, two `ymm`).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; the block must satisfy `pointwise_block`'s checks.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const KB: usize, const K: usize, const N: usize>(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        out: &mut [f32],
    ) {
        for panel in 0..N.div_ceil(PANEL) {
            let mut p0 = 0;
            while p0 < block.pixels {
                let rows = tile_rows(block.pixels - p0, MR256);
                macro_rules! rows {
                    ($($r:literal)*) => {
                        match rows {
                            // SAFETY: forwarded from the caller.
                            $($r => unsafe { tile_256::<KB, K, N, $r>(block, init, out, p0, panel) },)*
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
    /// AVX2 and FMA; `p0 + MR <= pixels`, `panel < ceil(N / 16)`, slices as checked by
    /// `pointwise_block`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_256<const KB: usize, const K: usize, const N: usize, const MR: usize>(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        out: &mut [f32],
        p0: usize,
        panel: usize,
    ) {
        let n0 = panel * PANEL;
        let width = PANEL.min(N - n0);
        let mut start_rows = [[0.0f32; PANEL]; MR];
        for (r, row) in start_rows.iter_mut().enumerate() {
            let src: &[f32] = match init {
                Some([]) => &[],
                Some(bias) => &bias[n0..n0 + width],
                None => &out[(p0 + r) * N + n0..][..width],
            };
            row[..src.len()].copy_from_slice(src);
        }
        let a = block.a[p0 * KB..].as_ptr();
        let w = block.packed[(panel * K + block.k0) * PANEL..].as_ptr();
        let mut acc: [[__m256; 2]; MR] = [[_mm256_setzero_ps(); 2]; MR];
        // SAFETY: rows `r < MR` of `a` (stride `KB`), packed rows `k0 .. k0 + KB` of panel
        // `panel`, and the local arrays, all in bounds.
        unsafe {
            for (row, start) in acc.iter_mut().zip(&start_rows) {
                row[0] = _mm256_loadu_ps(start.as_ptr());
                row[1] = _mm256_loadu_ps(start.as_ptr().add(8));
            }
            for kk in 0..KB {
                let w0 = _mm256_loadu_ps(w.add(kk * PANEL));
                let w1 = _mm256_loadu_ps(w.add(kk * PANEL + 8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r * KB + kk));
                    row[0] = _mm256_fmadd_ps(av, w0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, w1, row[1]);
                }
            }
            for (r, &[lo, hi]) in acc.iter().enumerate() {
                let mut lanes = [0.0f32; PANEL];
                _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
                out[(p0 + r) * N + n0..][..width].copy_from_slice(&lanes[..width]);
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

    /// Every path, over pixel counts around the tile heights and output counts around the panel
    /// width, against a plain triple loop; outputs start as NaN so an unwritten cell fails.
    fn check<const KB: usize, const K: usize, const N: usize>(k0: usize) {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            if !isa.is_supported() {
                continue;
            }
            for pixels in [1, 5, 6, 7, 12, 13, 25, 49] {
                let a = values(pixels * KB, 1);
                let w = values(K * N, 2);
                let bias = values(N, 3);
                let mut packed = vec![0.0; packed_len(K, N)];
                pack(&w, K, N, &mut packed);
                let block = Block {
                    a: &a,
                    pixels,
                    k0,
                    packed: &packed,
                };
                for init in [Some(&bias[..]), Some(&[][..]), None] {
                    let prior = values(pixels * N, 4);
                    let mut out = match init {
                        None => prior.clone(),
                        Some(_) => vec![f32::NAN; pixels * N],
                    };
                    pointwise_block::<f32, KB, K, N>(isa, &block, init, &mut out);
                    for p in 0..pixels {
                        for o in 0..N {
                            let mut expected = match init {
                                Some([]) => 0.0,
                                Some(b) => b[o],
                                None => prior[p * N + o],
                            };
                            for kk in 0..KB {
                                expected += a[p * KB + kk] * w[(k0 + kk) * N + o];
                            }
                            let got = out[p * N + o];
                            assert!(
                                (got - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                                "{isa:?} pixels {pixels} K {K} N {N} at ({p}, {o}): {got} vs {expected}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_isa_matches_a_plain_product() {
        check::<1, 1, 1>(0);
        check::<3, 3, 4>(0);
        check::<17, 17, 15>(0);
        check::<17, 17, 16>(0);
        check::<17, 17, 17>(0);
        check::<16, 40, 33>(8);
        check::<1, 33, 48>(32);
        check::<8, 16, 64>(8);
        check::<3, 3, 3>(0);
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

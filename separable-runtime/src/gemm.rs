//! The pointwise stage as a register-blocked matrix product over pre-packed weights.
//!
//! `out[p][n] = act(init[p][n] + sum over k of a[p][k] * w[k][n])` for a block of pixels `p`, a
//! block of depthwise channels `k` and all output channels `n`, the activation applied to the
//! sums in registers (a layer passes its own with its last block of channels only). The
//! weights are packed once, when the layer is built, into panels of [`PANEL`] output channels:
//! `[N / PANEL][K][PANEL]`, the last panel padded with zeros, so a microkernel reads each panel
//! front to back.
//!
//! Microkernels (one template per instruction set, instantiated per tile shape):
//! * AVX-512F: `MR x 32` (12 pixels, two panels: 24 `zmm` accumulators);
//! * AVX2 + FMA: `MR x 16` (6 pixels, one panel: 12 `ymm` accumulators);
//! * portable: `MR x 16` on arrays the compiler vectorises for the baseline target.
//!
//! [`Isa::detect`] picks the best one once per call site; every path computes the same sums
//! in the same order (`k` ascending), so they agree to rounding of the fused multiply-add.

use separable_shape::Activation;

use crate::Element;
use crate::kernel::activate_slice;

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

/// One block of the pointwise stage: `pixels` rows of depthwise outputs for the `kb` channels
/// `k0 .. k0 + kb` (row stride `kb`), against the packed weights of all `k` depthwise channels
/// and `n` outputs. Every size is a run-time value, so one compiled kernel serves every layer:
/// the kernels are compiled once, in this crate, not in the crate that declares the layer.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a, T> {
    /// Depthwise outputs, `pixels x kb`.
    pub a: &'a [T],
    /// Number of pixels (rows of `a` and `out`).
    pub pixels: usize,
    /// First depthwise channel of the block.
    pub k0: usize,
    /// Depthwise channels in the block (the row stride of `a`).
    pub kb: usize,
    /// Depthwise channels of the layer (`C·M`).
    pub k: usize,
    /// Output channels of the layer.
    pub n: usize,
    /// Packed weights, [`packed_len`]`(k, n)` values.
    pub packed: &'a [T],
}

/// Channel blocks with AVX-512 and AVX2 kernels compiled for their width (a literal row stride
/// of `a`, so the microkernel addresses every row from one pointer). Other widths run the same
/// kernels with the stride in a register. The planner prefers these widths.
pub const COMPILED_BLOCKS: [usize; 5] = [16, 32, 64, 128, 256];

/// Calls `f::<KB>(args)` with `KB` the channel block `kb` when it is one of
/// [`COMPILED_BLOCKS`], else `f::<0>(args)` (the width in a register): the one place the
/// compiled widths become instances, for every microkernel.
macro_rules! by_block {
    ($kb:expr, $f:ident $(<$ty:ty>)? ($($arg:expr),*)) => {
        match $kb {
            16 => $f::<$($ty,)? 16>($($arg),*),
            32 => $f::<$($ty,)? 32>($($arg),*),
            64 => $f::<$($ty,)? 64>($($arg),*),
            128 => $f::<$($ty,)? 128>($($arg),*),
            256 => $f::<$($ty,)? 256>($($arg),*),
            _ => $f::<$($ty,)? 0>($($arg),*),
        }
    };
}

/// Computes one [`Block`] into `out` (`pixels x n`) with the microkernel of `isa`. With
/// `init` `Some(bias)` each output starts from the bias (zero for an empty bias), else from its
/// current value, so a layer can sum over channel blocks. `activation` is applied to every sum
/// before it is stored: a layer of several blocks passes its own with the last one, and
/// [`Activation::None`] with the others.
///
/// # Panics
/// If `isa` is not supported by this CPU or the slices do not match the block's sizes.
#[inline]
pub fn pointwise_block<T: Microkernels>(
    isa: Isa,
    block: &Block<'_, T>,
    init: Option<&[T]>,
    activation: Activation,
    out: &mut [T],
) {
    let Block {
        a,
        pixels,
        k0,
        kb,
        k,
        n,
        packed,
    } = *block;
    assert!(
        pixels.checked_mul(kb).is_some_and(|len| a.len() >= len),
        "a is too short"
    );
    assert!(
        pixels.checked_mul(n).is_some_and(|len| out.len() >= len),
        "out is too short"
    );
    assert!(
        kb > 0 && k0.checked_add(kb).is_some_and(|end| end <= k),
        "channel block out of range"
    );
    assert_eq!(
        Some(packed.len()),
        separable_shape::packed_pointwise_len(k, n),
        "packed weights have the wrong length"
    );
    if let Some(bias) = init {
        assert!(
            bias.is_empty() || bias.len() == n,
            "bias has the wrong length"
        );
    }
    assert!(isa.is_supported(), "{isa:?} is not supported by this CPU");
    // SAFETY: every condition of `Microkernels::pointwise_block` was asserted above.
    unsafe { T::pointwise_block(isa, block, init, activation, out) };
}

/// Element types with pointwise microkernels.
pub trait Microkernels: Element {
    /// See [`pointwise_block`].
    ///
    /// # Safety
    /// `isa` is supported by this CPU and the arguments pass [`pointwise_block`]'s checks.
    unsafe fn pointwise_block(
        isa: Isa,
        block: &Block<'_, Self>,
        init: Option<&[Self]>,
        activation: Activation,
        out: &mut [Self],
    );
}

impl Microkernels for f32 {
    unsafe fn pointwise_block(
        isa: Isa,
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        activation: Activation,
        out: &mut [f32],
    ) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract: this CPU supports AVX-512F and the slices match
            // the block.
            Isa::Avx512 => unsafe { x86::avx512(block, init, activation, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, for AVX2 and FMA.
            Isa::Avx2 => unsafe { x86::avx2(block, init, activation, out) },
            _ => portable(block, init, activation, out),
        }
    }
}

impl Microkernels for f64 {
    unsafe fn pointwise_block(
        _: Isa,
        block: &Block<'_, f64>,
        init: Option<&[f64]>,
        activation: Activation,
        out: &mut [f64],
    ) {
        portable(block, init, activation, out);
    }
}

/// Rows of pixels per portable microkernel call: `4 x 16` `f32` accumulators take 16 of the 32
/// vector registers of 64-bit Arm, leaving room for a row of weights.
const PORTABLE_MR: usize = 4;

/// The portable path: the same panel order, `MR x PANEL` tiles with `MR` a const generic, so the
/// accumulators are fixed-size arrays that stay in registers and the compiler vectorises
/// across the panel's lanes. The channel blocks of [`COMPILED_BLOCKS`] also get their width as a
/// const generic: with a run-time width the product ran about four times slower.
fn portable<T: Element>(
    block: &Block<'_, T>,
    init: Option<&[T]>,
    activation: Activation,
    out: &mut [T],
) {
    by_block!(block.kb, portable_blocks<T>(block, init, activation, out));
}

/// [`portable`] for a channel block of `KB` channels, or of `block.kb` when `KB` is 0.
#[inline(always)]
fn portable_blocks<T: Element, const KB: usize>(
    block: &Block<'_, T>,
    init: Option<&[T]>,
    activation: Activation,
    out: &mut [T],
) {
    let Block {
        a,
        pixels,
        k0,
        kb,
        k,
        n,
        packed,
    } = *block;
    debug_assert!(KB == 0 || KB == kb);
    for (panel, weights) in packed.chunks_exact(k * PANEL).enumerate() {
        let weights = weights[k0 * PANEL..(k0 + kb) * PANEL]
            .as_chunks::<PANEL>()
            .0;
        let mut p0 = 0;
        while p0 < pixels {
            let tile = PortableTile {
                a,
                kb,
                n,
                weights,
                init,
                activation,
                p0,
                n0: panel * PANEL,
            };
            let rows = PORTABLE_MR.min(pixels - p0);
            match rows {
                1 => tile.run::<KB, 1>(out),
                2 => tile.run::<KB, 2>(out),
                3 => tile.run::<KB, 3>(out),
                _ => tile.run::<KB, PORTABLE_MR>(out),
            }
            p0 += rows;
        }
    }
}

/// `acc[r][l] += sum over kk of a[r][kk] * weights[kk][l]`, every size a literal.
#[inline(always)]
fn tile_product<T: Element, const KB: usize, const MR: usize>(
    acc: &mut [[T; PANEL]; MR],
    a: &[&[T; KB]; MR],
    weights: &[[T; PANEL]; KB],
) {
    for (kk, w) in weights.iter().enumerate() {
        for (acc, a) in acc.iter_mut().zip(a) {
            let av = a[kk];
            for (acc, &wv) in acc.iter_mut().zip(w) {
                *acc = *acc + av * wv;
            }
        }
    }
}

/// [`tile_product`] on one chunk of a channel block that has no width of its own, compiled
/// on its own: inlined into the loop over the chunks, the product kept its accumulators in
/// memory and ran scalar (a 28 x 28 x 96 -> 128 layer's pointwise stage took 3.3 ms instead
/// of 0.79, about the time of 128 channels, whose width is compiled).
#[inline(never)]
fn chunk_product<T: Element, const KB: usize, const MR: usize>(
    acc: &mut [[T; PANEL]; MR],
    a: &[&[T; KB]; MR],
    weights: &[[T; PANEL]; KB],
) {
    tile_product(acc, a, weights);
}

/// One portable tile: pixels `p0 ..` (rows of `a`, stride `kb`), outputs `n0 .. n0 + PANEL`.
struct PortableTile<'a, T> {
    a: &'a [T],
    kb: usize,
    n: usize,
    /// The panel's rows for the block's `kb` channels.
    weights: &'a [[T; PANEL]],
    init: Option<&'a [T]>,
    activation: Activation,
    p0: usize,
    n0: usize,
}

impl<T: Element> PortableTile<'_, T> {
    /// `MR` pixels by one panel into `out` (`pixels x n`); `KB` as in [`portable_blocks`].
    #[inline(always)]
    fn run<const KB: usize, const MR: usize>(&self, out: &mut [T]) {
        let (n, n0) = (self.n, self.n0);
        let width = PANEL.min(n - n0);
        let mut acc = [[T::ZERO; PANEL]; MR];
        for (r, acc) in acc.iter_mut().enumerate() {
            let start: &[T] = match self.init {
                Some([]) => &[],
                Some(bias) => &bias[n0..n0 + width],
                None => &out[(self.p0 + r) * n + n0..][..width],
            };
            acc[..start.len()].copy_from_slice(start);
        }
        if KB == 0 {
            // Other widths: chunks of 16 channels with a literal width, then the rest.
            const CHUNK: usize = 16;
            let kb = self.kb;
            let a: [&[T]; MR] = core::array::from_fn(|r| &self.a[(self.p0 + r) * kb..][..kb]);
            let (chunks, rest) = self.weights[..kb].as_chunks::<CHUNK>();
            for (i, weights) in chunks.iter().enumerate() {
                let a: [&[T; CHUNK]; MR] =
                    core::array::from_fn(|r| match a[r][i * CHUNK..].first_chunk::<CHUNK>() {
                        Some(chunk) => chunk,
                        None => unreachable!("a row holds kb channels"),
                    });
                chunk_product(&mut acc, &a, weights);
            }
            let done = chunks.len() * CHUNK;
            for (kk, w) in rest.iter().enumerate() {
                for (acc, a) in acc.iter_mut().zip(&a) {
                    let av = a[done + kk];
                    for (acc, &wv) in acc.iter_mut().zip(w) {
                        *acc = *acc + av * wv;
                    }
                }
            }
        } else {
            let rows = &self.a[self.p0 * KB..].as_chunks::<KB>().0;
            let (Some(a), Some(weights)) =
                (rows.first_chunk::<MR>(), self.weights.first_chunk::<KB>())
            else {
                unreachable!("pointwise_block checked the block's sizes")
            };
            let a: [&[T; KB]; MR] = core::array::from_fn(|r| &a[r]);
            tile_product(&mut acc, &a, weights);
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            activate_slice(self.activation, acc);
            out[(self.p0 + r) * n + n0..][..width].copy_from_slice(&acc[..width]);
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

    use super::{Activation, Block, PANEL};
    use crate::kernel::x86::{Clip256, Clip512};

    /// Pixels per AVX-512 microkernel call.
    const MR512: usize = 12;
    /// Pixels per AVX2 microkernel call.
    const MR256: usize = 6;

    /// The row stride of `a`: the literal `KB`, or the block's own when `KB` is 0 (the kernels
    /// for the other widths).
    #[inline(always)]
    fn stride<const KB: usize>(kb: usize) -> usize {
        if KB == 0 { kb } else { KB }
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

    /// The AVX-512 path, with the kernel compiled for the block's width if there is one.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the block must satisfy `pointwise_block`'s checks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        activation: Activation,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded.
        unsafe { by_block!(block.kb, avx512_kb(block, init, activation, out)) }
    }

    /// Tiles of up to `MR512` pixels by two panels (32 outputs), then one; `a`'s row stride
    /// is `stride::<KB>`.
    ///
    /// # Safety
    /// As [`avx512`], with `KB` 0 or the block's `kb`.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_kb<const KB: usize>(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        activation: Activation,
        out: &mut [f32],
    ) {
        let panels = block.n.div_ceil(PANEL);
        let bias = match init {
            Some(bias) if !bias.is_empty() => Some(bias.as_ptr()),
            _ => None,
        };
        let accumulate = init.is_none();
        let a = block.a.as_ptr();
        let out = out.as_mut_ptr();
        let kb = stride::<KB>(block.kb);
        let mut panel = 0;
        while panel < panels {
            let pair = panel + 1 < panels;
            // SAFETY: panel `panel` (and `panel + 1` when `pair`) exists; its packed rows
            // `k0 .. k0 + kb` are inside `packed`, whose length `pointwise_block` checked.
            let w = unsafe {
                block
                    .packed
                    .as_ptr()
                    .add((panel * block.k + block.k0) * PANEL)
            };
            let mut p0 = 0;
            while p0 < block.pixels {
                let rows = tile_rows(block.pixels - p0, MR512);
                let tile = Tile {
                    // SAFETY: `p0 < pixels`: inside `a` (`pixels x kb`) and `out` (`pixels x n`).
                    a: unsafe { a.add(p0 * kb) },
                    out: unsafe { out.add(p0 * block.n) },
                    w,
                    bias,
                    accumulate,
                    activation,
                    panel,
                    kb,
                    k: block.k,
                    n: block.n,
                };
                // SAFETY: `rows <= MR512` pixels from `p0` are inside the block.
                unsafe {
                    if pair {
                        rows_512::<KB, 2>(rows, &tile);
                    } else {
                        rows_512::<KB, 1>(rows, &tile);
                    }
                }
                p0 += rows;
            }
            panel += if pair { 2 } else { 1 };
        }
    }

    /// Where one tile reads and writes.
    struct Tile {
        /// Row 0 of the tile's depthwise outputs (stride `kb`).
        a: *const f32,
        /// Row 0 of the tile's outputs (stride `n`).
        out: *mut f32,
        /// The first panel's packed rows `k0 ..` (the next panel is `k * PANEL` further).
        w: *const f32,
        /// The bias of output 0, if the tile starts from a bias.
        bias: Option<*const f32>,
        /// Whether the tile adds to the current outputs.
        accumulate: bool,
        /// Applied to the sums before they are stored.
        activation: Activation,
        /// The tile's first panel.
        panel: usize,
        /// Depthwise channels in the block.
        kb: usize,
        /// Depthwise channels of the layer.
        k: usize,
        /// Output channels.
        n: usize,
    }

    /// Instantiates the microkernel for the number of rows left (`1..=MR512`).
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_512<const KB: usize, const NP: usize>(rows: usize, tile: &Tile) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match rows {
                    // SAFETY: forwarded from `avx512_kb`.
                    $($r => unsafe { tile_512::<KB, $r, NP>(tile) },)*
                    _ => unreachable!("at most MR512 rows per tile"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// One `MR x (16 * NP)` tile. `k` only offsets the second panel and `n` only strides the
    /// loads and stores of `out` at the start and end: the loop over the block's channels sees
    /// neither.
    ///
    /// # Safety
    /// AVX-512F; `tile` points inside the block's buffers for `MR` rows and `NP` panels.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_512<const KB: usize, const MR: usize, const NP: usize>(tile: &Tile) {
        let (kb, n) = (stride::<KB>(tile.kb), tile.n);
        let mut masks = [0u16; NP];
        for (j, mask) in masks.iter_mut().enumerate() {
            *mask = lanes(n - (tile.panel + j) * PANEL);
        }
        // SAFETY: offsets stay inside the buffers per the caller's contract: rows `r < MR` of
        // `a` (stride `kb`) and `out` (stride `n`, lanes masked to `n`), packed rows `< kb` of
        // each panel, the bias masked to `n`.
        unsafe {
            let mut w = [tile.w; NP];
            for (j, w) in w.iter_mut().enumerate() {
                *w = tile.w.add(j * tile.k * PANEL);
            }
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
                        row[j] = _mm512_maskz_loadu_ps(masks[j], tile.out.add(r * n + n0));
                    }
                }
            }
            for kk in 0..kb {
                let mut wv = [_mm512_setzero_ps(); NP];
                for (j, wv) in wv.iter_mut().enumerate() {
                    *wv = _mm512_loadu_ps(w[j].add(kk * PANEL));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*tile.a.add(r * kb + kk));
                    for j in 0..NP {
                        row[j] = _mm512_fmadd_ps(av, wv[j], row[j]);
                    }
                }
            }
            // No clip without an activation: its two instructions per sum made mb1's
            // pointwise stage (32 channels, few multiply-adds per sum) 7 % slower.
            let clip = if tile.activation == Activation::None {
                None
            } else {
                Some(Clip512::new(tile.activation))
            };
            for (r, row) in acc.iter().enumerate() {
                for j in 0..NP {
                    let dst = tile.out.add(r * n + (tile.panel + j) * PANEL);
                    let v = match clip {
                        Some(clip) => clip.apply(row[j]),
                        None => row[j],
                    };
                    _mm512_mask_storeu_ps(dst, masks[j], v);
                }
            }
        }
    }

    /// The AVX2 path, with the kernel compiled for the block's width if there is one.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; the block must satisfy `pointwise_block`'s checks.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        activation: Activation,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded.
        unsafe { by_block!(block.kb, avx2_kb(block, init, activation, out)) }
    }

    /// Tiles of up to `MR256` pixels by one panel (16 outputs, two `ymm`).
    ///
    /// # Safety
    /// As [`avx2`], with `KB` 0 or the block's `kb`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_kb<const KB: usize>(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        activation: Activation,
        out: &mut [f32],
    ) {
        for panel in 0..block.n.div_ceil(PANEL) {
            let mut p0 = 0;
            while p0 < block.pixels {
                let rows = tile_rows(block.pixels - p0, MR256);
                macro_rules! rows {
                    ($($r:literal)*) => {
                        match rows {
                            // SAFETY: forwarded from the caller.
                            $($r => unsafe { tile_256::<KB, $r>(block, init, activation, out, p0, panel) },)*
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
    /// AVX2 and FMA; `p0 + MR <= pixels`, `panel < ceil(n / 16)`, slices as checked by
    /// `pointwise_block`, `KB` 0 or the block's `kb`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_256<const KB: usize, const MR: usize>(
        block: &Block<'_, f32>,
        init: Option<&[f32]>,
        activation: Activation,
        out: &mut [f32],
        p0: usize,
        panel: usize,
    ) {
        let (kb, n) = (stride::<KB>(block.kb), block.n);
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
        let a = block.a[p0 * kb..].as_ptr();
        let w = block.packed[(panel * block.k + block.k0) * PANEL..].as_ptr();
        let mut acc: [[__m256; 2]; MR] = [[_mm256_setzero_ps(); 2]; MR];
        // SAFETY: rows `r < MR` of `a` (stride `kb`), packed rows `k0 .. k0 + kb` of panel
        // `panel`, and the local arrays, all in bounds.
        unsafe {
            for (row, start) in acc.iter_mut().zip(&start_rows) {
                row[0] = _mm256_loadu_ps(start.as_ptr());
                row[1] = _mm256_loadu_ps(start.as_ptr().add(8));
            }
            for kk in 0..kb {
                let w0 = _mm256_loadu_ps(w.add(kk * PANEL));
                let w1 = _mm256_loadu_ps(w.add(kk * PANEL + 8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r * kb + kk));
                    row[0] = _mm256_fmadd_ps(av, w0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, w1, row[1]);
                }
            }
            // As in `tile_512`.
            let clip = if activation == Activation::None {
                None
            } else {
                Some(Clip256::new(activation))
            };
            let clip = |v| match clip {
                Some(clip) => clip.apply(v),
                None => v,
            };
            for (r, &[lo, hi]) in acc.iter().enumerate() {
                let mut lanes = [0.0f32; PANEL];
                _mm256_storeu_ps(lanes.as_mut_ptr(), clip(lo));
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), clip(hi));
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

    /// Every path, over pixel counts around the tile heights and output counts around the panel
    /// width, starting from a bias, zero or the outputs, with and without an activation, against
    /// a plain triple loop; outputs start as NaN so an unwritten cell fails.
    fn check(kb: usize, k: usize, n: usize, k0: usize) {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            if !isa.is_supported() {
                continue;
            }
            for pixels in [1, 5, 6, 7, 12, 13, 25, 49] {
                // Sums past 6 and below 0, for both clips of `relu6`.
                let a: Vec<f32> = values(pixels * kb, 1).iter().map(|v| v * 8.0).collect();
                let w = values(k * n, 2);
                let bias = values(n, 3);
                let mut packed = vec![0.0; packed_len(k, n)];
                pack(&w, k, n, &mut packed);
                let block = Block {
                    a: &a,
                    pixels,
                    k0,
                    kb,
                    k,
                    n,
                    packed: &packed,
                };
                let starts = [Some(&bias[..]), Some(&[][..]), None];
                let activations = [Activation::None, Activation::Relu, Activation::Relu6];
                let cases = starts
                    .into_iter()
                    .flat_map(|init| activations.map(move |activation| (init, activation)));
                for (init, activation) in cases {
                    let prior = values(pixels * n, 4);
                    let mut out = match init {
                        None => prior.clone(),
                        Some(_) => vec![f32::NAN; pixels * n],
                    };
                    pointwise_block(isa, &block, init, activation, &mut out);
                    for p in 0..pixels {
                        for o in 0..n {
                            let mut expected = match init {
                                Some([]) => 0.0,
                                Some(b) => b[o],
                                None => prior[p * n + o],
                            };
                            for kk in 0..kb {
                                expected += a[p * kb + kk] * w[(k0 + kk) * n + o];
                            }
                            let mut expected = [expected];
                            activate_slice(activation, &mut expected);
                            let [expected] = expected;
                            let got = out[p * n + o];
                            assert!(
                                (got - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                                "{isa:?} {activation:?} pixels {pixels} kb {kb} k {k} n {n} at ({p}, {o}): {got} vs {expected}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Widths with and without a kernel of their own (`COMPILED_BLOCKS`), first and later
    /// blocks of the channels, output counts around the panel width.
    #[test]
    fn every_isa_matches_a_plain_product() {
        check(1, 1, 1, 0);
        check(3, 3, 4, 0);
        check(17, 17, 15, 0);
        check(17, 17, 16, 0);
        check(17, 17, 17, 0);
        check(16, 40, 33, 8);
        check(1, 33, 48, 32);
        check(8, 16, 64, 8);
        check(3, 3, 3, 0);
        check(32, 64, 40, 32);
        check(64, 64, 17, 0);
        check(128, 256, 33, 128);
        check(256, 256, 48, 0);
        check(48, 96, 20, 48);
    }

    #[test]
    #[should_panic(expected = "channel block out of range")]
    fn a_block_past_the_channels_is_refused() {
        let (a, packed, mut out) = ([0.0f32; 4], [0.0f32; 4 * PANEL], [0.0f32; 1]);
        let block = Block {
            a: &a,
            pixels: 1,
            k0: 2,
            kb: 4,
            k: 4,
            n: 1,
            packed: &packed,
        };
        pointwise_block(Isa::Portable, &block, None, Activation::None, &mut out);
    }

    /// A NaN among the depthwise outputs reaches every output of its pixel through the
    /// activation, on every path, while the sums around it clip to zero.
    #[test]
    fn nan_survives_the_activation() {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            if !isa.is_supported() {
                continue;
            }
            for (kb, n) in [(16, 32), (17, 33), (64, 20)] {
                let pixels = 13;
                let mut a = vec![1.0f32; pixels * kb];
                a[5 * kb + 3] = f32::NAN;
                let mut packed = vec![0.0; packed_len(kb, n)];
                pack(&vec![-1.0; kb * n], kb, n, &mut packed);
                let block = Block {
                    a: &a,
                    pixels,
                    k0: 0,
                    kb,
                    k: kb,
                    n,
                    packed: &packed,
                };
                for activation in [Activation::Relu, Activation::Relu6] {
                    let mut out = vec![1.0f32; pixels * n];
                    pointwise_block(isa, &block, Some(&[]), activation, &mut out);
                    for (i, &v) in out.iter().enumerate() {
                        if i / n == 5 {
                            assert!(v.is_nan(), "{isa:?} {activation:?} output {i}: {v}");
                        } else {
                            assert_eq!(v, 0.0, "{isa:?} {activation:?} output {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_compiled_widths_are_the_instances() {
        fn width<const KB: usize>() -> usize {
            KB
        }
        for kb in COMPILED_BLOCKS {
            assert_eq!(by_block!(kb, width()), kb);
        }
        for kb in [1, 8, 48, 512] {
            assert_eq!(by_block!(kb, width()), 0, "{kb}");
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

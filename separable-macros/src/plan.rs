//! The unroll policy: which output positions get straight-line code and which get loops.
//!
//! Three layouts of the depthwise stage, chosen per layer so the emitted code stays bounded.
//! Tiny layers have at most [`UNROLL_POSITIONS`] output positions and at most [`UNROLL_TAPS`]
//! taps in total:
//!
//! * **Planar** (tiny layers with few channels, such as the seed): at most [`PLANAR_CHANNELS`]
//!   depthwise channels, too few to vectorise across, and planes of at most
//!   [`PLANAR_POSITIONS`]. The input goes into zero-padded channel planes and each depthwise
//!   channel is one flat run over them, vectorised across positions (see [`Planar`] and
//!   `separable_runtime::planar`); strided layers compute the stride-1 run and read every
//!   stride-th position, which costs little at this size. One call with literal sizes.
//! * **Unrolled** (the other tiny layers, whose pixels fill vectors): every output position is
//!   its own block holding exactly the taps that land inside the input, all indices literal.
//! * **Strips** (everything else): the output is computed a strip of rows and a block of
//!   channels at a time (see [`Strips`]). In each row, the interior run, where every tap of the
//!   window is inside the input, is one call of the depthwise row microkernel with the window's
//!   input rows at literal offsets and every size a const generic (no bounds tests, no padding
//!   branches; the `KH x KW` taps unrolled by the compiler). The border, the few positions whose
//!   window overlaps the padding, is one loop that asks `tap_range` for the taps inside the
//!   input.
//!
//! Either way the emitted size is bounded by a constant independent of the image size, so a
//! 112 x 112 x 32 layer and a 7 x 7 x 1024 one expand to the same few dozen lines.

use std::ops::Range;

use separable_shape::{Axis, LayerSpec, tap_range};

/// Largest number of output positions (`OH * OW`) that are unrolled one by one.
pub(crate) const UNROLL_POSITIONS: usize = 64;
/// Largest number of tap statements an unrolled layer may emit.
pub(crate) const UNROLL_TAPS: usize = 256;

/// One spatial dimension as the code generator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AxisPlan {
    pub(crate) input: usize,
    pub(crate) output: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) dilation: usize,
    pub(crate) pad_before: usize,
}

impl AxisPlan {
    pub(crate) fn new(
        axis: Axis,
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
    ) -> Self {
        AxisPlan {
            input,
            output: axis.output,
            kernel,
            stride,
            dilation,
            pad_before: axis.pad_before,
        }
    }

    /// The taps of output position `o` that land inside the input.
    pub(crate) fn taps(&self, o: usize) -> Range<usize> {
        let (lo, hi) = tap_range(
            o,
            self.stride,
            self.dilation,
            self.pad_before,
            self.input,
            self.kernel,
        );
        lo..hi
    }

    /// The output positions whose every tap is inside the input; empty if there are none.
    ///
    /// From `o * stride >= pad_before` and
    /// `o * stride + (kernel - 1) * dilation - pad_before <= input - 1`.
    pub(crate) fn interior(&self) -> Range<usize> {
        let lo = self.pad_before.div_ceil(self.stride);
        let reach = (self.kernel - 1) * self.dilation;
        let limit = self.input - 1 + self.pad_before;
        if limit < reach {
            return 0..0;
        }
        let hi = ((limit - reach) / self.stride + 1).min(self.output);
        if lo < hi { lo..hi } else { 0..0 }
    }

    /// The number of in-bounds taps summed over all output positions.
    fn total_taps(&self) -> usize {
        (0..self.output).map(|o| self.taps(o).len()).sum()
    }
}

/// How the depthwise stage of a layer is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Depthwise {
    /// Channel planes vectorised across positions (see [`Planar`]).
    Planar(Planar),
    /// Every output position its own block; each pixel goes straight to the pointwise stage.
    Unrolled,
    /// Per output row, a run over the interior columns and one per border pixel, over strips
    /// of rows and blocks of channels that feed the pointwise matrix microkernel.
    InteriorBorder {
        /// The output columns whose windows have every column tap inside the input.
        cols: Range<usize>,
        strips: Strips,
    },
}

/// Largest depthwise channel count `C·M` computed in planes: wider pixels vectorise across
/// their channels (one AVX2 vector of `f32` holds 8).
pub(crate) const PLANAR_CHANNELS: usize = 8;
/// Largest plane, in positions, of a layer computed in planes: bounds the stack scratch of
/// `C·P + C·M·L` elements and the positions computed and thrown away (padding columns, and
/// the rows and columns a stride skips).
pub(crate) const PLANAR_POSITIONS: usize = 256;
/// Runs are a whole number of this many positions, so they split into full vectors
/// (`separable_runtime::planar::LANES`, which checks it).
pub(crate) const PLANAR_LANES: usize = 8;

/// The geometry of a tiny layer computed in channel planes (`separable_runtime::planar`): one
/// zero-padded plane of `plane` positions per input channel, row stride `row_stride`, and per
/// depthwise channel one run of `run` positions starting at the plane's origin; output
/// `(oh, ow)` is run position `oh·SH·row_stride + ow·SW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Planar {
    pub(crate) row_stride: usize,
    pub(crate) plane: usize,
    pub(crate) run: usize,
}

impl Planar {
    /// The planes of a tiny layer, or `None` when its pixels are wide enough to vectorise
    /// across channels (`C·M > PLANAR_CHANNELS`) or its planes would be larger than
    /// [`PLANAR_POSITIONS`].
    ///
    /// The row stride holds the left padding, the input and every column a window reaches; the
    /// run reaches the last output; the plane holds the padded input and every tap of the run.
    fn new(spec: &LayerSpec, rows: &AxisPlan, cols: &AxisPlan) -> Option<Planar> {
        if spec.input[2] * spec.multiplier > PLANAR_CHANNELS {
            return None;
        }
        // Saturating: the sizes of a valid layer are far from overflow, and a saturated plane
        // is too large anyway.
        let reach = |axis: &AxisPlan| {
            axis.output
                .saturating_sub(1)
                .saturating_mul(axis.stride)
                .saturating_add((axis.kernel - 1).saturating_mul(axis.dilation))
                .saturating_add(1)
        };
        let row_stride = cols.pad_before.saturating_add(cols.input).max(reach(cols));
        let last = rows
            .output
            .saturating_sub(1)
            .saturating_mul(rows.stride)
            .saturating_mul(row_stride)
            .saturating_add(cols.output.saturating_sub(1).saturating_mul(cols.stride));
        let run = last
            .saturating_add(1)
            .checked_next_multiple_of(PLANAR_LANES)
            .unwrap_or(usize::MAX);
        let taps = (rows.kernel - 1)
            .saturating_mul(rows.dilation)
            .saturating_mul(row_stride)
            .saturating_add((cols.kernel - 1).saturating_mul(cols.dilation));
        let plane = run.saturating_add(taps).max(
            rows.pad_before
                .saturating_add(rows.input)
                .saturating_mul(row_stride),
        );
        (plane <= PLANAR_POSITIONS).then_some(Planar {
            row_stride,
            plane,
            run,
        })
    }
}

/// How `forward` tiles a non-tiny layer: the depthwise output of `rows` output rows and
/// `channels` depthwise channels at a time is written to a stack buffer small enough for the
/// L1 or L2 cache, and the pointwise microkernel consumes it from there. The buffer holds
/// `rows * OW * channels` elements: at most [`SCRATCH_BYTES`] unless one row alone is larger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Strips {
    /// Output rows per strip.
    pub(crate) rows: usize,
    /// Depthwise channels per block (a multiple of the multiplier dividing `C·M`).
    pub(crate) channels: usize,
}

/// Stack bytes for one strip's depthwise output.
pub(crate) const SCRATCH_BYTES: usize = 64 * 1024;
/// Largest channel block of the first choice; wider layers are split so a strip keeps several
/// rows.
pub(crate) const MAX_CHANNEL_BLOCK: usize = 256;
/// Rows a strip of a widened channel block must still hold (see [`Strips::new`]).
pub(crate) const WIDE_BLOCK_ROWS: usize = 2;

impl Strips {
    /// Elements of the scratch buffer of one strip's depthwise output, a channel block of
    /// `rows x OW` pixels (the runtime's `StripPlan::scratch_len`).
    pub(crate) fn scratch_len(self, output_cols: usize) -> usize {
        self.rows * output_cols * self.channels
    }

    /// Elements of the stack buffer that holds the scratch: [`Self::scratch_len`] plus
    /// `SCRATCH_PAD`, room for the runtime to start the strip on a cache line.
    pub(crate) fn stack_len(self, output_cols: usize) -> usize {
        self.scratch_len(output_cols)
            .saturating_add(separable_shape::SCRATCH_PAD)
    }

    /// Channel blocks are `d·M` for a divisor `d` of `C`, the largest up to
    /// [`MAX_CHANNEL_BLOCK`]; all of `C·M` when that fits or when no divisor gives at least 64.
    /// A wider block replaces that one if [`WIDE_BLOCK_ROWS`] rows of it (or all rows, if
    /// fewer) still fit in [`SCRATCH_BYTES`]: the pointwise stage loads and stores every partial
    /// output sum once per block, and on 7 x 7 x 1024 -> 1024 four blocks of 256 took 6 % longer
    /// than one of 1024 in strips of 2 rows (AMD Zen 4).
    pub(crate) fn new(
        spec: &LayerSpec,
        output_cols: usize,
        output_rows: usize,
        elem_bytes: usize,
    ) -> Strips {
        let (c, m) = (spec.input[2], spec.multiplier);
        let all = c * m;
        let first = if all <= MAX_CHANNEL_BLOCK {
            all
        } else {
            let best = (1..=c.min(MAX_CHANNEL_BLOCK))
                .filter(|d| c % d == 0 && d * m <= MAX_CHANNEL_BLOCK)
                .max()
                .map_or(0, |d| d * m);
            if best >= 64 { best } else { all }
        };
        let wide_rows = output_rows.clamp(1, WIDE_BLOCK_ROWS);
        let widest = (1..=c)
            .rev()
            .filter(|d| c % d == 0)
            .map(|d| d * m)
            .find(|&kc| {
                wide_rows
                    .saturating_mul(output_cols)
                    .saturating_mul(kc)
                    .saturating_mul(elem_bytes)
                    <= SCRATCH_BYTES
            });
        let channels = widest.map_or(first, |widest| widest.max(first));
        let row_bytes = output_cols
            .saturating_mul(channels)
            .saturating_mul(elem_bytes)
            .max(1);
        let rows = (SCRATCH_BYTES / row_bytes).clamp(1, output_rows.max(1));
        Strips { rows, channels }
    }
}

/// The plan for one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) rows: AxisPlan,
    pub(crate) cols: AxisPlan,
    pub(crate) depthwise: Depthwise,
}

impl Plan {
    /// Elements of the buffer `forward` keeps on the stack in place of the depthwise tensor:
    /// one strip's block of depthwise outputs (and room to align it), the channel planes and
    /// runs (`C·P + C·M·L`), or one depthwise pixel.
    pub(crate) fn forward_scratch(&self, spec: &LayerSpec) -> usize {
        let (c, m) = (spec.input[2], spec.multiplier);
        match &self.depthwise {
            Depthwise::InteriorBorder { strips, .. } => strips.stack_len(self.cols.output),
            Depthwise::Planar(planar) => c * planar.plane + c * m * planar.run,
            Depthwise::Unrolled => c * m,
        }
    }

    pub(crate) fn new(spec: &LayerSpec, rows: Axis, cols: Axis, elem_bytes: usize) -> Plan {
        let rows = AxisPlan::new(
            rows,
            spec.input[0],
            spec.kernel[0],
            spec.stride[0],
            spec.dilation[0],
        );
        let cols = AxisPlan::new(
            cols,
            spec.input[1],
            spec.kernel[1],
            spec.stride[1],
            spec.dilation[1],
        );
        let tiny = rows.output.saturating_mul(cols.output) <= UNROLL_POSITIONS
            && rows.total_taps().saturating_mul(cols.total_taps()) <= UNROLL_TAPS;
        let depthwise =
            if let Some(planar) = tiny.then(|| Planar::new(spec, &rows, &cols)).flatten() {
                Depthwise::Planar(planar)
            } else if tiny {
                Depthwise::Unrolled
            } else {
                Depthwise::InteriorBorder {
                    cols: cols.interior(),
                    strips: Strips::new(spec, cols.output, rows.output, elem_bytes),
                }
            };
        Plan {
            rows,
            cols,
            depthwise,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use separable_shape::Padding;

    fn plan(spec: LayerSpec) -> Plan {
        let shape = spec.shape().unwrap();
        Plan::new(&spec, shape.rows, shape.cols, 4)
    }

    /// `interior()` is exactly the set of positions whose taps are all inside the input.
    #[test]
    fn interior_matches_a_scan_of_tap_ranges() {
        for input in 1..12 {
            for kernel in 1..6 {
                for stride in 1..4 {
                    for dilation in 1..3 {
                        for padding in [
                            Padding::Valid,
                            Padding::Same,
                            Padding::Explicit {
                                height: 2,
                                width: 0,
                            },
                        ] {
                            let spec = LayerSpec::new([input, input, 1], 1)
                                .with_kernel([kernel, kernel])
                                .with_stride([stride, stride])
                                .with_dilation([dilation, dilation])
                                .with_padding(padding);
                            let Ok(shape) = spec.shape() else { continue };
                            let axis = AxisPlan::new(shape.rows, input, kernel, stride, dilation);
                            let full: Vec<usize> = (0..axis.output)
                                .filter(|&o| axis.taps(o) == (0..kernel))
                                .collect();
                            let interior: Vec<usize> = axis.interior().collect();
                            assert_eq!(interior, full, "{spec:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_seed_is_planar() {
        let p = plan(LayerSpec::new([5, 5, 3], 4).with_padding(Padding::Same));
        // Rows of 1 + 5 + 1 positions; the run reaches output (4, 4) at 4 * 7 + 4 = 32, rounded
        // up to 40; the last tap of the run reads 39 + 2 * 7 + 2 = 55.
        assert_eq!(
            p.depthwise,
            Depthwise::Planar(Planar {
                row_stride: 7,
                plane: 56,
                run: 40
            })
        );
        // 2 + 3 + 3 + 3 + 2 in-bounds taps per axis.
        assert_eq!(p.rows.total_taps(), 13);
    }

    /// Wider pixels, or planes larger than [`PLANAR_POSITIONS`], stay unrolled; strides and
    /// dilations widen the rows and the run.
    #[test]
    fn planes_of_tiny_layers() {
        let p = plan(LayerSpec::new([5, 5, 9], 4).with_padding(Padding::Same));
        assert_eq!(p.depthwise, Depthwise::Unrolled);
        let p = plan(LayerSpec::new([5, 5, 4], 4).with_multiplier(3));
        assert_eq!(p.depthwise, Depthwise::Unrolled);
        let p = plan(
            LayerSpec::new([22, 22, 1], 2)
                .with_kernel([1, 1])
                .with_stride([3, 3]),
        );
        assert_eq!(p.depthwise, Depthwise::Unrolled);
        // 11 x 6, stride 2, dilation 2, TF SAME: 6 x 3 outputs, window reach 5, padding 2 + 2
        // rows and 1 + 2 columns; rows of max(1 + 6, 2 * 2 + 4 + 1) = 9 positions.
        let spec = LayerSpec::new([11, 6, 3], 4)
            .with_stride([2, 2])
            .with_dilation([2, 2])
            .with_padding(Padding::Same);
        let p = plan(spec);
        assert_eq!((p.rows.pad_before, p.cols.pad_before), (2, 1));
        // The run reaches 5 * 2 * 9 + 2 * 2 = 94 (96 rounded), its taps 4 * 9 + 4 further.
        assert_eq!(
            p.depthwise,
            Depthwise::Planar(Planar {
                row_stride: 9,
                plane: 136,
                run: 96
            })
        );
    }

    #[test]
    fn mobilenet_layers_loop_over_the_interior() {
        let p = plan(LayerSpec::new([112, 112, 32], 64).with_padding(Padding::Same));
        assert_eq!(
            p.depthwise,
            Depthwise::InteriorBorder {
                cols: 1..111,
                strips: Strips {
                    rows: 4,
                    channels: 32
                },
            }
        );
        // Stride 2 with TF SAME pads only after: row 0 is already interior.
        let p = plan(
            LayerSpec::new([112, 112, 64], 128)
                .with_stride([2, 2])
                .with_padding(Padding::Same),
        );
        assert_eq!(
            p.depthwise,
            Depthwise::InteriorBorder {
                cols: 0..55,
                strips: Strips {
                    rows: 4,
                    channels: 64
                },
            }
        );
    }

    /// The buffer `forward` keeps instead of the depthwise tensor, per layout.
    #[test]
    fn forward_scratch_per_layout() {
        // MobileNet block 1: strips of 4 rows of 112 pixels of 32 channels (56 KiB), and a
        // cache line to align them.
        let spec = LayerSpec::new([112, 112, 32], 64).with_padding(Padding::Same);
        assert_eq!(plan(spec).forward_scratch(&spec), 4 * 112 * 32 + 16);
        // The seed layer's channel planes and runs.
        let spec = LayerSpec::new([5, 5, 3], 4).with_padding(Padding::Same);
        let p = plan(spec);
        let Depthwise::Planar(planar) = p.depthwise else {
            panic!("{p:?} is not planar")
        };
        assert_eq!(p.forward_scratch(&spec), 3 * planar.plane + 3 * planar.run);
        // A tiny layer of wide pixels: one depthwise pixel.
        let spec = LayerSpec::new([2, 2, 16], 4)
            .with_multiplier(2)
            .with_padding(Padding::Same);
        let p = plan(spec);
        assert_eq!(p.depthwise, Depthwise::Unrolled);
        assert_eq!(p.forward_scratch(&spec), 32);
    }

    /// The strips of the MobileNet v1 shapes: strips of at most 64 KiB of `f32`, every channel
    /// in one block, since two rows of every channel fit.
    #[test]
    fn mobilenet_strips() {
        for (input, output, rows, channels) in [
            ([56, 56, 128], 128, 2, 128),
            ([28, 28, 256], 256, 2, 256),
            ([14, 14, 512], 512, 2, 512),
            ([7, 7, 1024], 1024, 2, 1024),
        ] {
            let spec = LayerSpec::new(input, output).with_padding(Padding::Same);
            let Depthwise::InteriorBorder { strips, .. } = plan(spec).depthwise else {
                panic!("{input:?} is not tiny")
            };
            assert_eq!(strips, Strips { rows, channels }, "{input:?}");
        }
        // A prime channel count has no block between 64 and 256: one block of all channels.
        let spec = LayerSpec::new([8, 8, 257], 4).with_padding(Padding::Same);
        assert_eq!(
            Strips::new(&spec, 8, 8, 4),
            Strips {
                rows: 7,
                channels: 257
            }
        );
        // Multipliers keep whole groups in a block.
        let spec = LayerSpec::new([8, 30, 96], 4).with_multiplier(3);
        assert_eq!(Strips::new(&spec, 30, 8, 4).channels, 144);
    }

    /// Blocks widen past 256 channels only while a strip keeps two rows (one if the output has
    /// one), and never narrow.
    #[test]
    fn channel_blocks_widen_while_two_rows_fit() {
        // (input, bytes per element, rows, channels)
        for (input, bytes, rows, channels) in [
            // Two rows of 9 x 768 f32 are 54 KiB: one block; 7 rows of 7 x 320.
            ([10, 9, 768], 4, 2, 768),
            ([7, 7, 320], 4, 7, 320),
            // Two rows of 24 x 768 f32 are 144 KiB, of 24 x 384 72 KiB: blocks of 256.
            ([10, 24, 768], 4, 2, 256),
            // f64 rows are twice as wide: two rows of 9 x 768 f64 do not fit, of 9 x 384 do.
            ([10, 9, 768], 8, 2, 384),
            // A single output row needs room for one row only.
            ([1, 80, 320], 4, 1, 160),
            ([1, 40, 320], 4, 1, 320),
            // A row wider than the scratch keeps the first choice (one row of 66 x 256).
            ([4, 66, 256], 4, 1, 256),
        ] {
            let spec = LayerSpec::new(input, 4).with_padding(Padding::Same);
            assert_eq!(
                Strips::new(&spec, input[1], input[0], bytes),
                Strips { rows, channels },
                "{input:?} of {bytes}-byte elements"
            );
        }
    }

    #[test]
    fn padding_wider_than_the_kernel_leaves_no_interior() {
        let p = plan(
            LayerSpec::new([2, 20, 1], 1)
                .with_padding(Padding::Explicit {
                    height: 5,
                    width: 0,
                })
                .with_kernel([3, 3]),
        );
        assert!(
            matches!(p.depthwise, Depthwise::InteriorBorder { .. }),
            "expected loops for {p:?}"
        );
        // Rows 0..=2 and 7..=9 see only padding, and no row has all three taps inside 2 rows.
        assert!(p.rows.interior().is_empty());
        assert_eq!(p.rows.taps(0), 0..0);
    }
}

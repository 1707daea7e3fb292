//! Weights baked in at compile time: `const fn`s that decode a safetensors file's bytes (from
//! `include_bytes!`) into a generated layer's weight arrays during constant evaluation.
//!
//! `separable_conv!` reads the file when it expands a layer declared with `weights:`, checks
//! every tensor's name, dtype and shape, and emits the byte offset of each; the generated code
//! checks that the file still has the length and header it was expanded against, and calls
//! these functions to fill `static` arrays. Conversions are those of the run-time loader
//! ([`crate::import`]): every dtype is read exactly as `f64`, then rounded to nearest for `f32`.

use crate::kernel::Aligned;
use crate::weights::packed_index;

/// Output channels per packed panel of pointwise weights.
const PANEL: usize = separable_shape::POINTWISE_PANEL;

/// The element type of a tensor in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileDtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
    /// IEEE binary16.
    F16,
    /// bfloat16: the top half of a binary32.
    BF16,
}

/// The length of the file's JSON header (its first 8 bytes, little-endian), for the generated
/// check that the file is still the one the macro read.
#[must_use]
pub const fn header_len(bytes: &[u8]) -> u64 {
    if bytes.len() < 8 {
        return u64::MAX;
    }
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

/// Element `index` of the tensor whose data starts at byte `offset`, exactly as `f64`.
const fn read(bytes: &[u8], offset: usize, dtype: FileDtype, index: usize) -> f64 {
    match dtype {
        FileDtype::F32 => {
            let i = offset + 4 * index;
            f32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as f64
        }
        FileDtype::F64 => {
            let i = offset + 8 * index;
            f64::from_le_bytes([
                bytes[i],
                bytes[i + 1],
                bytes[i + 2],
                bytes[i + 3],
                bytes[i + 4],
                bytes[i + 5],
                bytes[i + 6],
                bytes[i + 7],
            ])
        }
        FileDtype::F16 => {
            let i = offset + 2 * index;
            half::f16::from_bits(u16::from_le_bytes([bytes[i], bytes[i + 1]])).to_f64_const()
        }
        FileDtype::BF16 => {
            let i = offset + 2 * index;
            half::bf16::from_bits(u16::from_le_bytes([bytes[i], bytes[i + 1]])).to_f64_const()
        }
    }
}

/// One set of decoders per element type: `const fn`s cannot call trait methods.
/// (`f64 as f32` rounds to nearest, as the run-time loader's `Element::from_f64` does.)
macro_rules! decoders {
    ($t:ty, $depthwise:ident, $pointwise:ident, $vector:ident) => {
        /// Depthwise weights from PyTorch's `[C·M, 1, KH, KW]` to a layer's `[kh][kw][c·M + m]`.
        #[must_use]
        #[allow(clippy::cast_possible_truncation)]
        pub const fn $depthwise<const KH: usize, const KW: usize, const CM: usize>(
            bytes: &[u8],
            offset: usize,
            dtype: FileDtype,
        ) -> Aligned<[[[$t; CM]; KW]; KH]> {
            let mut out = Aligned([[[0.0; CM]; KW]; KH]);
            let mut kh = 0;
            while kh < KH {
                let mut kw = 0;
                while kw < KW {
                    let mut k = 0;
                    while k < CM {
                        let at = (k * KH + kh) * KW + kw;
                        out.0[kh][kw][k] = read(bytes, offset, dtype, at) as $t;
                        k += 1;
                    }
                    kw += 1;
                }
                kh += 1;
            }
            out
        }

        /// Pointwise weights from PyTorch's `[N, K, 1, 1]` to a layer's packed panels of
        /// `LEN` elements (the padding of the last panel stays zero).
        ///
        /// Writes the panels in order, so each step is one read and one store; the position
        /// is checked against the packed index (the layout's definition) once per panel row.
        #[must_use]
        #[allow(clippy::cast_possible_truncation)]
        pub const fn $pointwise<const LEN: usize>(
            bytes: &[u8],
            offset: usize,
            dtype: FileDtype,
            k_total: usize,
            n_total: usize,
        ) -> Aligned<[$t; LEN]> {
            let mut out = Aligned([0.0; LEN]);
            let mut dest = 0;
            let mut panel_start = 0;
            while panel_start < n_total {
                let mut k = 0;
                while k < k_total {
                    assert!(dest == packed_index(k, panel_start, k_total));
                    let mut n = panel_start;
                    while n < panel_start + PANEL {
                        if n < n_total {
                            out.0[dest] = read(bytes, offset, dtype, n * k_total + k) as $t;
                        }
                        dest += 1;
                        n += 1;
                    }
                    k += 1;
                }
                panel_start += PANEL;
            }
            out
        }

        /// A bias of `N` elements.
        #[must_use]
        #[allow(clippy::cast_possible_truncation)]
        pub const fn $vector<const N: usize>(
            bytes: &[u8],
            offset: usize,
            dtype: FileDtype,
        ) -> Aligned<[$t; N]> {
            let mut out = Aligned([0.0; N]);
            let mut i = 0;
            while i < N {
                out.0[i] = read(bytes, offset, dtype, i) as $t;
                i += 1;
            }
            out
        }
    };
}

decoders!(f32, depthwise_f32, pointwise_f32, vector_f32);
decoders!(f64, depthwise_f64, pointwise_f64, vector_f64);

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn bytes_of(values: &[f64], dtype: FileDtype) -> [u8; 64] {
        let mut out = [0u8; 64];
        let mut at = 0;
        for &v in values {
            let b: &[u8] = match dtype {
                FileDtype::F32 => &(v as f32).to_le_bytes(),
                FileDtype::F64 => &v.to_le_bytes(),
                FileDtype::F16 => &half::f16::from_f64(v).to_le_bytes(),
                FileDtype::BF16 => &half::bf16::from_f64(v).to_le_bytes(),
            };
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
        out
    }

    #[test]
    fn every_dtype_reads_exactly() {
        let values = [1.5, -0.25, 3.0, 1e-3];
        for dtype in [
            FileDtype::F32,
            FileDtype::F64,
            FileDtype::F16,
            FileDtype::BF16,
        ] {
            let b = bytes_of(&values, dtype);
            let got = vector_f64::<4>(&b, 0, dtype).0;
            for (g, v) in got.iter().zip(values) {
                let stored = match dtype {
                    FileDtype::F32 => f64::from(v as f32),
                    FileDtype::F64 => v,
                    FileDtype::F16 => half::f16::from_f64(v).to_f64(),
                    FileDtype::BF16 => half::bf16::from_f64(v).to_f64(),
                };
                assert_eq!(g.to_bits(), stored.to_bits(), "{dtype:?} {v}");
            }
        }
        // F64 to f32 rounds to nearest.
        let b = bytes_of(&[0.1], FileDtype::F64);
        assert_eq!(vector_f32::<1>(&b, 0, FileDtype::F64).0, [0.1_f32]);
    }

    #[test]
    fn layouts_match_the_run_time_loader() {
        // 2 channels, 1 x 2 kernel; 3 outputs: PyTorch element i holds i.
        let dw: [f64; 4] = [0.0, 1.0, 2.0, 3.0];
        let pw: [f64; 6] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let spec = separable_shape::LayerSpec::new([4, 4, 2], 3).with_kernel([1, 2]);
        let mut want_dw = [0.0f32; 4];
        let mut want_pw = [0.0f32; 32];
        let (dw32, pw32) = (dw.map(|v| v as f32), pw.map(|v| v as f32));
        crate::weights::load_pytorch(
            "t",
            &spec,
            (&dw32, None, &pw32, None),
            &mut want_dw,
            None,
            &mut want_pw,
            None,
        )
        .unwrap();
        let b = bytes_of(&dw, FileDtype::F32);
        let got_dw = depthwise_f32::<1, 2, 2>(&b, 0, FileDtype::F32);
        assert_eq!(got_dw.0.as_flattened().as_flattened(), &want_dw);
        let mut b = [0u8; 64];
        b[8..8 + 48].copy_from_slice(&bytes_of(&pw, FileDtype::F64)[..48]);
        let got_pw = pointwise_f32::<32>(&b, 8, FileDtype::F64, 2, 3);
        assert_eq!(got_pw.0, want_pw);
    }

    #[test]
    fn header_length_is_the_first_eight_bytes() {
        assert_eq!(header_len(&[3, 1, 0, 0, 0, 0, 0, 0, 9]), 259);
        assert_eq!(header_len(&[1, 2]), u64::MAX);
    }
}

//! Work spread over cores with `rayon`, when the `rayon` feature is on.

/// Calls `f(index, chunk)` for every `chunk_len`-element chunk of `out` (the last may be
/// shorter): on all cores with the `rayon` feature, in order on this thread without it.
///
/// # Panics
/// If `chunk_len` is zero.
pub fn for_each_chunk<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, chunk)| f(i, chunk));
    }
    #[cfg(not(feature = "rayon"))]
    for (i, chunk) in out.chunks_mut(chunk_len).enumerate() {
        f(i, chunk);
    }
}

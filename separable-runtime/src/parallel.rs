//! Work spread over cores with `rayon`, when the `rayon` feature is on.

/// Calls `f(scratch, index, chunk)` for every `chunk_len`-element chunk of `out` (the last may
/// be shorter): on all cores with the `rayon` feature, in order on this thread without it.
/// `scratch` is a buffer from `init`, made once per piece of work a thread takes (a few times
/// per call with `rayon`, once without), not once per chunk: a strip layer's scratch is tens of
/// KiB, and zeroing it for every strip cost a tenth of a parallel forward pass.
///
/// # Panics
/// If `chunk_len` is zero.
pub(crate) fn for_each_chunk_with<T: Send, S>(
    out: &mut [T],
    chunk_len: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each_init(init, |scratch, (i, chunk)| f(scratch, i, chunk));
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = init();
        for (i, chunk) in out.chunks_mut(chunk_len).enumerate() {
            f(&mut scratch, i, chunk);
        }
    }
}

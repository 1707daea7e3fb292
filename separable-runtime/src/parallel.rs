//! Work spread over cores with `rayon`, when the `rayon` feature is on.

/// Calls `f(scratch, index, chunk)` for every `chunk_len`-element chunk of `out` (the last may
/// be shorter): on all cores with the `rayon` feature, in order on this thread without it.
/// `scratch` is a buffer from `init`, made once per thread that takes a chunk, not once per
/// chunk: a strip layer's scratch is tens of KiB, and zeroing it for every strip cost a tenth
/// of a parallel forward pass.
///
/// With `rayon`, the calling thread takes chunks too, and the pool's other threads join it as
/// they wake, each taking the next chunk in order until none is left. A layer's forward pass
/// lasts a few hundred microseconds, and waking a sleeping thread can take a tenth of that:
/// the caller neither waits for its helpers to start nor sleeps while they finish their last
/// chunk (it spins for a while first, see [`SPIN`]).
///
/// # Panics
/// If `chunk_len` is zero, or `f` panics (on any thread: the panic reaches the caller once
/// every thread has stopped).
pub(crate) fn for_each_chunk_with<T: Send, S>(
    out: &mut [T],
    chunk_len: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    assert!(chunk_len > 0, "chunks of zero elements");
    #[cfg(feature = "rayon")]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Mutex, PoisonError};

        let chunks = out.len().div_ceil(chunk_len);
        let helpers = rayon::current_num_threads()
            .saturating_sub(1)
            .min(chunks.saturating_sub(1));
        let next = Mutex::new(out.chunks_mut(chunk_len).enumerate());
        // Helpers that have taken their last chunk (one that panicked never counts: the caller
        // stops spinning after `SPIN` and the scope passes the panic on).
        let stopped = AtomicUsize::new(0);
        let take_chunks = || {
            let mut scratch = None;
            loop {
                // The lock is held only to take a chunk (to the end of this statement; it
                // would last the whole body as the scrutinee of a `while let`).
                let taken = next.lock().unwrap_or_else(PoisonError::into_inner).next();
                let Some((i, chunk)) = taken else { break };
                f(scratch.get_or_insert_with(&init), i, chunk);
            }
        };
        rayon::in_place_scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(|_| {
                    take_chunks();
                    stopped.fetch_add(1, Ordering::Release);
                });
            }
            take_chunks();
            // A rayon worker calling this does not spin: its helpers may be queued on its own
            // deque, which only the scope's end runs. Any other caller spins, then sleeps there.
            if rayon::current_thread_index().is_none() {
                let start = std::time::Instant::now();
                while stopped.load(Ordering::Acquire) < helpers && start.elapsed() < SPIN {
                    std::hint::spin_loop();
                }
            }
        });
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = init();
        for (i, chunk) in out.chunks_mut(chunk_len).enumerate() {
            f(&mut scratch, i, chunk);
        }
    }
}

/// How long the calling thread spins for its helpers to finish before it sleeps until they do
/// (the `rayon` scope's wait). Longer than the few strips (tens of microseconds each) a helper
/// is still computing when the caller runs out of them, and than the time it takes a sleeping
/// thread to wake on a virtual machine, which is what sleeping would cost.
#[cfg(feature = "rayon")]
const SPIN: std::time::Duration = std::time::Duration::from_micros(500);

#[cfg(test)]
mod tests {
    use super::for_each_chunk_with;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Every chunk is visited once, with its index and a scratch made by `init`.
    fn fill_indices(len: usize, chunk_len: usize) -> Vec<usize> {
        let mut out = vec![usize::MAX; len];
        for_each_chunk_with(
            &mut out,
            chunk_len,
            || 7usize,
            |scratch, i, chunk| {
                assert_eq!(*scratch, 7);
                assert!(chunk.len() <= chunk_len && !chunk.is_empty());
                chunk.fill(i);
            },
        );
        out
    }

    #[test]
    fn every_chunk_is_visited_once_with_its_index() {
        for (len, chunk_len) in [(0, 3), (1, 3), (10, 3), (12, 3), (100, 1), (5, 10)] {
            let out = fill_indices(len, chunk_len);
            let expected: Vec<usize> = (0..len).map(|j| j / chunk_len).collect();
            assert_eq!(out, expected, "{len} elements in chunks of {chunk_len}");
        }
    }

    #[test]
    #[should_panic(expected = "chunks of zero elements")]
    fn zero_length_chunks_are_refused() {
        fill_indices(4, 0);
    }

    #[cfg(feature = "rayon")]
    mod rayon_pools {
        use super::{fill_indices, for_each_chunk_with};
        use alloc::vec;
        use alloc::vec::Vec;
        use rayon::prelude::*;

        fn pool(threads: usize) -> rayon::ThreadPool {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool")
        }

        #[test]
        fn every_chunk_is_visited_once_in_pools_of_any_size() {
            for threads in [1, 2, 3, 8] {
                let out = pool(threads).install(|| fill_indices(1000, 7));
                let expected: Vec<usize> = (0..1000).map(|j| j / 7).collect();
                assert_eq!(out, expected, "{threads} threads");
            }
        }

        /// Called from inside the pool's own threads, every one of them busy with a call of
        /// its own: the callers must not wait on helpers queued behind them (no spinning).
        #[test]
        fn calls_from_inside_a_busy_pool_finish() {
            let sums: Vec<usize> = pool(2).install(|| {
                (0..8usize)
                    .into_par_iter()
                    .map(|_| fill_indices(300, 5).iter().sum())
                    .collect()
            });
            let expected: usize = (0..300).map(|j| j / 5).sum();
            assert_eq!(sums, vec![expected; 8]);
        }

        /// The global pool, with at least two threads, so that the calling thread has a
        /// helper. Tests calling from outside a pool (the calling thread spins) use it.
        fn global_pool_of_two_or_more() {
            // Fails if a test built it first, with as many threads as cores.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build_global();
            assert!(rayon::current_num_threads() >= 2, "a helper thread");
        }

        #[test]
        fn every_chunk_is_visited_once_from_outside_the_pool() {
            global_pool_of_two_or_more();
            for _ in 0..50 {
                let out = fill_indices(1000, 7);
                let expected: Vec<usize> = (0..1000).map(|j| j / 7).collect();
                assert_eq!(out, expected);
            }
        }

        /// A panic on a helper thread reaches the caller, who does not wait forever for the
        /// thread that panicked; nor is a panic on the calling thread lost.
        #[test]
        fn a_panic_on_any_thread_reaches_the_caller() {
            global_pool_of_two_or_more();
            for panic_on_helpers in [true, false] {
                let result = std::panic::catch_unwind(|| {
                    let mut out = vec![0u8; 100];
                    for_each_chunk_with(
                        &mut out,
                        5,
                        || (),
                        |(), _, _| {
                            let helper = rayon::current_thread_index().is_some();
                            assert!(helper != panic_on_helpers, "a panic");
                            // Slow enough that the helpers wake before the chunks run out.
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        },
                    );
                });
                assert!(result.is_err(), "the panic was lost ({panic_on_helpers})");
            }
        }
    }
}

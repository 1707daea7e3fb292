//! Where tensors' elements and generated layers' weights live: [`Owned`] and [`Storage`].

use core::fmt;
use core::ops::{Deref, DerefMut};

#[cfg(feature = "alloc")]
use core::alloc::Layout;

use crate::kernel::{Aligned, Zeroable};

/// An owned, cache-line-aligned `A` (a nested array of `f32` or `f64`): on the heap with the
/// `alloc` feature, so megabyte-size tensors and weights never pass through the stack, and
/// inline (in the struct that holds it) without. The elements of a `Tensor`.
///
/// On the heap it is a `Box`, whose pointer the compiler knows to be aligned, dereferenceable
/// and unaliased, but allocated and copied by the non-generic functions of `heap`: an array
/// type adds to its user's build a cast and a `Box` drop, not an allocation path of its own.
/// Cloning copies the array, on the heap straight into the new allocation.
pub struct Owned<A>(
    #[cfg(feature = "alloc")] alloc::boxed::Box<Aligned<A>>,
    #[cfg(not(feature = "alloc"))] Aligned<A>,
);

impl<A: Zeroable> Owned<A> {
    /// Every element zero.
    #[must_use]
    pub fn zeroed() -> Self {
        #[cfg(feature = "alloc")]
        // SAFETY: `heap::allocate` returns memory from the global allocator with the layout of
        // `Aligned<A>` (or, for a zero size, a dangling pointer with its alignment), as
        // `Box::from_raw` requires. Every byte is zero, a valid `Aligned<A>`: `Zeroable` is
        // sealed and implemented only for `f32`, `f64` and nested arrays of them, for which
        // all-zero bits are `0.0`, and `Aligned<A>` holds only an `A`.
        let array = unsafe {
            alloc::boxed::Box::from_raw(
                heap::allocate(Layout::new::<Aligned<A>>(), true)
                    .cast::<Aligned<A>>()
                    .as_ptr(),
            )
        };
        #[cfg(not(feature = "alloc"))]
        // SAFETY: as above, all-zero bits are a valid `Aligned<A>`.
        let array = unsafe { core::mem::MaybeUninit::<Aligned<A>>::zeroed().assume_init() };
        Owned(array)
    }
}

impl<A: Zeroable + Copy> Owned<A> {
    /// A copy of `array`, never built on the stack with `alloc`.
    fn copy_of(array: &Aligned<A>) -> Self {
        #[cfg(feature = "alloc")]
        {
            let layout = Layout::new::<Aligned<A>>();
            let copy = heap::allocate(layout, false);
            // SAFETY: `array` is valid for reads of `layout.size()` initialised bytes and `copy`
            // for writes of as many (a zero size reads and writes nothing); they are distinct
            // allocations. The bytes of an `A: Copy` are a valid `A`, and `copy` comes from the
            // global allocator with `Aligned<A>`'s layout, as `Box::from_raw` requires.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (&raw const *array).cast::<u8>(),
                    copy.as_ptr(),
                    layout.size(),
                );
                Owned(alloc::boxed::Box::from_raw(
                    copy.cast::<Aligned<A>>().as_ptr(),
                ))
            }
        }
        #[cfg(not(feature = "alloc"))]
        Owned(*array)
    }
}

/// The allocation behind every [`Owned`] array, compiled once.
#[cfg(feature = "alloc")]
mod heap {
    use core::alloc::Layout;
    use core::num::NonZero;
    use core::ptr::NonNull;

    /// Memory for `layout` from the global allocator, zeroed or not; for a zero size, a
    /// dangling pointer aligned for `layout` (what `Box` holds for zero-size values). Aborts
    /// through `handle_alloc_error` if the allocator fails.
    pub(super) fn allocate(layout: Layout, zeroed: bool) -> NonNull<u8> {
        if layout.size() == 0 {
            let align = NonZero::new(layout.align()).unwrap_or(NonZero::<usize>::MIN);
            return NonNull::without_provenance(align);
        }
        // SAFETY: `layout` has a non-zero size, checked above.
        let ptr = unsafe {
            if zeroed {
                alloc::alloc::alloc_zeroed(layout)
            } else {
                alloc::alloc::alloc(layout)
            }
        };
        NonNull::new(ptr).unwrap_or_else(|| alloc::alloc::handle_alloc_error(layout))
    }
}

impl<A> Deref for Owned<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.0.0
    }
}

impl<A> DerefMut for Owned<A> {
    fn deref_mut(&mut self) -> &mut A {
        &mut self.0.0
    }
}

impl<A: Zeroable + Copy> Clone for Owned<A> {
    fn clone(&self) -> Self {
        Self::copy_of(&self.0)
    }
}

impl<A: PartialEq> PartialEq for Owned<A> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<A: fmt::Debug> fmt::Debug for Owned<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// A generated layer's weights or bias: [`Owned`], or borrowed from the program's read-only
/// data for its whole run.
///
/// The weights of a layer declared with `weights:` are static, and [`Storage::from_static`]
/// is a `const fn`, so such a layer can itself be a `static`. Writing through [`DerefMut`]
/// first copies static storage into owned storage (copy on write): the static array is never
/// written. Cloning static storage copies the reference.
pub struct Storage<A: 'static>(Repr<A>);

enum Repr<A: 'static> {
    Owned(Owned<A>),
    Static(&'static Aligned<A>),
}

impl<A: Zeroable> Storage<A> {
    /// Owned storage with every element zero.
    #[must_use]
    pub fn zeroed() -> Self {
        Storage(Repr::Owned(Owned::zeroed()))
    }

    /// The array, mutably, for a caller that overwrites all of it: static storage is replaced
    /// by zeroed owned storage, not copied as a write through [`DerefMut`] copies it.
    pub(crate) fn overwrite(&mut self) -> &mut A {
        if let Repr::Static(_) = self.0 {
            self.0 = Repr::Owned(Owned::zeroed());
        }
        match &mut self.0 {
            Repr::Owned(owned) => owned,
            // Replaced by owned storage just above.
            Repr::Static(_) => unreachable!("static storage is replaced before a write"),
        }
    }
}

impl<A> Storage<A> {
    /// Owned storage of `array`.
    #[must_use]
    pub const fn from_owned(array: Owned<A>) -> Self {
        Storage(Repr::Owned(array))
    }

    /// Borrows an array for the program's whole run: no copy, no allocation.
    #[must_use]
    pub const fn from_static(array: &'static Aligned<A>) -> Self {
        Storage(Repr::Static(array))
    }

    /// Whether this is static storage, not yet copied by a write.
    #[must_use]
    pub const fn is_static(&self) -> bool {
        matches!(self.0, Repr::Static(_))
    }
}

impl<A> Deref for Storage<A> {
    type Target = A;

    fn deref(&self) -> &A {
        match &self.0 {
            Repr::Owned(owned) => owned,
            Repr::Static(array) => &array.0,
        }
    }
}

impl<A: Zeroable + Copy> DerefMut for Storage<A> {
    /// Static storage is copied into owned storage first.
    fn deref_mut(&mut self) -> &mut A {
        if let Repr::Static(array) = self.0 {
            self.0 = Repr::Owned(Owned::copy_of(array));
        }
        match &mut self.0 {
            Repr::Owned(owned) => owned,
            // Replaced by owned storage just above.
            Repr::Static(_) => unreachable!("static storage is copied before a write"),
        }
    }
}

impl<A: Zeroable + Copy> Clone for Storage<A> {
    fn clone(&self) -> Self {
        match &self.0 {
            Repr::Owned(owned) => Storage(Repr::Owned(owned.clone())),
            Repr::Static(array) => Storage(Repr::Static(array)),
        }
    }
}

impl<A: PartialEq> PartialEq for Storage<A> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<A: fmt::Debug> fmt::Debug for Storage<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static WEIGHTS: Aligned<[[f32; 3]; 2]> = Aligned([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);

    #[test]
    fn static_storage_borrows_and_copies_on_write() {
        let mut s = Storage::from_static(&WEIGHTS);
        assert!(s.is_static());
        assert!(
            core::ptr::eq(&raw const *s, &raw const WEIGHTS.0),
            "static storage must not copy"
        );
        let shared = s.clone();
        assert!(shared.is_static());
        s[1][2] = 60.0;
        assert!(!s.is_static());
        assert_eq!(*s, [[1.0, 2.0, 3.0], [4.0, 5.0, 60.0]]);
        assert_eq!(WEIGHTS.0[1][2], 6.0, "the static array was written");
        assert_eq!(*shared, WEIGHTS.0);
        assert_ne!(s, shared);
        assert_eq!((&raw const *s).addr() % 64, 0);
    }

    #[test]
    fn owned_storage_is_zero_and_clones_by_value() {
        let mut a = Storage::<[f64; 5]>::zeroed();
        assert!(!a.is_static());
        assert!(a.iter().all(|v| v.to_bits() == 0));
        a[4] = 1.5;
        let b = a.clone();
        a[4] = 2.5;
        assert_eq!((b[4], a[4]), (1.5, 2.5));
        assert_eq!((&raw const *b).addr() % 64, 0);
    }

    #[test]
    #[cfg(feature = "alloc")]
    fn zeroed_arrays_are_zero_and_do_not_touch_the_stack() {
        // 16 MiB: far larger than a test thread's stack.
        let big = Owned::<[[f32; 1024]; 4096]>::zeroed();
        assert!(big.iter().flatten().all(|&v| v.to_bits() == 0));
        assert_eq!(big.as_ptr().addr() % 64, 0, "not aligned to a cache line");
    }

    #[test]
    fn empty_arrays_own_nothing_and_are_aligned() {
        let mut a = Owned::<[[f32; 0]; 3]>::zeroed();
        let b = a.clone();
        assert_eq!(*a, *b);
        assert_eq!((&raw mut *a).addr() % 64, 0);
        let s = Storage::<[f64; 0]>::zeroed();
        assert!(s.clone().is_empty());
    }

    #[test]
    #[cfg(feature = "std")]
    fn owned_arrays_move_and_are_shared_across_threads() {
        let mut a = Owned::<[[f32; 3]; 2]>::zeroed();
        a[1][2] = 4.0;
        let shared = &a;
        let sum = std::thread::scope(|s| s.spawn(|| shared.iter().flatten().sum::<f32>()).join());
        assert_eq!(sum.ok(), Some(4.0));
        let moved = std::thread::spawn(move || a[1][2]).join();
        assert_eq!(moved.ok(), Some(4.0));
    }

    #[test]
    #[cfg(feature = "std")]
    fn owned_storage_clones_without_touching_the_stack() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let mut a = Storage::<[[[f32; 64]; 112]; 112]>::zeroed();
                a[111][111][63] = 7.0;
                let b = a.clone();
                assert_eq!(b[111][111][63], 7.0);
                assert_eq!(b, a);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

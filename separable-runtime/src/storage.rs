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
/// On the heap, every array type shares one non-generic buffer ([`Heap`]): a layer's or a
/// tensor's type adds only pointer casts to its user's build, not an allocation, copy and drop
/// of its own. Cloning copies the array, on the heap straight into the new allocation.
pub struct Owned<A> {
    #[cfg(feature = "alloc")]
    heap: Heap,
    #[cfg(feature = "alloc")]
    array: core::marker::PhantomData<A>,
    #[cfg(not(feature = "alloc"))]
    array: Aligned<A>,
}

impl<A: Zeroable> Owned<A> {
    /// Every element zero.
    #[must_use]
    pub fn zeroed() -> Self {
        #[cfg(feature = "alloc")]
        return Owned {
            heap: Heap::zeroed(Layout::new::<Aligned<A>>()),
            array: core::marker::PhantomData,
        };
        #[cfg(not(feature = "alloc"))]
        // SAFETY: `Zeroable` is sealed and implemented only for `f32`, `f64` and nested
        // arrays of them, for which every bit zero is a valid value (`0.0`); `Aligned<A>`
        // holds only an `A` (its padding needs no value).
        Owned {
            array: unsafe { core::mem::MaybeUninit::<Aligned<A>>::zeroed().assume_init() },
        }
    }
}

impl<A: Zeroable + Copy> Owned<A> {
    /// A copy of `array`, never built on the stack with `alloc`.
    fn copy_of(array: &Aligned<A>) -> Self {
        #[cfg(feature = "alloc")]
        return Owned {
            heap: Heap::copy_of((&raw const *array).cast(), Layout::new::<Aligned<A>>()),
            array: core::marker::PhantomData,
        };
        #[cfg(not(feature = "alloc"))]
        Owned { array: *array }
    }
}

impl<A> Deref for Owned<A> {
    type Target = A;

    #[inline]
    fn deref(&self) -> &A {
        #[cfg(feature = "alloc")]
        // SAFETY: `heap` was allocated with the layout of `Aligned<A>` (`zeroed`, `copy_of`,
        // `clone`: the only constructors), so it is large and aligned enough for an `A`, which
        // sits at its start (`repr(C)`). It holds an initialised `A`: all zeros, valid for the
        // sealed `Zeroable` types, or a copy of one, and it is only written through `&mut A`.
        // The borrow of `self` keeps it alive and unaliased by writers.
        return unsafe { self.heap.ptr.cast::<A>().as_ref() };
        #[cfg(not(feature = "alloc"))]
        &self.array.0
    }
}

impl<A> DerefMut for Owned<A> {
    #[inline]
    fn deref_mut(&mut self) -> &mut A {
        #[cfg(feature = "alloc")]
        // SAFETY: as in `deref`; `&mut self` makes this the only reference to the buffer,
        // which `Owned` owns alone.
        return unsafe { self.heap.ptr.cast::<A>().as_mut() };
        #[cfg(not(feature = "alloc"))]
        &mut self.array.0
    }
}

impl<A: Zeroable + Copy> Clone for Owned<A> {
    fn clone(&self) -> Self {
        #[cfg(feature = "alloc")]
        return Owned {
            heap: self.heap.clone(),
            array: core::marker::PhantomData,
        };
        #[cfg(not(feature = "alloc"))]
        Owned { array: self.array }
    }
}

/// A heap buffer of one layout, its bytes initialised: the storage of every [`Owned`] array.
#[cfg(feature = "alloc")]
struct Heap {
    ptr: core::ptr::NonNull<u8>,
    layout: Layout,
}

// SAFETY: a `Heap` owns its buffer alone (no other pointer to it outlives a borrow of the
// `Heap`), and the buffer holds plain numbers, so it may move to and be shared across threads
// as the `Owned<A>` around it allows (`PhantomData<A>` carries `A`'s own `Send` and `Sync`).
#[cfg(feature = "alloc")]
unsafe impl Send for Heap {}
// SAFETY: as above; `&Heap` gives only reads.
#[cfg(feature = "alloc")]
unsafe impl Sync for Heap {}

#[cfg(feature = "alloc")]
impl Heap {
    /// A buffer of `layout`, every byte zero.
    fn zeroed(layout: Layout) -> Heap {
        Heap::allocate(layout, true)
    }

    /// A buffer of `layout` holding a copy of the `layout.size()` bytes at `src`.
    fn copy_of(src: *const u8, layout: Layout) -> Heap {
        let heap = Heap::allocate(layout, false);
        // SAFETY: `src` is valid for reads of `layout.size()` initialised bytes (the caller
        // passes a live array of this layout), and `heap.ptr` for writes of as many bytes;
        // they are distinct allocations. A zero size copies nothing from a dangling pointer.
        unsafe { core::ptr::copy_nonoverlapping(src, heap.ptr.as_ptr(), layout.size()) };
        heap
    }

    /// An allocation of `layout` (zeroed or not), or a dangling pointer aligned for it if its
    /// size is zero; aborts through `handle_alloc_error` if the allocator fails.
    fn allocate(layout: Layout, zeroed: bool) -> Heap {
        if layout.size() == 0 {
            // Aligned to `layout.align()`, never dereferenced for more than zero bytes.
            let ptr = core::ptr::NonNull::<u8>::without_provenance(
                core::num::NonZero::new(layout.align()).unwrap_or(core::num::NonZero::<usize>::MIN),
            );
            return Heap { ptr, layout };
        }
        // SAFETY: `layout` has a non-zero size, checked above.
        let ptr = unsafe {
            if zeroed {
                alloc::alloc::alloc_zeroed(layout)
            } else {
                alloc::alloc::alloc(layout)
            }
        };
        match core::ptr::NonNull::new(ptr) {
            Some(ptr) => Heap { ptr, layout },
            None => alloc::alloc::handle_alloc_error(layout),
        }
    }
}

#[cfg(feature = "alloc")]
impl Clone for Heap {
    fn clone(&self) -> Heap {
        Heap::copy_of(self.ptr.as_ptr(), self.layout)
    }
}

#[cfg(feature = "alloc")]
impl Drop for Heap {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: `ptr` came from the global allocator with this `layout` (`allocate`) and
            // is freed only here, once.
            unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
        }
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
}

impl<A> Storage<A> {
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

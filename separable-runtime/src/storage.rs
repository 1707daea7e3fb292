//! Where tensors' elements and generated layers' weights live: [`Owned`] and [`Storage`].

use core::fmt;
use core::ops::{Deref, DerefMut};

use crate::kernel::{Aligned, Zeroable};

/// An owned, cache-line-aligned `A` (a nested array of `f32` or `f64`): on the heap with the
/// `alloc` feature, so megabyte-size tensors and weights never pass through the stack, and
/// inline (in the struct that holds it) without. The elements of a `Tensor`.
///
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
        let array = crate::kernel::zeroed_box();
        #[cfg(not(feature = "alloc"))]
        // SAFETY: `Zeroable` is sealed and implemented only for `f32`, `f64` and nested
        // arrays of them, for which every bit zero is a valid value (`0.0`); `Aligned<A>`
        // holds only an `A` (its padding needs no value).
        let array = unsafe { core::mem::MaybeUninit::<Aligned<A>>::zeroed().assume_init() };
        Owned(array)
    }
}

impl<A: Zeroable + Copy> Owned<A> {
    /// A copy of `array`, never built on the stack with `alloc`.
    fn copy_of(array: &Aligned<A>) -> Self {
        #[cfg(feature = "alloc")]
        {
            let mut copy = crate::kernel::zeroed_box::<A>();
            // SAFETY: `array` and `copy` are live references to distinct places, each holding
            // one initialised `A`; `A: Copy`, so a bitwise copy is a valid value. (An
            // assignment would build the array on the stack first in unoptimised builds.)
            unsafe { core::ptr::copy_nonoverlapping(&raw const array.0, &raw mut copy.0, 1) };
            Owned(copy)
        }
        #[cfg(not(feature = "alloc"))]
        Owned(*array)
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

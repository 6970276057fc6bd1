//! The allocator [`export!`](crate::export) gives a tool component: the
//! first [`ARENA_BYTES`] of its allocations are handed out from a static
//! arena by bumping a pointer, the rest by the system allocator
//! (wasi-libc's `malloc`).
//!
//! Why: toolhost runs every call in a fresh instance that is dropped when
//! the call ends, so memory freed during a call is never reused by a later
//! one, and most calls allocate a few KiB. wasi-libc's `malloc` and `free`
//! (with Rust's shims over them) were 43% of the guest's time in a call
//! (`BENCHMARKS.md`, "Guest code at opt-level 3"); a bump is a few
//! instructions. A block freed in the arena is taken back only if it was
//! the last one handed out (a `String` grown and dropped in turn), so an
//! instance that serves many calls (another host, or a test) wastes at most
//! the arena, then allocates as before.
//!
//! Owns only the guest's heap: nothing here is seen by the host. Must not
//! be used where several threads allocate (wasm32-wasip2 components have
//! one).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Bytes bump-allocated before the system allocator takes over.
pub const ARENA_BYTES: usize = 64 * 1024;

#[repr(C, align(16))]
struct Bytes([u8; ARENA_BYTES]);

/// The arena allocator. Declared by [`export!`](crate::export); a crate
/// that wants another allocator says `export!(tools, system_allocator)`
/// and declares its own.
pub struct Arena {
    bytes: UnsafeCell<Bytes>,
    /// Offset of the first free byte.
    next: UnsafeCell<usize>,
}

// SAFETY: whoever makes one promises that one thread uses it (`new`), so
// the cells are never touched from two threads at once.
unsafe impl Sync for Arena {}

impl Arena {
    /// An empty arena (in the component's zeroed data, no start-up work).
    ///
    /// # Safety
    /// Only one thread may ever allocate from it: it is `Sync` so that it
    /// can be a `static`, and keeps no lock. A wasm32-wasip2 component has
    /// one thread; [`export!`](crate::export) declares it only there (never
    /// natively, where tests run on several threads, nor with wasm threads).
    #[allow(clippy::new_without_default)]
    pub const unsafe fn new() -> Self {
        Self {
            bytes: UnsafeCell::new(Bytes([0; ARENA_BYTES])),
            next: UnsafeCell::new(0),
        }
    }

    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    fn holds(&self, p: *mut u8) -> bool {
        (self.base()..self.base() + ARENA_BYTES).contains(&(p as usize))
    }

    /// A block of `layout` from the arena, if it fits.
    ///
    /// # Safety
    /// Single-threaded use only (see the module doc).
    unsafe fn bump(&self, layout: Layout) -> Option<*mut u8> {
        // SAFETY: one thread (the caller's contract).
        let next = unsafe { &mut *self.next.get() };
        let start = (self.base() + *next).checked_next_multiple_of(layout.align())?;
        let end = start.checked_add(layout.size())?;
        if end > self.base() + ARENA_BYTES {
            return None;
        }
        *next = end - self.base();
        Some(start as *mut u8)
    }
}

// SAFETY: blocks handed out never overlap: the arena's are below `next`
// until freed, the rest are the system allocator's.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contracts.
        unsafe { self.bump(layout).unwrap_or_else(|| System.alloc(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contracts; a block of the arena may have been
        // used and taken back, so it is zeroed here.
        unsafe {
            match self.bump(layout) {
                Some(p) => {
                    p.write_bytes(0, layout.size());
                    p
                }
                None => System.alloc_zeroed(layout),
            }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if !self.holds(p) {
            // SAFETY: `p` came from the system allocator.
            return unsafe { System.dealloc(p, layout) };
        }
        // SAFETY: one thread.
        let next = unsafe { &mut *self.next.get() };
        if p as usize + layout.size() == self.base() + *next {
            *next = p as usize - self.base();
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.holds(p) {
            // SAFETY: `p` came from the system allocator.
            return unsafe { System.realloc(p, layout, new_size) };
        }
        if new_size <= layout.size() {
            // Shrunk in place: its tail is lost, as a freed block's is.
            return p;
        }
        // SAFETY: one thread.
        let next = unsafe { &mut *self.next.get() };
        // The last block grows in place while it fits.
        if p as usize + layout.size() == self.base() + *next
            && (p as usize)
                .checked_add(new_size)
                .is_some_and(|end| end <= self.base() + ARENA_BYTES)
        {
            *next = p as usize + new_size - self.base();
            return p;
        }
        // SAFETY: `new_size` is valid for `layout.align()` (the caller's
        // contract); the old block is copied before it is freed.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            let q = self.alloc(new);
            if !q.is_null() {
                std::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
            q
        }
    }
}

/// The component's `cabi_realloc` while [`Arena`] is its allocator: what
/// the host calls to place a call's arguments and WASI's results in the
/// guest's memory. It allocates from the system allocator, never the
/// arena: wasi-libc frees some of what WASI returns (a directory entry's
/// name) with its own `free`, which must never see an arena block. Rust
/// frees the rest through [`Arena`], which hands blocks it did not make to
/// the system allocator.
///
/// # Safety
/// The canonical ABI's contract for `realloc`.
#[doc(hidden)]
pub unsafe fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a valid alignment, and `old` as
    // this function returned it, with its size.
    let p = unsafe {
        if old_len == 0 {
            System.alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            System.realloc(
                old,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if p.is_null() {
        std::process::abort();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_come_from_the_arena_aligned_and_apart_until_it_is_full() {
        let arena = Box::new(unsafe { Arena::new() });
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(8, 8));
            assert!(arena.holds(a) && arena.holds(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 3, "blocks overlap");
            // What does not fit comes from the system allocator, and goes
            // back to it.
            let big = arena.alloc(layout(ARENA_BYTES, 16));
            assert!(!big.is_null() && !arena.holds(big));
            big.write_bytes(7, ARENA_BYTES);
            arena.dealloc(big, layout(ARENA_BYTES, 16));
            // The arena keeps handing out what is left of it.
            let c = arena.alloc(layout(1024, 16));
            assert!(arena.holds(c) && c as usize >= b as usize + 8);
        }
    }

    #[test]
    fn the_last_block_is_taken_back_and_grows_in_place_and_zeroed_blocks_are_zero() {
        let arena = Box::new(unsafe { Arena::new() });
        unsafe {
            let a = arena.alloc(layout(16, 8));
            a.write_bytes(0xAB, 16);
            let grown = arena.realloc(a, layout(16, 8), 64);
            assert_eq!(grown, a, "the last block grows in place");
            assert_eq!(*grown.add(15), 0xAB);
            arena.dealloc(grown, layout(64, 8));
            // Its bytes are handed out again: zeroed when asked.
            let z = arena.alloc_zeroed(layout(64, 8));
            assert_eq!(z, a);
            assert!((0..64).all(|i| *z.add(i) == 0));
            // A block that is not the last moves when it grows, its bytes
            // with it.
            let next = arena.alloc(layout(8, 8));
            z.write_bytes(5, 64);
            let moved = arena.realloc(z, layout(64, 8), 128);
            assert_ne!(moved, z);
            assert!((0..64).all(|i| *moved.add(i) == 5));
            assert!(
                moved as usize >= next as usize + 8,
                "the moved block overlaps"
            );
            // Out of the arena, to the system allocator, when it does not fit.
            let out = arena.realloc(moved, layout(128, 8), 2 * ARENA_BYTES);
            assert!(!arena.holds(out));
            assert!((0..64).all(|i| *out.add(i) == 5));
            arena.dealloc(out, layout(2 * ARENA_BYTES, 8));
        }
    }

    #[test]
    fn a_size_past_the_address_space_is_refused_by_the_arena() {
        let arena = Box::new(unsafe { Arena::new() });
        let huge = Layout::from_size_align(isize::MAX as usize - 64, 16).unwrap();
        assert!(unsafe { arena.bump(huge) }.is_none());
    }
}

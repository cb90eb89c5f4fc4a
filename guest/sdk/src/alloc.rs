//! A bump allocator for plain `wasm32` builds of a module (feature `bump-alloc`).
//!
//! The host runs every call in a fresh instance (docs/abi.md, *Sandbox limits*), so a
//! module's heap lives for one call only: reusing freed memory buys nothing, and a
//! general-purpose allocator's bookkeeping is pure overhead on the hot path. This
//! allocator hands out memory by moving a pointer forward and never reuses it, except
//! for the most recent block: freeing it moves the pointer back, and growing it
//! (`realloc` of a `Vec` or `String` being built) extends it in place without a copy.
//!
//! It starts at `__heap_base`, where the linker ends the stack and data, and uses the
//! rest of the initial linear memory first; past that it grows the memory in chunks
//! so that `memory.grow` runs rarely. A module that declares enough initial memory
//! for a typical call (the linker's `--initial-memory`) never grows it: in a pooled
//! instance, growing costs page-protection changes on every call, while initial
//! memory is only reset. When growing fails (the host's memory
//! cap) it returns null, and Rust's allocation-error path traps: a module failure the
//! host reports, never corruption.
//!
//! Not for hosts that reuse an instance for many calls (JavaScript hosts do; the `js`
//! build therefore keeps the default allocator): memory would only grow.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The WebAssembly page size.
const PAGE: usize = 65536;
/// Memory is grown by at least this many pages (1 MiB) at a time.
const MIN_GROW_PAGES: usize = 16;

/// The allocator; one instance is the module's `#[global_allocator]`.
///
/// `wasm32-unknown-unknown` without the `atomics` target feature is single-threaded;
/// the atomics (relaxed loads and stores, compiled to plain memory accesses) only
/// make the static `Sync`.
pub struct BumpAllocator {
    /// The first free byte; 0 before the first allocation.
    next: AtomicUsize,
    /// One past the last byte this allocator owns.
    end: AtomicUsize,
}

impl BumpAllocator {
    /// An allocator that has handed out nothing yet.
    pub const fn new() -> Self {
        BumpAllocator { next: AtomicUsize::new(0), end: AtomicUsize::new(0) }
    }

    /// Reserves a block for `layout` and returns its address.
    fn bump(&self, layout: Layout) -> Option<usize> {
        if self.end.load(Relaxed) == 0 {
            // First use: from the heap's start to the end of linear memory is ours.
            let end = memory_bytes()?;
            self.next.store(heap_base().min(end), Relaxed);
            self.end.store(end, Relaxed);
        }
        // Two rounds at most: the second only when linear memory had been grown by
        // other code, so that the grown pages did not extend this allocator's region.
        for _ in 0..2 {
            let start = align_up(self.next.load(Relaxed), layout.align())?;
            let block_end = start.checked_add(layout.size())?;
            if self.extend_to(block_end)? {
                self.next.store(block_end, Relaxed);
                return Some(start);
            }
        }
        None
    }

    /// Makes sure the free region reaches `new_end`, growing linear memory when
    /// needed. `Some(true)`: it does. `Some(false)`: the memory grew elsewhere, and the
    /// free region now starts over at the grown pages (the caller recomputes).
    /// `None`: linear memory cannot grow.
    fn extend_to(&self, new_end: usize) -> Option<bool> {
        let end = self.end.load(Relaxed);
        if new_end <= end {
            return Some(true);
        }
        let needed = (new_end - end).div_ceil(PAGE);
        let old_pages = grow(needed.max(MIN_GROW_PAGES)).or_else(|| grow(needed))?;
        let grown_start = old_pages.checked_mul(PAGE)?;
        let memory_end = memory_bytes()?;
        self.end.store(memory_end, Relaxed);
        if grown_start == end {
            Some(true)
        } else {
            self.next.store(grown_start, Relaxed);
            Some(false)
        }
    }
}

impl Default for BumpAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block returned lies inside linear memory, above the stack and static
// data (at or past `__heap_base`) and below `end`, which is never beyond the memory's
// current size; it is aligned as `layout` asks, and overlaps
// no live block: `next` only moves forward, except back to the start of the most
// recent block when that block is freed or resized in place, and no other live block
// lies past that start. All address arithmetic is checked; failure returns null.
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(addr) => addr as *mut u8,
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the most recent block is reclaimed; everything else goes when the
        // instance is dropped.
        let addr = ptr as usize;
        if addr.checked_add(layout.size()) == Some(self.next.load(Relaxed)) {
            self.next.store(addr, Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let addr = ptr as usize;
        if addr.checked_add(layout.size()) == Some(self.next.load(Relaxed)) {
            // The most recent block: resize it in place when the region allows.
            if let Some(new_end) = addr.checked_add(new_size)
                && self.extend_to(new_end) == Some(true)
            {
                self.next.store(new_end, Relaxed);
                return ptr;
            }
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: the caller guarantees `new_size > 0`, and the alignment comes from a
        // valid layout.
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are live and distinct (the new one was bumped past
            // every live block), and each holds at least `min(old, new)` bytes.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size)) };
        }
        new_ptr
    }
}

/// `addr` rounded up to `align` (a power of two, as `Layout` guarantees).
fn align_up(addr: usize, align: usize) -> Option<usize> {
    Some(addr.checked_add(align - 1)? & !(align - 1))
}

/// Grows linear memory by `pages`; returns its previous size in pages.
fn grow(pages: usize) -> Option<usize> {
    let old = core::arch::wasm32::memory_grow(0, pages);
    (old != usize::MAX).then_some(old)
}

/// The current size of linear memory in bytes (`None` at the full 4 GiB, which a
/// 32-bit address cannot express).
fn memory_bytes() -> Option<usize> {
    core::arch::wasm32::memory_size(0).checked_mul(PAGE)
}

/// Where the heap starts: the first byte past the stack and static data, as the
/// linker lays out a wasm32 module (a symbol it defines; nothing else allocates
/// there in a module using this allocator).
fn heap_base() -> usize {
    unsafe extern "C" {
        static __heap_base: u8;
    }
    // Only the symbol's address is taken; the byte is never read.
    core::ptr::addr_of!(__heap_base) as usize
}

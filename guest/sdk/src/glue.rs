//! The ABI v1 export glue: buffers in linear memory and the `(ptr << 32) | len` packing.
//!
//! With the bump allocator's `GlobalAlloc` implementation (`alloc`), this is the only
//! `unsafe` code of a module. The contract it relies on (docs/abi.md, *Exports*): the
//! host writes the snapshot into a buffer it got from `reconcile_alloc`, hands
//! that buffer over to `reconcile` (which frees it), and frees each returned result
//! with `reconcile_free(ptr, len)`. Every buffer, whichever side frees it, is one
//! allocation of `len` bytes with alignment 1, so `reconcile_free` can rebuild its
//! layout from `len` alone. The host is trusted not to free twice; what it passes in is
//! still bounds-checked against linear memory so that a host bug turns into an error
//! outcome rather than memory corruption inside the module.
#![allow(unsafe_code)]

use crate::abi::{Manifest, Outcome};
use crate::run::manifest_json;
use std::alloc::{Layout, alloc, dealloc};

/// The non-zero address returned for an empty buffer; nothing is allocated for it.
const EMPTY_BUFFER: usize = 1;

/// `reconcile_alloc`: allocates `len` bytes, or returns 0 when that is impossible.
pub fn alloc_buffer(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else { return 0 };
    if len == 0 {
        return EMPTY_BUFFER as i32;
    }
    let Ok(layout) = Layout::from_size_align(len, 1) else { return 0 };
    // SAFETY: `layout` has a non-zero size, as `alloc` requires. A null result
    // (out of memory) becomes 0, which the host reads as failure.
    let ptr = unsafe { alloc(layout) };
    ptr as usize as i32
}

/// `reconcile_free`: frees a buffer from [`alloc_buffer`] or a returned result.
pub fn free_buffer(ptr: i32, len: i32) {
    let Some((addr, len)) = checked_region(ptr, len) else { return };
    if len == 0 {
        return;
    }
    // SAFETY: by the contract above, `addr` was allocated with exactly this layout
    // (size `len`, alignment 1) and is freed once; `checked_region` proved the
    // region lies inside linear memory and that `len` is a valid layout size.
    unsafe { dealloc(addr as *mut u8, Layout::from_size_align_unchecked(len, 1)) }
}

/// `reconcile_manifest`: the manifest JSON, to be freed by the host.
pub fn manifest(manifest: fn() -> Manifest) -> i64 {
    hand_over(manifest_json(manifest))
}

/// `reconcile`: takes ownership of the snapshot buffer, returns the outcome JSON
/// that `run` (`run_json` or `run_json_raw` with the module's function) gives.
pub fn reconcile(ptr: i32, len: i32, run: impl FnOnce(&[u8]) -> String) -> i64 {
    let output = match take_buffer(ptr, len) {
        Some(input) => run(&input),
        None => {
            let message =
                format!("reconcile was given a buffer outside linear memory (ptr {}, len {len})", ptr as u32);
            serde_json::to_string(&Outcome::error(message, false)).unwrap_or_default()
        }
    };
    hand_over(output)
}

/// Leaks `output` to the host and packs its address and length.
fn hand_over(output: String) -> i64 {
    let bytes = output.into_bytes().into_boxed_slice();
    let len = bytes.len() as u64;
    let addr = Box::into_raw(bytes) as *mut u8 as usize as u64;
    ((addr << 32) | len) as i64
}

/// Takes back ownership of a buffer from [`alloc_buffer`].
fn take_buffer(ptr: i32, len: i32) -> Option<Box<[u8]>> {
    let (addr, len) = checked_region(ptr, len)?;
    if len == 0 {
        return Some(Box::default());
    }
    // SAFETY: by the contract above, `addr` is an allocation of exactly `len` bytes
    // with alignment 1 from `alloc_buffer`, handed over to us; that is the layout of a
    // `Box<[u8]>` of length `len`, so the box frees it correctly when dropped.
    let slice = std::ptr::slice_from_raw_parts_mut(addr as *mut u8, len);
    Some(unsafe { Box::from_raw(slice) })
}

/// The region `[ptr, ptr + len)` as host-independent numbers, if it is non-null and
/// lies entirely inside linear memory.
fn checked_region(ptr: i32, len: i32) -> Option<(usize, usize)> {
    // Wasm32 addresses are unsigned; the ABI passes them as i32 bit patterns.
    let addr = ptr as u32 as usize;
    let len = usize::try_from(len).ok()?;
    let end = addr.checked_add(len)?;
    (addr != 0 && end <= memory_bytes() && len <= isize::MAX as usize).then_some((addr, len))
}

fn memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
}

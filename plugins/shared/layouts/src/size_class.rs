//! A size-class allocator for format plugins.
//!
//! A format plugin allocates and frees many small blocks per record (the
//! sample's strings and lists, which the component ABI hands to the host and
//! frees after every `feed`), with the same sizes over and over. The
//! default `wasm32-unknown-unknown` allocator, dlmalloc, does general
//! bookkeeping (bins, coalescing) for each of them. Here blocks up to 4 KiB
//! are rounded up to a power of two and recycled through one free list per
//! size: an allocation or a free is a few instructions. Larger blocks (the
//! chunks of text, long records) go to the system allocator as before.
//!
//! Small blocks are kept for reuse instead of being returned, so the memory
//! they use is the most ever live at once: for a streaming parser, about one
//! chunk's records. WebAssembly memory never shrinks anyway.
//!
//! A plugin opts in with
//! `#[global_allocator] static A: layouts::SizeClassAlloc = layouts::SizeClassAlloc::new();`
//! (WebAssembly only: plugins are single-threaded, which this relies on).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Smallest class: 16 bytes (room for the free-list link, and the largest
/// alignment Rust asks for on wasm32).
const MIN_SHIFT: u32 = 4;
/// Largest class: 4 KiB.
const MAX_SHIFT: u32 = 12;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;

/// See the module documentation.
pub struct SizeClassAlloc {
    /// Head of each class's free list; a free block's first word links to the next.
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: only for single-threaded targets (wasm32 without the atomics
// feature), where no two calls can overlap.
unsafe impl Sync for SizeClassAlloc {}

impl SizeClassAlloc {
    /// An allocator with empty free lists.
    pub const fn new() -> Self {
        Self {
            free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }
}

impl Default for SizeClassAlloc {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a layout, or `None` for blocks the system allocator serves.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align());
    if size > 1 << MAX_SHIFT || layout.align() > 1 << MIN_SHIFT {
        return None;
    }
    let shift = usize::BITS - (size.max(1) - 1).leading_zeros();
    Some(shift.saturating_sub(MIN_SHIFT) as usize)
}

fn class_layout(class: usize) -> Layout {
    // SAFETY: a power of two between 16 and 4096, aligned to 16.
    unsafe { Layout::from_size_align_unchecked(1 << (class as u32 + MIN_SHIFT), 1 << MIN_SHIFT) }
}

unsafe impl GlobalAlloc for SizeClassAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`); free blocks hold a link.
        unsafe {
            let free = &mut *self.free.get();
            let head = free[c];
            if head.is_null() {
                return System.alloc(class_layout(c));
            }
            free[c] = *(head as *mut *mut u8);
            head
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            return unsafe { System.dealloc(ptr, layout) };
        };
        // SAFETY: `ptr` is a block of class `c` (allocated with this layout),
        // at least 16 bytes and 16-aligned, no longer in use.
        unsafe {
            let free = &mut *self.free.get();
            *(ptr as *mut *mut u8) = free[c];
            free[c] = ptr;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` (same alignment, non-zero size).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // Still fits the block it has.
            (Some(a), Some(b)) if a == b => ptr,
            // Both large: let the system allocator grow in place if it can.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => unsafe {
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_to_power_of_two_classes() {
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class(l(1, 1)), Some(0));
        assert_eq!(class(l(16, 8)), Some(0));
        assert_eq!(class(l(17, 1)), Some(1));
        assert_eq!(class(l(4096, 1)), Some(8));
        assert_eq!(class(l(4097, 1)), None);
        assert_eq!(class(l(8, 32)), None);
    }

    #[test]
    fn blocks_are_recycled_and_realloc_keeps_the_contents() {
        let a = SizeClassAlloc::new();
        let l = Layout::from_size_align(24, 8).unwrap();
        unsafe {
            let p = a.alloc(l);
            p.write_bytes(7, 24);
            let q = a.realloc(p, l, 30);
            assert_eq!(p, q, "same class: same block");
            let r = a.realloc(q, Layout::from_size_align(30, 8).unwrap(), 5000);
            assert_eq!(*r.add(23), 7);
            a.dealloc(r, Layout::from_size_align(5000, 8).unwrap());
            let s = a.alloc(l);
            a.dealloc(s, l);
            assert_eq!(a.alloc(l), s, "a freed block is reused");
        }
    }
}

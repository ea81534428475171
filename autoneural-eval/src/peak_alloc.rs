//! The binary's global allocator: mimalloc, wrapped to count live heap bytes and their
//! peak, so benchmarks can report the peak memory of one forward pass in the same process
//! (CPU backends keep every tensor on the heap; GPU memory is not seen).
//!
//! mimalloc rather than glibc malloc because activations are tens of MiB: glibc serves those
//! with fresh `mmap`s, so every layer paid page faults and page zeroing on its output
//! (measured: MobileNetV5-300M at 768^2 ran ~15% faster on mimalloc, which reuses them).
//! Installed with `#[global_allocator] static A: PeakAlloc = PeakAlloc::new();`.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as System;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct PeakAlloc {
    current: AtomicUsize,
    peak: AtomicUsize,
}

static INSTALLED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" {
    /// From the mimalloc library the `mimalloc` crate links.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

impl PeakAlloc {
    pub const fn new() -> Self {
        Self { current: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Registers this allocator as the one [`current_bytes`] and [`peak_bytes`] read, and
    /// tells mimalloc to keep freed memory instead of returning it to the OS after 10 ms:
    /// a model allocates the same activation sizes layer after layer, and re-faulting (and
    /// the kernel re-zeroing) those pages cost ~5% of a MobileNetV5 forward pass.
    pub fn install(&'static self) {
        INSTALLED.store(self as *const Self as usize, Ordering::SeqCst);
        // `mi_option_purge_delay` is option 15 in both mimalloc v2 and v3; -1 = never purge.
        unsafe { mi_option_set(15, -1) };
    }

    fn add(&self, n: usize) {
        let now = self.current.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

impl Default for PeakAlloc {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.add(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        self.current.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.add(layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                self.add(new_size - layout.size());
            } else {
                self.current.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

fn installed() -> Option<&'static PeakAlloc> {
    let p = INSTALLED.load(Ordering::SeqCst);
    // SAFETY: only `install(&'static self)` stores a non-zero value.
    (p != 0).then(|| unsafe { &*(p as *const PeakAlloc) })
}

/// Live heap bytes (None when no counting allocator is installed).
pub fn current_bytes() -> Option<usize> {
    installed().map(|a| a.current.load(Ordering::Relaxed))
}

/// Peak live heap bytes since the last [`reset_peak`].
pub fn peak_bytes() -> Option<usize> {
    installed().map(|a| a.peak.load(Ordering::Relaxed))
}

/// Starts a new peak window at the current live size.
pub fn reset_peak() {
    if let Some(a) = installed() {
        a.peak.store(a.current.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

//! Allocator settings for training. Every step allocates and frees tensors of tens of MB;
//! glibc serves those with fresh `mmap`s and returns them on free, so each step page-faults its
//! memory in again (perf: ~8% of samples in the kernel's fault and page-clearing paths, plus the
//! zeroing). Keeping large blocks on the heap and not trimming it reuses the same pages:
//! `trainer bench` (NT-Xent, batch 128, 64 px, 2 threads) went from 38.5 to 55.4 images/s,
//! three alternating runs each. Process-wide, so only the `trainer` binary calls it.

/// Keep freed memory for reuse instead of returning it to the system (glibc only; a no-op
/// elsewhere).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before the work starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

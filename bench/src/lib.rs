//! Shared helpers for hubcap's benchmarks: an allocation-counting allocator and timing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting allocations so benchmarks can report allocations per event.
pub struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations made so far by this process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// CPU time (user + system) this process has used, in seconds.
pub fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc_rusage>::uninit();
    // SAFETY: getrusage writes a complete rusage struct into the pointer we pass.
    let rc = unsafe { getrusage(0, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage returned 0, so the struct is initialised.
    let usage = unsafe { usage.assume_init() };
    let secs = |t: [i64; 2]| t[0] as f64 + t[1] as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The leading part of `struct rusage` on 64-bit Linux (two timevals), padded to its full size.
#[repr(C)]
struct libc_rusage {
    ru_utime: [i64; 2],
    ru_stime: [i64; 2],
    _rest: [i64; 14],
}

extern "C" {
    fn getrusage(who: i32, usage: *mut libc_rusage) -> i32;
}

/// The tokio scheduler a drain contestant runs on, chosen like hubcap's `[runtime]
/// worker_threads` so that every Rust contestant is measured on the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// One thread: hubcap's default (`worker_threads = 1`).
    CurrentThread,
    /// A thread per CPU: what `#[tokio::main]` gives.
    MultiThread,
}

impl Scheduler {
    pub fn runtime(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Scheduler::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Scheduler::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        }
        .enable_all()
        .build()
    }
}

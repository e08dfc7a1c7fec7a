//! The two things the test suite needs `unsafe` for, behind safe functions, so the product
//! package (its tests and benches included) can forbid `unsafe_code` outright:
//!
//! - changing the process environment (the AWS SDK reads credentials and endpoints from it),
//!   which Rust 2024 makes `unsafe` because another thread may read the environment at the same
//!   time. [`set_env`] checks that no other thread runs before it writes, so it cannot race.
//! - counting heap allocations ([`CountingAllocator`]), which is a `GlobalAlloc` implementation.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// Threads of this process other than the calling one and the main thread, as Linux lists
/// them (`None` when it cannot tell).
fn other_threads() -> Option<Vec<String>> {
    let own = std::fs::read_link("/proc/thread-self").ok()?;
    let own = own.file_name()?.to_str()?.to_owned();
    let main = std::process::id().to_string();
    let mut others = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let tid = task.ok()?.file_name().into_string().ok()?;
        if tid != own && tid != main {
            others.push(tid);
        }
    }
    Some(others)
}

/// Sets (`Some`) or removes (`None`) environment variables. Call it first thing in a test,
/// before the async runtime starts: it panics when any thread exists besides the caller and the
/// main thread. nextest runs every test in a process of its own, where the main thread is the
/// test harness's, which only waits for the test's result; or the test runs on it.
pub fn set_env(vars: &[(&str, Option<&str>)]) {
    let others = other_threads();
    assert_eq!(
        others.as_deref(),
        Some(&[][..]),
        "set_env must run before any other thread starts (threads besides the caller and main: {others:?})"
    );
    for (key, value) in vars {
        // SAFETY: no thread but this one and the harness's waiting main thread exists (checked
        // above), so nothing reads the environment while it changes.
        unsafe {
            match value {
                Some(value) => std::env::set_var(key, value),
                None => std::env::remove_var(key),
            }
        }
    }
}

/// Static credentials and region for the AWS SDK (moto accepts any), and no instance-metadata
/// look-ups; `endpoints` are further variables such as `AWS_ENDPOINT_URL_STS`. The same rule as
/// [`set_env`]: call it before any other thread exists.
pub fn use_test_aws_credentials(endpoints: &[(&str, &str)]) {
    let mut vars = vec![
        ("AWS_ACCESS_KEY_ID", Some("testing")),
        ("AWS_SECRET_ACCESS_KEY", Some("testing")),
        ("AWS_REGION", Some("us-east-1")),
        ("AWS_EC2_METADATA_DISABLED", Some("true")),
    ];
    vars.extend(endpoints.iter().map(|(key, value)| (*key, Some(*value))));
    set_env(&vars);
}

/// The system allocator, counting every allocation and reallocation. Install it in a test
/// binary with `#[global_allocator]` and read [`CountingAllocator::allocations`].
pub struct CountingAllocator {
    allocations: AtomicU64,
}

impl CountingAllocator {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self {
            allocations: AtomicU64::new(0),
        }
    }

    /// Allocations (and reallocations) so far.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }
}

impl Default for CountingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the wrapper only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

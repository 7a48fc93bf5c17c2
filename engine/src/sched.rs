//! Scheduling hints for the store's own threads.
//!
//! The syncer spends nearly all its time blocked in `fdatasync` and needs the CPU only for a
//! few tens of microseconds after each one (publishing the group, waking its writers). On a
//! machine with few cores, the threads those wake-ups start (the application's tokio
//! workers, the writer) fill the CPUs, and a syncer woken by the next written group waited
//! for a turn while the disk stood idle. Linux's EEVDF scheduler (6.12 and later) lets a
//! thread ask for a shorter time slice (`sched_setattr` with `sched_runtime` under
//! `SCHED_OTHER`, no privilege needed): its virtual deadline comes sooner, so it runs sooner
//! after a wake-up, without more CPU share over time than its nice value gives it.
//! `docs/benchmarks.md` has the measurement; older kernels ignore the field.

use std::time::Duration;

/// The slice the syncer asks for: well under the default (the kernel's base slice times
/// 1 + log2 of the CPU count: 1.4 ms on the 2-core machine of `docs/benchmarks.md`).
/// 100, 300 and 600 us were measured; 300 us did best.
pub(crate) const SYNCER_SLICE: Duration = Duration::from_micros(300);

/// Gives the calling thread the time slice the store's syncer thread asks for (a hint: Linux
/// 6.12 and later honour it). For a benchmark's reference measurement of `fdatasync`, so that
/// it waits on the disk as the store's syncer does: on a loaded machine a thread with the
/// default slice waits longer for the CPU after the disk has answered.
pub fn request_syncer_slice() -> std::io::Result<()> {
    request_slice(SYNCER_SLICE)
}

/// The calling thread's scheduling attributes.
#[cfg(target_os = "linux")]
fn current_attr() -> std::io::Result<libc::sched_attr> {
    let size = u32::try_from(std::mem::size_of::<libc::sched_attr>())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `sched_attr` is plain integers, for which all zeros is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most `size` bytes into `attr`, which is that large and
    // lives across the call; pid 0 is the calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            std::ptr::from_mut(&mut attr),
            size,
            0u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    attr.size = size;
    Ok(attr)
}

/// Asks the scheduler for time slices of `slice` for the calling thread, keeping its policy
/// and nice value. Threads under another policy than `SCHED_OTHER` (real-time, batch, idle)
/// are left as they are. A hint: the caller logs a failure and goes on.
#[cfg(target_os = "linux")]
pub(crate) fn request_slice(slice: Duration) -> std::io::Result<()> {
    let runtime = u64::try_from(slice.as_nanos())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = current_attr()?;
    if attr.sched_policy != libc::SCHED_OTHER as u32 {
        // Real-time, batch or idle: chosen by the application, not ours to change.
        return Ok(());
    }
    // Only the flag a fair-class thread may carry is kept (the others are for other
    // classes, or ask the kernel to keep what this call sets).
    attr.sched_flags &= libc::SCHED_FLAG_RESET_ON_FORK as u64;
    attr.sched_runtime = runtime;
    // SAFETY: the kernel reads `attr.size` bytes of `attr`, which lives across the call.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, std::ptr::from_ref(&attr), 0u32) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Elsewhere there is no such hint: nothing to do.
#[cfg(not(target_os = "linux"))]
pub(crate) fn request_slice(_slice: Duration) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Kernels with EEVDF's custom slices (6.12 and later) report the slice back.
    fn kernel_has_custom_slices() -> bool {
        let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
            return false;
        };
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (6, 12)
    }

    #[test]
    fn the_slice_is_set_and_the_nice_value_kept() {
        std::thread::spawn(|| {
            // A nice value of its own (raising it needs no privilege), to see it kept.
            // SAFETY: no memory is passed; `who` 0 is the calling thread.
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            request_slice(SYNCER_SLICE).expect("sched_setattr");
            let attr = current_attr().expect("sched_getattr");
            assert_eq!(attr.sched_nice, 3);
            assert_eq!(attr.sched_policy, libc::SCHED_OTHER as u32);
            if kernel_has_custom_slices() {
                assert_eq!(attr.sched_runtime, SYNCER_SLICE.as_nanos() as u64);
            }
        })
        .join()
        .expect("the test thread");
    }
}

//! The process's resident memory, read from `/proc/self/status` (Linux).

/// Resets the process's peak resident memory, so `VmHWM` reads the peak since now
/// (Linux: `clear_refs`; elsewhere nothing is measured).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A figure of `/proc/self/status` (`VmHWM`: the peak resident memory since the last
/// reset, `VmRSS`: now), in MiB (NaN if unknown).
pub fn memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

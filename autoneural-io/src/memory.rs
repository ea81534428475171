//! How much memory this process could ever have: the machine's RAM and swap, or less
//! where `ulimit -v` caps the process. A model whose weights alone exceed it is refused
//! before anything is allocated, with its size, instead of dying in an allocation.

/// The most bytes this process can hold (`None` where the system does not say).
pub fn limit_bytes() -> Option<u64> {
    let machine = machine_bytes();
    let process = process_limit_bytes();
    match (machine, process) {
        (Some(m), Some(p)) => Some(m.min(p)),
        (m, p) => m.or(p),
    }
}

/// `MemTotal + SwapTotal` from `/proc/meminfo`.
fn machine_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(field("MemTotal:")? + field("SwapTotal:").unwrap_or(0))
}

/// The soft address-space limit (`ulimit -v`) from `/proc/self/limits`.
fn process_limit_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    line.trim_start_matches("Max address space").split_whitespace().next()?.parse().ok()
}

/// `1.2 GB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match b {
        b if b >= 1e12 => format!("{:.1} TB", b / 1e12),
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        _ => format!("{bytes} bytes"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_is_read_where_linux_says_it() {
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(super::limit_bytes().unwrap() > 1 << 20);
        }
        assert_eq!(super::human(2_500_000_000), "2.5 GB");
    }
}

//! The figures a benchmark hands to `cargo xtask bench`.

/// Prints `report` and writes it to `target/cbddc-bench/NAME`, where `cargo xtask bench`
/// reads it.
pub fn write_report(name: &str, report: &serde_json::Value) {
    let text = serde_json::to_string_pretty(report).unwrap();
    println!("{text}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cbddc-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(name), text).unwrap();
}

//! `cargo xtask test`: the whole suite on a fresh machine. The multi-host tests need `ip`
//! (iproute2) and root, the cluster page's test Debian's `chromium` and
//! `chromium-driver`; what is missing is installed with apt-get when this runs as root,
//! and named otherwise, before a single test runs.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// A program the tests need, and the Debian package that brings it.
struct Needed {
    program: &'static str,
    package: &'static str,
    found: fn(&str) -> bool,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn at(path: &str) -> bool {
    Path::new(path).is_file()
}

const NEEDED: &[Needed] = &[
    Needed {
        program: "ip",
        package: "iproute2",
        found: on_path,
    },
    Needed {
        program: "/usr/bin/chromium",
        package: "chromium",
        found: at,
    },
    Needed {
        program: "/usr/bin/chromedriver",
        package: "chromium-driver",
        found: at,
    },
];

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Installs what the tests need and is missing, or says what to install.
fn set_up() -> Result<()> {
    let missing: Vec<&Needed> = NEEDED.iter().filter(|n| !(n.found)(n.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|n| n.package).collect();
    let list = packages.join(" ");
    if !is_root() || !on_path("apt-get") {
        bail!(
            "the tests need {} (Debian packages: {list}); install them (as root: apt-get install {list}) or run this as root on Debian, where it installs them itself",
            missing
                .iter()
                .map(|n| n.program)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!("== installing {list} for the multi-host and browser tests");
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        if !status.success() {
            bail!(
                "apt-get {} failed ({status}); install {list} by hand",
                args.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(&packages);
    apt(&install)
}

/// Sets up, then runs `cargo test --workspace` with `args`; returns its exit code.
pub(crate) fn test(args: &[String]) -> Result<i32> {
    set_up()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(args)
        .status()
        .context("cannot run cargo test")?;
    Ok(status.code().unwrap_or(1))
}

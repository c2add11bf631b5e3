//! `cargo xtask modules`: the import graph between the modules of each crate, and the
//! cycles in it. A module that imports, directly or through others, a module that
//! imports it back has two jobs tangled: the shared part belongs in a leaf module.
//!
//! Read from the source as text: `crate::a::b` and `super::x` paths (a name the crate
//! root re-exports counts as the module that defines it), and a parent's paths into its
//! own children. Comments and `#[cfg(test)]` modules do not count.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`""` for the crate root, `a::b` otherwise) to its file.
fn modules(src: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src)?.with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.first().is_some_and(|p| p == "bin") {
                continue;
            }
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts.clear();
            }
            out.insert(parts.join("::"), path);
        }
    }
    Ok(out)
}

/// The text without comments and without `#[cfg(test)] mod x { … }` blocks.
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let next_is_inline_mod = lines
            .get(i + 1)
            .is_some_and(|n| n.trim_start().contains("mod ") && n.trim_end().ends_with('{'));
        if line.starts_with("#[cfg(test)]") && next_is_inline_mod {
            let mut depth: i64 = 0;
            i += 1;
            while i < lines.len() {
                depth +=
                    lines[i].matches('{').count() as i64 - lines[i].matches('}').count() as i64;
                i += 1;
                if depth <= 0 {
                    break;
                }
            }
            continue;
        }
        let code = lines[i].split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
        i += 1;
    }
    out
}

/// Modules declared only for tests (`#[cfg(test)] mod x;`).
fn test_modules(mods: &BTreeMap<String, PathBuf>) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (module, path) in mods {
        let text = std::fs::read_to_string(path)?;
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            let declared = pair[1].trim();
            if pair[0].trim() == "#[cfg(test)]"
                && declared.ends_with(';')
                && declared.contains("mod ")
            {
                let name = declared
                    .trim_end_matches(';')
                    .rsplit(' ')
                    .next()
                    .unwrap_or("");
                out.insert(if module.is_empty() {
                    name.to_string()
                } else {
                    format!("{module}::{name}")
                });
            }
        }
    }
    Ok(out)
}

/// Names the crate root re-exports (`pub use a::{X, Y}` / `pub use a::X`), by module.
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let code = code_of(root);
    for statement in code.split(';') {
        let statement = statement.trim();
        let Some(rest) = statement.strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap_or("").trim().to_string();
        let names = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) if a < b => rest[a + 1..b].to_string(),
            _ => rest.rsplit("::").next().unwrap_or("").to_string(),
        };
        for name in names.split(',') {
            let name = name.split(" as ").last().unwrap_or("").trim();
            if !name.is_empty() {
                out.insert(name.to_string(), module.clone());
            }
        }
    }
    out
}

/// Identifier-like segments after `prefix` wherever it occurs (`crate::a::b` → `a::b`).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        out.push(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    out
}

/// The import graph of the crate whose sources are in `src`.
pub(crate) fn graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mods = modules(src)?;
    let tests = test_modules(&mods)?;
    let is_test = |m: &str| {
        tests
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    };
    let root = mods
        .get("")
        .map(std::fs::read_to_string)
        .transpose()?
        .unwrap_or_default();
    let exported = reexports(&root);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &mods {
        if module.is_empty() || is_test(module) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(path)?);
        let mut targets = BTreeSet::new();
        for segments in paths_after(&code, "crate::") {
            let known = (1..=segments.len())
                .rev()
                .map(|k| segments[..k].join("::"))
                .find(|candidate| mods.contains_key(candidate));
            let target = known.or_else(|| segments.first().and_then(|s| exported.get(s).cloned()));
            if let Some(target) = target {
                targets.insert(target);
            }
        }
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        for segments in paths_after(&code, "super::") {
            let sibling = match segments.first() {
                Some(first) if parent.is_empty() => first.clone(),
                Some(first) => format!("{parent}::{first}"),
                None => parent.clone(),
            };
            if mods.contains_key(&sibling) {
                targets.insert(sibling);
            } else if !parent.is_empty() {
                targets.insert(parent.clone());
            }
        }
        // A parent naming its own children (`child::item`).
        for child in mods.keys().filter(|m| {
            m.rsplit_once("::").map_or("", |(p, _)| p) == module.as_str() && !m.is_empty()
        }) {
            let name = child.rsplit("::").next().unwrap_or(child);
            if code.contains(&format!("{name}::")) {
                targets.insert(child.clone());
            }
        }
        targets.retain(|t| t != module && !t.is_empty() && !is_test(t));
        edges.insert(module.clone(), targets);
    }
    Ok(edges)
}

/// The groups of two or more modules that import each other (strongly connected).
pub(crate) fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two modules are in one cycle when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reach(m))).collect();
    let mut grouped = BTreeSet::new();
    let mut out = Vec::new();
    for module in edges.keys() {
        if grouped.contains(module) {
            continue;
        }
        let group: Vec<String> = edges
            .keys()
            .filter(|other| {
                *other == module
                    || (reached[module].contains(*other) && reached[*other].contains(module))
            })
            .cloned()
            .collect();
        if group.len() > 1 {
            grouped.extend(group.iter().cloned());
            out.push(group);
        }
    }
    out
}

/// The workspace's crates: `crates/*` and `xtask`.
pub(crate) fn crates(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("src").is_dir())
        .collect();
    out.push(root.join("xtask"));
    out.sort();
    Ok(out)
}

/// Prints each crate's cycles; `Ok(false)` when there is any.
pub(crate) fn check(root: &Path) -> Result<bool> {
    let mut clean = true;
    for krate in crates(root)? {
        let edges = graph(&krate.join("src"))?;
        let found = cycles(&edges);
        let name = krate
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if found.is_empty() {
            println!("{name:<16} {} modules, no cycle", edges.len());
        } else {
            clean = false;
            for group in found {
                println!("{name:<16} cycle: {}", group.join(", "));
                for module in &group {
                    let into: Vec<&String> =
                        edges[module].iter().filter(|t| group.contains(t)).collect();
                    println!(
                        "{:<16}   {module} -> {}",
                        "",
                        into.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_module_of_any_crate_imports_a_module_that_imports_it_back() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(
            check(&root).unwrap(),
            "module cycles: run `cargo xtask modules`"
        );
    }

    #[test]
    fn a_cycle_through_a_reexport_and_a_parent_is_found() {
        let dir = tempfile_dir();
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use b::Thing;\n").unwrap();
        std::fs::write(src.join("a/mod.rs"), "mod inner;\nfn f() { inner::g(); }\n").unwrap();
        std::fs::write(
            src.join("a/inner.rs"),
            "// crate::b in a comment does not count\nuse crate::Thing;\n",
        )
        .unwrap();
        std::fs::write(src.join("b.rs"), "pub struct Thing;\nfn h() { crate::a::f(); }\n#[cfg(test)]\nmod tests {\n    use crate::a::inner::x;\n}\n").unwrap();
        let edges = graph(&src).unwrap();
        assert_eq!(
            cycles(&edges),
            [vec!["a".to_string(), "a::inner".into(), "b".into()]]
        );
        std::fs::write(src.join("b.rs"), "pub struct Thing;\n").unwrap();
        assert!(cycles(&graph(&src).unwrap()).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-modules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}

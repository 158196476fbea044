//! The library's modules import each other in one direction only: no two sibling modules (or
//! sibling folders) use each other. Read from the `use` paths of `src/` (test modules left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path ("prune::score") -> source text, for every file under src/ but lib.rs and main.rs.
fn modules(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let mut name = rel.to_string_lossy().replace('/', "::");
                if let Some(parent) = name.strip_suffix("::mod") {
                    name = parent.to_string();
                }
                if name != "lib" && name != "main" && !name.starts_with("cli") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Code only: tests and comments (doc links name paths too) are left out.
                    let code: String = text
                        .split("#[cfg(test)]")
                        .next()
                        .unwrap()
                        .lines()
                        .map(|l| l.split("//").next().unwrap())
                        .collect::<Vec<_>>()
                        .join("\n");
                    out.insert(name, code);
                }
            }
        }
    }
    out
}

/// The `crate::` and `super::` paths a file names, with one level of braces expanded.
fn used_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':'));
        if !starts {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(':').to_string();
        if rest[end..].starts_with('{') {
            let close = rest[end..].find('}').map_or(rest.len(), |c| end + c);
            for item in rest[end + 1..close].split(',') {
                let item = item.trim().split(" as ").next().unwrap().split("::{").next().unwrap();
                if !item.is_empty() {
                    out.push(format!("{path}::{item}"));
                }
            }
            i += close;
        } else {
            out.push(path);
            i += end;
        }
    }
    out
}

/// The module a path from `module` lands in: the longest prefix that is a module.
fn resolve(modules: &BTreeMap<String, String>, module: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = Vec::new();
    if parts[0] == "super" {
        // `super` of a file module is its folder's module; of a folder's mod.rs, the one above.
        base = module.split("::").collect();
        while parts.first() == Some(&"super") {
            base.pop();
            parts.remove(0);
        }
    } else {
        parts.remove(0);
    }
    (0..=parts.len()).rev().find_map(|k| {
        let mut candidate = base.clone();
        candidate.extend(&parts[..k]);
        let name = candidate.join("::");
        modules.contains_key(&name).then_some(name)
    })
}

#[test]
fn no_two_modules_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&root);
    assert!(modules.contains_key("prune::score") && modules.contains_key("graph::ops::conv2d"));
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for (module, code) in &modules {
        for path in used_paths(code) {
            let Some(target) = resolve(&modules, module, &path) else {
                continue;
            };
            let nested = target.starts_with(&format!("{module}::")) || module.starts_with(&format!("{target}::"));
            if target != *module && !nested {
                edges.insert((module.clone(), target));
            }
        }
    }
    assert!(
        edges.contains(&("prune::score".to_string(), "prune::channels".to_string())),
        "the reader finds known imports"
    );
    // Lift each edge to every depth at which its ends are siblings, and look for two-way pairs.
    let mut lifted: BTreeSet<(String, String)> = BTreeSet::new();
    for (a, b) in &edges {
        let (a, b): (Vec<&str>, Vec<&str>) = (a.split("::").collect(), b.split("::").collect());
        for depth in 1..=a.len().min(b.len()) {
            if a[..depth - 1] == b[..depth - 1] && a[depth - 1] != b[depth - 1] {
                lifted.insert((a[..depth].join("::"), b[..depth].join("::")));
            }
        }
    }
    let cycles: Vec<String> = lifted
        .iter()
        .filter(|(a, b)| a < b && lifted.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{a} <-> {b}"))
        .collect();
    assert!(cycles.is_empty(), "modules that import each other: {cycles:?}");
}

#[test]
fn the_reader_sees_braced_and_nested_imports() {
    let paths = used_paths("use crate::graph::{arith::conv_out, kernels, ParamRole};\nuse super::super::x::y;");
    assert_eq!(
        paths,
        [
            "crate::graph::arith::conv_out",
            "crate::graph::kernels",
            "crate::graph::ParamRole",
            "super::super::x::y"
        ]
    );
}

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
    let cycles = cycles(&lifted);
    assert!(
        cycles.is_empty(),
        "modules that import each other, directly or round a cycle: {cycles:?}"
    );
}

/// Every cycle among `edges`, of any length: one per strongly connected set of two or more
/// modules (Tarjan), shown as a path round it ("a -> b -> c -> a").
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    struct Tarjan<'a> {
        next: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        sets: Vec<Vec<&'a str>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for &w in &self.next[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(lw));
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().rposition(|&x| x == v).expect("on the stack");
                let set = self.stack.split_off(at);
                if set.len() > 1 {
                    self.sets.push(set);
                }
            }
        }
    }
    let mut t = Tarjan {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        sets: Vec::new(),
    };
    for &v in next.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.sets.iter().map(|set| path_round(&next, set)).collect()
}

/// A path from the set's first module back to itself through the set (breadth first).
fn path_round(next: &BTreeMap<&str, Vec<&str>>, set: &[&str]) -> String {
    let start = *set.iter().min().expect("non-empty");
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &next[v] {
            if w == start {
                let mut path = vec![start, v];
                let mut at = v;
                while at != start {
                    at = came_from[at];
                    path.push(at);
                }
                path.reverse();
                path.rotate_right(1);
                path.push(start);
                path.dedup();
                return path.join(" -> ");
            }
            if set.contains(&w) && !came_from.contains_key(w) && w != start {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    set.join(", ")
}

fn edge_set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// The checker finds a cycle through three modules (what the pairwise check missed: families ->
/// tasks -> data -> families), a two-way pair, and none in a graph without a cycle.
#[test]
fn cycles_of_any_length_are_found() {
    let three = edge_set(&[
        ("families", "tasks"),
        ("tasks", "data"),
        ("data", "families"),
        ("cli", "data"),
    ]);
    assert_eq!(cycles(&three), ["data -> families -> tasks -> data"]);
    let two = edge_set(&[("a", "b"), ("b", "a"), ("b", "c")]);
    assert_eq!(cycles(&two), ["a -> b -> a"]);
    let none = edge_set(&[("a", "b"), ("b", "c"), ("a", "c"), ("d", "a")]);
    assert!(cycles(&none).is_empty());
    // Two separate cycles are both named.
    let both = edge_set(&[("a", "b"), ("b", "a"), ("x", "y"), ("y", "z"), ("z", "x")]);
    assert_eq!(cycles(&both).len(), 2);
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

/// The library has no command-line types (the CLI parses; `cut::choice::Choice` names option
/// sets), and no module outside `families/bert` names a Hugging Face encoder's inputs: inputs
/// are described by the graph (`Graph::input_role`).
#[test]
fn no_parser_types_or_family_input_names_in_the_library() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&root);
    let with = |needle: &str, allowed: &str| -> Vec<String> {
        modules
            .iter()
            .filter(|(m, code)| !m.starts_with(allowed) && code.contains(needle))
            .map(|(m, _)| m.clone())
            .collect()
    };
    let clap = with("clap::", "cli");
    assert!(clap.is_empty(), "library modules with clap types: {clap:?}");
    for name in [
        "\"input_ids\"",
        "\"attention_mask\"",
        "bert::IDS",
        "bert::MASK",
        "bert::{",
    ] {
        let found = with(name, "families::bert");
        assert!(found.is_empty(), "{name} named outside families::bert: {found:?}");
    }
}

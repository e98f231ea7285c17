//! The projector's layering, checked from its imports: `live/` names neither `console` nor
//! `operations`, and no circle of imports between files spans more than two of them (a module and
//! its parent may refer to each other). The graph is drawn from the `crate::`, `super::` and
//! `self::` paths each file names, resolved to the file that defines the module.

use std::collections::{BTreeMap, BTreeSet};

/// Every `.rs` file under `src/`, by its path relative to `src/`.
fn sources() -> BTreeMap<String, String> {
    let root = eventline_testkit::repository().join("services/projector/src");
    eventline_testkit::files_under(&root, "rs")
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// The module path of a file: `live/runner.rs` is `[live, runner]`, `live/mod.rs` is `[live]`,
/// `lib.rs` is `[]`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
        parts.pop();
    }
    parts
}

/// The file defining the longest prefix of `path` that is a module.
fn file_of(path: &[String], files: &BTreeMap<String, String>) -> Option<String> {
    (1..=path.len()).rev().find_map(|n| {
        let joined = path[..n].join("/");
        [format!("{joined}.rs"), format!("{joined}/mod.rs")].into_iter().find(|f| files.contains_key(f))
    })
}

/// The paths `text` names from the crate's root, `super::` or `self::`, resolved against `module`
/// (the file's own module path), as module paths.
fn named_modules(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut named = Vec::new();
    // A file's test module (last, by the house's layout) names its parent with `super::`.
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (at, _) in code
            .match_indices("crate::")
            .chain(code.match_indices("super::"))
            .chain(code.match_indices("self::"))
        {
            // Not the tail of a longer name (`eventline_runtime::config::…` is another crate).
            if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest: Vec<String> = code[at..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let Some((head, tail)) = rest.split_first() else { continue };
            // `self` is the file's own module (a `mod.rs` is its folder's), `super` its parent.
            let base: Vec<String> = match head.as_str() {
                "crate" => Vec::new(),
                "self" => module.to_vec(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            let mut path = base;
            let mut tail = tail.to_vec();
            // `super::super::…`
            while tail.first().is_some_and(|t| t == "super") {
                path.pop();
                tail.remove(0);
            }
            path.extend(tail);
            named.push(path);
        }
    }
    named
}

/// Each file and the other files it imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let mut graph = BTreeMap::new();
    for (file, text) in &files {
        let module = module_of(file);
        let imports: BTreeSet<String> = named_modules(text, &module)
            .iter()
            .filter_map(|path| file_of(path, &files))
            .filter(|target| target != file)
            .collect();
        graph.insert(file.clone(), imports);
    }
    graph
}

/// The strongly connected components of `graph` with more than one file (Tarjan's algorithm).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, node: &'g str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = BTreeSet::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.insert(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

#[test]
fn the_live_part_names_neither_the_console_nor_the_operations() {
    let graph = import_graph();
    let upward: Vec<String> = graph
        .iter()
        .filter(|(file, _)| file.starts_with("live/"))
        .flat_map(|(file, imports)| {
            imports
                .iter()
                .filter(|i| i.starts_with("console/") || i.starts_with("operations/"))
                .map(move |i| format!("{file} imports {i}"))
        })
        .collect();
    assert!(upward.is_empty(), "live/ reaches up:\n{}", upward.join("\n"));
}

#[test]
fn no_circle_of_imports_spans_more_than_two_files() {
    let long: Vec<BTreeSet<String>> = circles(&import_graph()).into_iter().filter(|c| c.len() > 2).collect();
    assert!(long.is_empty(), "circles of imports: {long:?}");
}

#[test]
fn the_graph_is_drawn_from_crate_super_and_self_paths() {
    let files: BTreeMap<String, String> = [("a/mod.rs", ""), ("a/b.rs", ""), ("c.rs", "")]
        .into_iter()
        .map(|(f, t)| (f.to_owned(), t.to_owned()))
        .collect();
    let named = named_modules("use crate::c::Thing; use super::Other; // crate::a::b", &module_of("a/b.rs"));
    let resolved: Vec<Option<String>> = named.iter().map(|p| file_of(p, &files)).collect();
    assert_eq!(resolved, [Some("c.rs".to_owned()), Some("a/mod.rs".to_owned())]);
    assert!(named_modules("eventline_runtime::config::X", &[]).is_empty(), "another crate's path");
}

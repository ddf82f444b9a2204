//! The crate's layers point one way (ARCHITECTURE.md, "Layers"). This test reads every
//! `crate::`/`super::`/`self::` path in `src/` (in `use` items and inline), follows
//! re-exports to the file that defines the item, and fails on
//! - an import circle between modules: the submodules of each module must form a DAG (a
//!   module's own file and its submodules may import each other: that is how the IR in
//!   `graph` and its op rules in `graph::rules` meet), and
//! - an import the layering rules forbid.
//!
//! It is a text scan, not a compiler pass: it strips comments and string literals, then
//! expands `use` trees. That is enough for this crate's code, which writes imports plainly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// (importing module, imported modules it may not reach, why). A name covers the module and
/// its submodules; `=name` the module's own file only.
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "crate::ops",
        &[
            "crate::cpu",
            "crate::gpu",
            "crate::graph",
            "crate::nn",
            "crate::optim",
            "crate::data",
            "crate::mpi",
        ],
        "ops is the vocabulary: it imports nothing of the crate's layers",
    ),
    (
        "crate::cpu",
        &[
            "crate::gpu",
            "crate::graph",
            "crate::nn",
            "crate::optim",
            "crate::data",
            "crate::mpi",
        ],
        "the CPU reference imports only the vocabulary",
    ),
    (
        "crate::gpu",
        &[
            "crate::cpu",
            "crate::graph",
            "crate::nn",
            "crate::optim",
            "crate::data",
            "crate::mpi",
        ],
        "gpu/ runs kernels and knows no graph, op rule, model or CPU reference",
    ),
    (
        "=crate::graph",
        &["crate::gpu", "crate::graph::plan", "crate::graph::gpu_exec"],
        "the graph IR imports no GPU or plan code",
    ),
    (
        "crate::graph::autodiff",
        &["crate::gpu", "crate::graph::plan", "crate::graph::gpu_exec"],
        "differentiation imports no GPU or plan code",
    ),
    (
        "crate::graph::rules",
        &[
            "crate::gpu",
            "crate::graph::plan",
            "crate::graph::gpu_exec",
            "crate::graph::cpu_exec",
            "crate::nn",
        ],
        "an op's meaning (shape, gradient, CPU arm) imports no GPU or plan code",
    ),
    (
        "crate::optim",
        &["crate::graph", "crate::nn", "crate::data", "crate::mpi"],
        "an optimizer (its configuration, CPU step and GPU update) knows no graph or model",
    ),
    (
        "crate::data",
        &["crate::gpu", "crate::graph", "crate::nn", "crate::cpu"],
        "data loading knows no executor or model",
    ),
];

/// One source file: its module path and code with comments and strings blanked.
struct Source {
    module: String,
    code: String,
}

fn main_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/` with its module path (`src/a/b.rs` and `src/a/b/mod.rs` are
/// `crate::a::b`).
fn sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under src/");
                let mut parts: Vec<String> = rel
                    .iter()
                    .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                    .collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                    parts.pop();
                }
                let module = std::iter::once("crate".to_string())
                    .chain(parts)
                    .collect::<Vec<_>>()
                    .join("::");
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push(Source {
                    module,
                    code: strip(&text),
                });
            }
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

/// Blanks comments, string and char literals (keeping line structure irrelevant).
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b[i + 1..].starts_with(b"\"") || b[i + 1..].starts_with(b"#")) {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == b'"' && (i == 0 || !is_ident(b[i - 1])) {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                j += 1;
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                i = j + close.len();
                out.push_str("\"\"");
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('a', '\n', '\u{..}'), or a lifetime ('a) left as is.
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.push_str("' '");
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// A `use` item: whether it is a re-export, and its expanded paths (segments, alias).
struct UseItem {
    public: bool,
    paths: Vec<(Vec<String>, String)>,
    /// Byte range of the item in the code, excluded from the inline-path scan.
    span: (usize, usize),
}

/// Every `use` item of a file, its trees expanded into paths.
fn use_items(code: &str) -> Vec<UseItem> {
    let mut items = Vec::new();
    let b = code.as_bytes();
    let mut search = 0;
    while let Some(p) = code[search..].find("use ") {
        let at = search + p;
        search = at + 4;
        if at > 0 && is_ident(b[at - 1]) {
            continue;
        }
        // What precedes `use` on its statement: `pub`, `pub(crate)`, `pub(super)` or nothing.
        let line_start = code[..at].rfind(['\n', ';', '{', '}']).map_or(0, |k| k + 1);
        let lead = code[line_start..at].trim();
        let lead = lead
            .rsplit(']')
            .next()
            .unwrap_or(lead)
            .trim()
            .replace(' ', "");
        if !matches!(
            lead.as_str(),
            "" | "pub" | "pub(crate)" | "pub(super)" | "pub(in crate)"
        ) {
            continue;
        }
        let Some(end) = code[at..].find(';') else {
            continue;
        };
        // `a as b` becomes `a@b` before whitespace goes.
        let tree: String = code[at + 4..at + end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" as ", "@")
            .replace(' ', "");
        let mut paths = Vec::new();
        expand(&tree, &[], &mut paths);
        items.push(UseItem {
            public: lead.starts_with("pub"),
            paths,
            span: (at, at + end),
        });
        search = at + end;
    }
    items
}

/// Expands a use tree (`a::{b, c::{d as e, self}}`) under `prefix`.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) {
    let tree = tree.trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
        let mut base = prefix.to_vec();
        base.extend(head);
        let mut depth = 0;
        let mut start = 0;
        for (k, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..k], &base, out);
                    start = k + 1;
                }
                _ => {}
            }
        }
        if start < inner.len() {
            expand(&inner[start..], &base, out);
        }
        return;
    }
    if tree.is_empty() {
        return;
    }
    let (path, alias) = match tree.split_once('@') {
        Some((p, a)) => (p, Some(a)),
        None => (tree, None),
    };
    let mut segs = prefix.to_vec();
    segs.extend(path.split("::").filter(|s| !s.is_empty()).map(String::from));
    if segs.last().is_some_and(|s| s == "self") {
        segs.pop();
    }
    let Some(last) = segs.last().cloned() else {
        return;
    };
    let alias = alias.map(String::from).unwrap_or(last);
    out.push((segs, alias));
}

/// The crate's modules and what each re-exports.
struct Crate {
    modules: BTreeSet<String>,
    /// (module, name) -> the absolute path it re-exports.
    reexports: HashMap<(String, String), Vec<String>>,
    /// Module-level glob re-exports: module -> modules it re-exports everything of.
    globs: HashMap<String, Vec<Vec<String>>>,
}

/// Makes `segs` (as written in `module`) absolute, or None for an outside crate.
fn absolute(
    module: &str,
    segs: &[String],
    modules: &BTreeSet<String>,
    locals: &HashMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.split("::").map(String::from).collect();
    let first = segs.first()?.as_str();
    let rest = match first {
        "crate" => {
            base = vec!["crate".into()];
            &segs[1..]
        }
        "self" => &segs[1..],
        "super" => {
            let mut k = 0;
            while segs.get(k).is_some_and(|s| s == "super") {
                base.pop();
                k += 1;
            }
            &segs[k..]
        }
        _ => {
            // A child module in scope, or a name imported into this file.
            let child = format!("{module}::{first}");
            if modules.contains(&child) {
                segs
            } else if let Some(target) = locals.get(first) {
                let mut p = target.clone();
                p.extend(segs[1..].iter().cloned());
                return Some(p);
            } else {
                return None;
            }
        }
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

impl Crate {
    /// The module that defines what `path` names, following re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> Option<String> {
        if depth > 16 {
            return None;
        }
        let mut k = path.len();
        while k > 0 && !self.modules.contains(&path[..k].join("::")) {
            k -= 1;
        }
        if k == 0 {
            return None;
        }
        let module = path[..k].join("::");
        let Some(name) = path.get(k) else {
            return Some(module);
        };
        if let Some(target) = self.reexports.get(&(module.clone(), name.clone())) {
            let mut p = target.clone();
            p.extend(path[k + 1..].iter().cloned());
            return self.resolve(&p, depth + 1);
        }
        for glob in self.globs.get(&module).into_iter().flatten() {
            let mut p = glob.clone();
            p.extend(path[k..].iter().cloned());
            if let Some(found) = self.resolve(&p, depth + 1) {
                if found != glob.join("::") || self.modules.contains(&p.join("::")) {
                    return Some(found);
                }
            }
        }
        Some(module)
    }
}

/// Inline paths (`crate::a::b`, `super::c`, `alias::d`) outside `use` items.
fn inline_paths(code: &str, skip: &[(usize, usize)], heads: &BTreeSet<String>) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !is_ident(b[i]) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < b.len() && is_ident(b[j]) {
                j += 1;
            }
            segs.push(code[s..j].to_string());
            if b[j..].starts_with(b"::") && b.get(j + 2).is_some_and(|&c| is_ident(c)) {
                j += 2;
            } else {
                break;
            }
        }
        i = j.max(start + 1);
        if segs.len() < 2 || !heads.contains(&segs[0]) {
            continue;
        }
        if skip.iter().any(|&(a, e)| start >= a && start < e) {
            continue;
        }
        out.push(segs);
    }
    out
}

/// Module -> modules it imports (resolved to their defining files).
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(&main_dir());
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let uses: Vec<Vec<UseItem>> = files.iter().map(|f| use_items(&f.code)).collect();
    let mut krate = Crate {
        modules: modules.clone(),
        reexports: HashMap::new(),
        globs: HashMap::new(),
    };
    let no_locals = HashMap::new();
    for (f, items) in files.iter().zip(&uses) {
        for item in items.iter().filter(|u| u.public) {
            for (segs, alias) in &item.paths {
                let Some(abs) = absolute(&f.module, segs, &modules, &no_locals) else {
                    continue;
                };
                if alias == "*" {
                    let mut m = abs.clone();
                    m.pop();
                    krate.globs.entry(f.module.clone()).or_default().push(m);
                } else {
                    krate
                        .reexports
                        .insert((f.module.clone(), alias.clone()), abs);
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (f, items) in files.iter().zip(&uses) {
        let mut edges = BTreeSet::new();
        let mut locals: HashMap<String, Vec<String>> = HashMap::new();
        let spans: Vec<(usize, usize)> = items.iter().map(|u| u.span).collect();
        for item in items {
            for (segs, alias) in &item.paths {
                let Some(abs) = absolute(&f.module, segs, &modules, &no_locals) else {
                    continue;
                };
                if alias == "*" {
                    let mut m = abs.clone();
                    m.pop();
                    if let Some(t) = krate.resolve(&m, 0) {
                        edges.insert(t);
                    }
                    continue;
                }
                locals.insert(alias.clone(), abs.clone());
                let target = krate.resolve(&abs, 0);
                let is_module = target.as_deref() == Some(abs.join("::").as_str());
                // A module import is an edge through the paths that use it (below); a
                // re-export is an edge only when this file uses the name itself.
                let used_here = !item.public || mentions(&f.code, alias, &spans);
                if let Some(t) = target {
                    if !is_module && used_here {
                        edges.insert(t);
                    }
                }
            }
        }
        let mut heads: BTreeSet<String> = ["crate", "super", "self"]
            .into_iter()
            .map(String::from)
            .collect();
        heads.extend(locals.keys().cloned());
        let prefix = format!("{}::", f.module);
        heads.extend(
            modules
                .iter()
                .filter_map(|m| m.strip_prefix(&prefix))
                .filter(|m| !m.contains("::"))
                .map(String::from),
        );
        for segs in inline_paths(&f.code, &spans, &heads) {
            if let Some(abs) = absolute(&f.module, &segs, &modules, &locals) {
                if let Some(t) = krate.resolve(&abs, 0) {
                    edges.insert(t);
                }
            }
        }
        edges.remove(&f.module);
        edges.remove("crate");
        graph.insert(f.module.clone(), edges);
    }
    graph
}

/// Whether `name` occurs as a word in `code` outside the `use` items.
fn mentions(code: &str, name: &str, spans: &[(usize, usize)]) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let b = code.as_bytes();
        let before = at == 0 || !is_ident(b[at - 1]);
        let after = b.get(at + name.len()).is_none_or(|&c| !is_ident(c));
        before && after && !spans.iter().any(|&(s, e)| at >= s && at < e)
    })
}

/// Strongly connected components of more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn within(module: &str, prefix: &str) -> bool {
    match prefix.strip_prefix('=') {
        Some(exact) => module == exact,
        None => module == prefix || module.starts_with(&format!("{prefix}::")),
    }
}

/// The edges between sibling modules: an import from `a::x::..` to `a::y::..` is an edge
/// `a::x -> a::y` among `a`'s submodules. Imports between a module and its own submodules
/// (a facade and its parts, or parts and the shared items of their parent) are not edges.
fn sibling_edges(
    graph: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, targets) in graph {
        let f: Vec<&str> = from.split("::").collect();
        for to in targets {
            let t: Vec<&str> = to.split("::").collect();
            let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
            if common == f.len() || common == t.len() {
                continue;
            }
            let parent = f[..common].join("::");
            let (a, b) = (f[..=common].join("::"), t[..=common].join("::"));
            let siblings = out.entry(parent).or_default();
            siblings.entry(b.clone()).or_default();
            siblings.entry(a).or_default().insert(b);
        }
    }
    out
}

#[test]
fn no_import_circles_between_modules() {
    let graph = import_graph();
    let mut bad = Vec::new();
    for (parent, siblings) in sibling_edges(&graph) {
        for circle in circles(&siblings) {
            let edges: Vec<String> = circle
                .iter()
                .flat_map(|m| {
                    // The file-level imports behind each sibling edge.
                    let inside = |x: &str, m: &str| x == m || x.starts_with(&format!("{m}::"));
                    graph
                        .iter()
                        .filter(move |(f, _)| inside(f, m))
                        .flat_map(|(f, ts)| ts.iter().map(move |t| (f, t)))
                        .filter(|(_, t)| circle.iter().any(|c| c != m && inside(t, c)))
                        .map(|(f, t)| format!("  {f} -> {t}"))
                        .collect::<Vec<_>>()
                })
                .collect();
            bad.push(format!(
                "in {parent}: {}\n{}",
                circle.join(", "),
                edges.join("\n")
            ));
        }
    }
    assert!(bad.is_empty(), "import circles:\n{}", bad.join("\n\n"));
}

#[test]
fn imports_follow_the_layering_rules() {
    let graph = import_graph();
    let mut bad = Vec::new();
    for (from, targets) in &graph {
        for (layer, banned, why) in FORBIDDEN {
            if !within(from, layer) {
                continue;
            }
            for t in targets {
                if banned.iter().any(|b| within(t, b)) {
                    bad.push(format!("{from} -> {t} ({why})"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "forbidden imports:\n{}", bad.join("\n"));
}

/// The scan itself: a use tree expands, a re-export is followed to its defining module.
#[test]
fn the_scan_resolves_use_trees_and_reexports() {
    let mut paths = Vec::new();
    expand("crate::a::{self,b::{C,D@E},f}", &[], &mut paths);
    let got: Vec<(String, String)> = paths.into_iter().map(|(s, a)| (s.join("::"), a)).collect();
    assert_eq!(
        got,
        [
            ("crate::a", "a"),
            ("crate::a::b::C", "C"),
            ("crate::a::b::D", "E"),
            ("crate::a::f", "f")
        ]
        .map(|(p, a)| (p.to_string(), a.to_string()))
    );
    let graph = import_graph();
    // graph/mod.rs re-exports Init from graph/init.rs; nn uses it through the re-export.
    assert!(graph.values().any(|t| t.contains("crate::graph::init")));
    assert!(graph["crate::nn::layer"].contains("crate::graph::init"));
}

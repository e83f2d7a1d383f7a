//! The house's floors, checked: every file of `src/` uses only modules on floors below its own
//! (or files of its own folder), and no file-level import circle exists anywhere. The floors are
//! the layout map in `src/lib.rs`.
//!
//! A file "uses" a module when it names it in a path: `crate::a::b`, `super::x`, `self::x`, or
//! (in a folder's `mod.rs`) one of its child modules by name. Test modules at the end of a file
//! are left out: they may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules and their floor, lowest first (as drawn in `src/lib.rs`).
const FLOORS: &[(&str, u8)] = &[
    ("doc", 0),
    ("codec", 1),
    ("query", 1),
    ("access", 2),
    ("blocking", 2),
    ("memory", 2),
    ("tls", 2),
    ("metrics", 3),
    ("store", 4),
    ("config", 5),
    ("sync", 5),
    ("find", 5),
    ("backup", 5),
    ("transfer", 5),
    ("replication", 6),
    ("node", 7),
    ("http", 8),
    ("api", 9),
    ("server", 10),
];

type Module = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines (`src/store/mod.rs` → `store`, `src/lib.rs` → the crate root).
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The source without comments and without a trailing `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Paths that start at `crate`, `super` or `self`, with `{a, b::c}` groups expanded one level.
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == ':');
        // `pub(crate)`, `pub(super)`: visibility, not a path.
        let in_visibility = i > 0 && bytes[i - 1] == '(';
        let rest: String = bytes[i..bytes.len().min(i + 6)].iter().collect();
        let kw = ["crate", "super", "self"]
            .into_iter()
            .find(|k| rest.starts_with(k) && !bytes.get(i + k.len()).is_some_and(|c| is_ident(*c)));
        let (Some(kw), true, false) = (kw, starts_word, in_visibility) else {
            i += 1;
            continue;
        };
        let mut j = i + kw.len();
        let mut segs = Vec::new();
        let mut group = None;
        while bytes.get(j) == Some(&':') && bytes.get(j + 1) == Some(&':') {
            j += 2;
            if bytes.get(j) == Some(&'{') {
                let end = (j..bytes.len())
                    .find(|k| bytes[*k] == '}')
                    .unwrap_or(bytes.len());
                group = Some(bytes[j + 1..end].iter().collect::<String>());
                j = end;
                break;
            }
            let start = j;
            while bytes.get(j).is_some_and(|c| is_ident(*c)) {
                j += 1;
            }
            segs.push(bytes[start..j].iter().collect::<String>());
        }
        match group {
            Some(g) => {
                for item in g.split(',') {
                    let item = item.split_whitespace().next().unwrap_or("");
                    let mut p = segs.clone();
                    p.extend(
                        item.split("::")
                            .filter(|s| !s.is_empty() && s.chars().all(is_ident))
                            .map(String::from),
                    );
                    out.push((kw.to_string(), p));
                }
            }
            None => out.push((kw.to_string(), segs)),
        }
        i = j.max(i + 1);
    }
    out
}

struct Graph {
    files: BTreeMap<Module, PathBuf>,
    uses: BTreeMap<Module, BTreeSet<Module>>,
}

fn resolve(files: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| files.contains_key(m))
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths_found = Vec::new();
    source_files(&src, &mut paths_found);
    let files: BTreeMap<Module, PathBuf> = paths_found
        .into_iter()
        // The binary and its own modules (declared in main.rs) are not the library's.
        .filter(|p| !p.ends_with("main.rs") && !p.starts_with(src.join("tools")))
        .map(|p| (module_of(&src, &p), p))
        .collect();
    let mut uses = BTreeMap::new();
    for (m, file) in &files {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let is_folder = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let parent: Module = m[..m.len().saturating_sub(1)].to_vec();
        let mut targets = BTreeSet::new();
        for (kw, segs) in paths(&text) {
            let base = match (kw.as_str(), is_folder) {
                ("crate", _) => Vec::new(),
                ("super", true) => parent.clone(),
                ("super", false) => parent.clone(),
                ("self", true) => m.clone(),
                _ => continue,
            };
            // `super` from `a/b.rs` is `a`; from `a/mod.rs` it is `a`'s parent.
            let base = if kw == "super" && is_folder {
                m[..m.len().saturating_sub(1)].to_vec()
            } else {
                base
            };
            let full: Vec<String> = base.into_iter().chain(segs).collect();
            if let Some(t) = resolve(&files, &full) {
                if &t != m && !t.is_empty() {
                    targets.insert(t);
                }
            }
        }
        if is_folder {
            // Child modules named directly (`use cache::DocCache;`, `keys::prefix_end(..)`).
            for child in files
                .keys()
                .filter(|k| k.len() == m.len() + 1 && k.starts_with(m))
            {
                let name = &child[m.len()];
                let named = text.match_indices(&format!("{name}::")).any(|(i, _)| {
                    let before = text[..i].chars().next_back();
                    !before.is_some_and(|c| is_ident(c) || c == ':')
                });
                if named {
                    targets.insert(child.clone());
                }
            }
        }
        uses.insert(m.clone(), targets);
    }
    Graph { files, uses }
}

fn floor(m: &Module) -> Option<u8> {
    let top = m.first()?;
    FLOORS.iter().find(|(name, _)| name == top).map(|(_, f)| *f)
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn every_top_level_module_has_a_floor() {
    let g = graph();
    let missing: BTreeSet<String> = g
        .files
        .keys()
        .filter(|m| !m.is_empty() && floor(m).is_none())
        .map(|m| m[0].clone())
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from FLOORS (and lib.rs's map): {missing:?}"
    );
}

#[test]
fn modules_use_only_lower_floors() {
    let g = graph();
    let mut wrong = Vec::new();
    for (m, targets) in &g.uses {
        let Some(f) = floor(m) else { continue };
        for t in targets {
            let Some(tf) = floor(t) else { continue };
            let same_folder = m[0] == t[0];
            if !same_folder && tf >= f {
                wrong.push(format!(
                    "{} (floor {f}) uses {} (floor {tf})",
                    name(m),
                    name(t)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways uses:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_file_level_import_circle() {
    let g = graph();
    // Tarjan's strongly connected components: any with two or more files is a circle.
    struct State<'a> {
        uses: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        circles: Vec<Vec<String>>,
    }
    fn visit(s: &mut State, v: &Module) {
        let i = s.index.len();
        s.index.insert(v.clone(), i);
        s.low.insert(v.clone(), i);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let uses = s.uses.get(v).cloned().unwrap_or_default();
        for w in &uses {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(&w);
                component.push(name(&w));
                if &w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.circles.push(component);
            }
        }
    }
    let mut s = State {
        uses: &g.uses,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        circles: Vec::new(),
    };
    for m in g.uses.keys() {
        if !s.index.contains_key(m) {
            visit(&mut s, m);
        }
    }
    assert!(s.circles.is_empty(), "import circles: {:?}", s.circles);
}

/// The checker itself sees what it must: a path through `crate`, a `super` from a file and from a
/// folder, a group, a child named from its folder, and no visibility or comment.
#[test]
fn the_checker_reads_paths_as_rust_does() {
    let found = paths(
        "use crate::store::{DocKey, keys::validate};\npub(crate) fn f() { super::x::y(); }\nself::z",
    );
    assert_eq!(
        found,
        vec![
            ("crate".into(), vec!["store".into(), "DocKey".into()]),
            (
                "crate".into(),
                vec!["store".into(), "keys".into(), "validate".into()]
            ),
            ("super".into(), vec!["x".into(), "y".into()]),
            ("self".into(), vec!["z".into()]),
        ]
    );
    assert_eq!(code("a // crate::x\nb"), "a \nb");
    let g = graph();
    let uses = |m: &str| {
        g.uses[&m.split("::").map(String::from).collect::<Module>()]
            .iter()
            .map(name)
            .collect::<Vec<_>>()
    };
    // Known edges of the real tree: a folder naming its child, a file using its sibling.
    assert!(uses("store").contains(&"store::cache".to_string()));
    assert!(uses("replication::anti_entropy").contains(&"replication::local".to_string()));
    assert!(uses("api::docs").contains(&"http::problem".to_string()));
}

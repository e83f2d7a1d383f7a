//! Micro-benchmarks of the document layer at 1 KB and 100 KB: JSON → Automerge commit (create,
//! and a one-field update), load from saved bytes, and materialise to JSON bytes.
//!
//! Then a small document as the store keeps it between compactions: a snapshot and a log of
//! one-field changes appended after it, loaded as the store loads it (snapshot, then the log)
//! against the same document saved whole.
//!
//! Run: `cargo bench --bench doc_ops`

use automerge::Automerge;
use concord::doc::json::to_json;
use concord::doc::write::{apply, Write};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Map, Value};

/// A document of roughly `kb` kilobytes of JSON: records with strings, numbers and lists.
fn document(kb: usize) -> Map<String, Value> {
    let mut m = Map::new();
    let mut i = 0;
    while serde_json::to_vec(&m).map(|v| v.len()).unwrap_or(0) < kb * 1024 {
        m.insert(
            format!("item{i}"),
            json!({"name": format!("name {i}"), "count": i, "ratio": i as f64 / 7.0,
                   "tags": ["alpha", "beta", format!("t{i}")], "ok": i % 2 == 0}),
        );
        i += 1;
    }
    m
}

fn bench(c: &mut Criterion) {
    for kb in [1usize, 100] {
        let body = document(kb);
        let bytes = serde_json::to_vec(&body).unwrap().len() as u64;
        let mut g = c.benchmark_group(format!("{kb}KB"));
        g.throughput(Throughput::Bytes(bytes));
        if kb >= 100 {
            g.sample_size(20);
        }
        g.bench_function(BenchmarkId::new("commit_create", kb), |b| {
            b.iter(|| {
                let mut doc = Automerge::new();
                apply(&mut doc, &Write::Replace(body.clone()), 1).unwrap();
                doc
            })
        });
        let mut doc = Automerge::new();
        apply(&mut doc, &Write::Replace(body.clone()), 1).unwrap();
        // Load and materialise the document as created, before the patch benchmark grows its
        // history by thousands of changes.
        let saved = doc.save();
        g.bench_function(BenchmarkId::new("load", kb), |b| {
            b.iter(|| Automerge::load(&saved).unwrap())
        });
        let loaded = Automerge::load(&saved).unwrap();
        g.bench_function(BenchmarkId::new("materialise_json", kb), |b| {
            b.iter(|| serde_json::to_vec(&to_json(&loaded, None)).unwrap())
        });
        let mut n = 0i64;
        g.bench_function(BenchmarkId::new("commit_patch_one_field", kb), |b| {
            b.iter(|| {
                n += 1;
                let patch = json!({"item0": {"count": n}}).as_object().unwrap().clone();
                apply(&mut doc, &Write::MergePatch(patch), n).unwrap();
            })
        });
        g.finish();
    }
}

/// Loading a small document with `changes` changes logged after its snapshot, as the store does
/// when the document cache misses, against the same document saved as one snapshot.
fn bench_change_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("change_log");
    let body = json!({"n": 0, "s": "", "name": "doc 1", "text": "hello"});
    for changes in [0usize, 10, 100] {
        let mut doc = Automerge::new();
        apply(
            &mut doc,
            &Write::Replace(body.as_object().unwrap().clone()),
            1,
        )
        .unwrap();
        let snapshot = doc.save();
        let heads = doc.get_heads();
        for i in 0..changes {
            let patch = json!({"n": i, "s": format!("v{i}")});
            apply(
                &mut doc,
                &Write::MergePatch(patch.as_object().unwrap().clone()),
                i as i64,
            )
            .unwrap();
        }
        let log: Vec<u8> = doc
            .get_changes(&heads)
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect();
        let whole = doc.save();
        g.bench_function(BenchmarkId::new("snapshot_and_log", changes), |b| {
            b.iter(|| {
                let mut d = Automerge::load(&snapshot).unwrap();
                d.load_incremental(&log).unwrap();
                d
            })
        });
        g.bench_function(BenchmarkId::new("whole_snapshot", changes), |b| {
            b.iter(|| Automerge::load(&whole).unwrap())
        });
        // What a compaction costs: saving the live document.
        g.bench_function(BenchmarkId::new("save", changes), |b| b.iter(|| doc.save()));
    }
    g.finish();
}

criterion_group!(benches, bench, bench_change_log);
criterion_main!(benches);

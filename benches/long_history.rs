//! Long histories (issue 15): a document written by `--changes` small changes against the same
//! content written in one change, side by side on one real `concord` process: how long the node
//! takes to answer the first read and the first write after a restart (the write loads the
//! document from disk), and then reads and writes of the loaded document.
//!
//! Two shapes, each built in this process with Automerge and posted to the node as a client's
//! changes (`POST .../changes`), as an offline client would push its history:
//! - `typing`: a text typed one character per change (a note edited keystroke by keystroke); the
//!   short history holds the same text inserted in one change, so both documents hold the same
//!   operations and differ only in how many changes carry them;
//! - `overwrite`: one number field set `--changes` times; the short history sets it once, so its
//!   document has one operation where the long one keeps every overwritten value (Automerge keeps
//!   them: they are what concurrent edits merge against).
//!
//! Run: `cargo bench --profile dev --bench long_history -- --changes 100000 --rounds 5`

mod support;

use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use support::{arg, client_builder, Process};

const COLLECTION: &str = "history";

/// Changes per request when posting a long history (well under the node's 16 MiB body limit).
const CHANGES_PER_POST: usize = 10_000;

/// The two documents of one shape: the long history's changes and the short one's, encoded.
struct Shape {
    name: &'static str,
    long: Vec<Vec<u8>>,
    short: Vec<Vec<u8>>,
    long_saved: Vec<u8>,
    short_saved: Vec<u8>,
}

fn encoded(doc: &mut AutoCommit) -> Vec<Vec<u8>> {
    doc.get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect()
}

/// One character of typed text: a sentence repeated, so the text reads like a note.
fn key_stroke(i: usize) -> char {
    const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog. ";
    TEXT[i % TEXT.len()] as char
}

fn typing(changes: usize) -> Shape {
    let mut long = AutoCommit::new();
    long.put(ROOT, "title", "notes").expect("put");
    let text = long.put_object(ROOT, "body", ObjType::Text).expect("text");
    long.commit();
    for i in 0..changes {
        let ch = key_stroke(i).to_string();
        long.splice_text(&text, i, 0, &ch).expect("splice");
        long.commit();
    }
    let typed: String = (0..changes).map(key_stroke).collect();
    let mut short = AutoCommit::new();
    short.put(ROOT, "title", "notes").expect("put");
    let text = short.put_object(ROOT, "body", ObjType::Text).expect("text");
    short.splice_text(&text, 0, 0, &typed).expect("splice");
    short.commit();
    Shape {
        name: "typing",
        long: encoded(&mut long),
        short: encoded(&mut short),
        long_saved: long.save(),
        short_saved: short.save(),
    }
}

fn overwrite(changes: usize) -> Shape {
    let mut long = AutoCommit::new();
    long.put(ROOT, "title", "counter").expect("put");
    long.commit();
    for i in 0..changes {
        long.put(ROOT, "n", i as i64).expect("put");
        long.commit();
    }
    let mut short = AutoCommit::new();
    short.put(ROOT, "title", "counter").expect("put");
    short.put(ROOT, "n", changes as i64 - 1).expect("put");
    short.commit();
    Shape {
        name: "overwrite",
        long: encoded(&mut long),
        short: encoded(&mut short),
        long_saved: long.save(),
        short_saved: short.save(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn ratio(long: Duration, short: Duration) -> String {
    format!("{:.2}", long.as_secs_f64() / short.as_secs_f64().max(1e-9))
}

/// Median time of `Automerge::load` in this process (no node, no disk).
fn load_in_memory(saved: &[u8]) -> Duration {
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let doc = automerge::Automerge::load(saved).expect("load");
                let elapsed = t.elapsed();
                assert!(doc.get_heads().len() == 1);
                elapsed
            })
            .collect(),
    )
}

async fn post_changes(http: &reqwest::Client, url: &str, id: &str, changes: &[Vec<u8>]) {
    for batch in changes.chunks(CHANGES_PER_POST) {
        let r = http
            .post(format!(
                "{url}/v1/collections/{COLLECTION}/docs/{id}/changes"
            ))
            .body(batch.concat())
            .send()
            .await
            .expect("post changes");
        assert!(r.status().is_success(), "post changes: {}", r.status());
    }
}

async fn get(http: &reqwest::Client, url: &str, id: &str) -> (Duration, serde_json::Value) {
    let t = Instant::now();
    let r = http
        .get(format!("{url}/v1/collections/{COLLECTION}/docs/{id}"))
        .send()
        .await
        .expect("get");
    assert!(r.status().is_success(), "get {id}: {}", r.status());
    let body: serde_json::Value = r.json().await.expect("json");
    (t.elapsed(), body)
}

async fn patch(http: &reqwest::Client, url: &str, id: &str, value: usize) -> Duration {
    let t = Instant::now();
    let r = http
        .patch(format!("{url}/v1/collections/{COLLECTION}/docs/{id}"))
        .header("content-type", "application/merge-patch+json")
        .body(format!(r#"{{"seen": {value}}}"#))
        .send()
        .await
        .expect("patch");
    assert!(r.status().is_success(), "patch {id}: {}", r.status());
    t.elapsed()
}

/// First read and first write of each document after each restart, and then `warm` reads and
/// writes of the loaded documents, for the long and the short history.
#[derive(Default)]
struct Figures {
    first_get: [Vec<Duration>; 2],
    first_patch: [Vec<Duration>; 2],
    get: [Vec<Duration>; 2],
    patch: [Vec<Duration>; 2],
}

#[tokio::main]
async fn main() {
    let changes: usize = arg("--changes", 100_000);
    let rounds: usize = arg("--rounds", 5);
    let warm: usize = arg("--warm", 200);
    let http = client_builder().build().expect("http client");
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "long histories: {changes} changes against one, {rounds} restarts, {warm} warm requests"
    );

    for build in [typing, overwrite] {
        let t = Instant::now();
        let shape = build(changes);
        println!("built in {:.1} s", t.elapsed().as_secs_f64());
        let ids = [
            format!("{}-long", shape.name),
            format!("{}-short", shape.name),
        ];
        println!(
            "\n## {}: {} changes ({} KiB encoded, saved {} KiB) against {} ({} KiB saved)",
            shape.name,
            shape.long.len(),
            shape.long.iter().map(Vec::len).sum::<usize>() / 1024,
            shape.long_saved.len() / 1024,
            shape.short.len(),
            shape.short_saved.len() / 1024,
        );
        let t = Instant::now();
        let (load_long, load_short) = (
            load_in_memory(&shape.long_saved),
            load_in_memory(&shape.short_saved),
        );
        println!("loaded in {:.1} s", t.elapsed().as_secs_f64());

        let node = Process::start_in(0, dir.path(), &[]).await;
        let t = Instant::now();
        post_changes(&http, &node.url, &ids[0], &shape.long).await;
        println!(
            "posted the long history in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        post_changes(&http, &node.url, &ids[1], &shape.short).await;
        let (_, long_body) = get(&http, &node.url, &ids[0]).await;
        let (_, short_body) = get(&http, &node.url, &ids[1]).await;
        assert_eq!(
            long_body, short_body,
            "the two histories must hold the same content"
        );
        drop(node);

        let mut f = Figures::default();
        for round in 0..rounds {
            // Alternate which document goes first, so neither always meets a colder node.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let node = Process::start_in(0, dir.path(), &[]).await;
            // The connection is opened before the measured requests.
            let health = http.get(format!("{}/v1/health", node.url)).send().await;
            assert!(health.is_ok_and(|r| r.status().is_success()));
            for &k in &order {
                let (t, _) = get(&http, &node.url, &ids[k]).await;
                f.first_get[k].push(t);
            }
            for &k in &order {
                f.first_patch[k].push(patch(&http, &node.url, &ids[k], round).await);
            }
            for i in 0..warm {
                for &k in &order {
                    let (t, _) = get(&http, &node.url, &ids[k]).await;
                    f.get[k].push(t);
                    f.patch[k].push(patch(&http, &node.url, &ids[k], i).await);
                }
            }
            drop(node);
        }

        println!("| measure | long history | short history | long / short |");
        println!("| --- | --- | --- | --- |");
        let row = |name: &str, long: Duration, short: Duration| {
            println!(
                "| {name} | {} | {} | {} |",
                ms(long),
                ms(short),
                ratio(long, short)
            )
        };
        row("Automerge::load in memory", load_long, load_short);
        let [fg0, fg1] = f.first_get;
        row("first GET after restart (median)", median(fg0), median(fg1));
        let [fp0, fp1] = f.first_patch;
        row(
            "first PATCH after restart (median; loads the document)",
            median(fp0),
            median(fp1),
        );
        for (name, [mut long, mut short]) in [("GET", f.get), ("PATCH (durable)", f.patch)] {
            for p in [0.5, 0.99] {
                row(
                    &format!("{name} p{}", (p * 100.0) as u32),
                    percentile(&mut long, p),
                    percentile(&mut short, p),
                );
            }
        }
    }
}

//! Scoped tokens against a brute-force oracle, over real HTTP: random users (two scoped by
//! `{"owner": "$sub"}`, one by an id prefix), random writes by them and by an admin (PUT, PATCH,
//! DELETE, half of them through `bulk-write`), and users' edits as Automerge clients make them
//! (`ops`, posted changes, HTTP sync), each answered as the model says (applied, 403 or 404). Then, for every user, every
//! read route (GET of every id, the listing, `find`, `bulk-read`, the changes feed) shows exactly
//! the live documents in that user's scope, with the model's contents, and nothing else.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use common::{client, TestNode};
use concord::access::tokens::{claims, mint_hs256};
use concord::access::{Access, ScopeRule};
use concord::config::TokenConfig;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const SECRET: &[u8] = b"scope-properties-secret-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789";
const CLUSTER_SECRET: &str = "scope-properties-cluster-secret-0123456789";
const USERS: [&str; 3] = ["u0", "u1", "u2"];
const IDS: usize = 8;

/// Who acts: a user (index into `USERS`), the admin, or the admin on the other node (its
/// writes reach the node under test by replication).
#[derive(Debug, Clone, Copy)]
enum Actor {
    User(usize),
    Admin,
    Peer,
}

#[derive(Debug, Clone)]
enum Op {
    Put(Actor, usize, usize, i64),
    Patch(Actor, usize, Option<usize>, i64),
    Delete(Actor, usize),
    /// A user sets `v` (and `owner`) another way than a merge patch.
    Edit(usize, usize, Option<usize>, i64, Channel),
}

/// How an edit reaches the node.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Channel {
    /// `POST .../ops` (`set` operations).
    Ops,
    /// An Automerge change made on the document as the client could read it (or on a new one
    /// when it could not), `POST .../changes`.
    Changes,
    /// A fresh client syncing (`POST .../sync`), editing, and syncing again.
    Sync,
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        6 => (0usize..3).prop_map(Actor::User),
        1 => Just(Actor::Admin),
        1 => Just(Actor::Peer),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (actor(), 0..IDS, 0usize..3, 0i64..5).prop_map(|(a, i, o, v)| Op::Put(a, i, o, v)),
        2 => (actor(), 0..IDS, prop::option::of(0usize..3), 0i64..5)
            .prop_map(|(a, i, o, v)| Op::Patch(a, i, o, v)),
        1 => (actor(), 0..IDS).prop_map(|(a, i)| Op::Delete(a, i)),
        3 => (
            0usize..3,
            0..IDS,
            prop::option::of(0usize..3),
            0i64..5,
            prop_oneof![Just(Channel::Ops), Just(Channel::Changes), Just(Channel::Sync)],
        )
            .prop_map(|(u, i, o, v, c)| Op::Edit(u, i, o, v, c)),
    ]
}

/// Half the ids carry u2's prefix, so its scope has something to hold.
fn id(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("u2-{i}")
    } else {
        format!("d{i}")
    }
}

/// Whether `user` sees document `id` with contents `doc` (the oracle of the scopes).
fn sees(user: usize, id: &str, doc: &Map<String, Value>) -> bool {
    match user {
        2 => id.starts_with("u2-"),
        u => doc.get("owner") == Some(&json!(USERS[u])),
    }
}

fn token(user: usize) -> String {
    let rule = if user == 2 {
        "c/$sub-"
    } else {
        r#"c:{"owner":"$sub"}"#
    };
    let rules = [ScopeRule::parse_arg(rule).unwrap()];
    let c = claims(
        USERS[user],
        Access::Write,
        Some(&rules),
        Duration::from_secs(3600),
        None,
        None,
    );
    mint_hs256(SECRET, &c).unwrap()
}

/// The model: the live documents, and every id that ever held one (a deleted document is
/// still a document to Automerge clients: hidden from scoped ones, not created anew).
#[derive(Default)]
struct Model {
    live: BTreeMap<String, Map<String, Value>>,
    ever: BTreeSet<String>,
}

/// The model's answer to an op: the status, and the documents after it.
fn expect(m: &mut Model, op: &Op) -> (Actor, u16) {
    let model = &mut m.live;
    let (who, key, status, after) = match op {
        Op::Put(a, i, o, v) => {
            let key = id(*i);
            let body: Map<String, Value> = json!({"owner": USERS[*o], "v": v})
                .as_object()
                .cloned()
                .unwrap_or_default();
            let existed = model.contains_key(&key);
            let status = match a {
                Actor::User(u) if existed && !sees(*u, &key, &model[&key]) => 403,
                Actor::User(u) if !sees(*u, &key, &body) => 403,
                _ if existed => 200,
                _ => 201,
            };
            (*a, key, status, Some(body))
        }
        Op::Patch(a, i, o, v) => {
            let key = id(*i);
            let Some(current) = model.get(&key) else {
                return (*a, 404);
            };
            let mut merged = current.clone();
            if let Some(o) = o {
                merged.insert("owner".into(), json!(USERS[*o]));
            }
            merged.insert("v".into(), json!(v));
            let status = match a {
                Actor::User(u) if !sees(*u, &key, current) => 404,
                Actor::User(u) if !sees(*u, &key, &merged) => 403,
                _ => 200,
            };
            (*a, key, status, Some(merged))
        }
        Op::Delete(a, i) => {
            let key = id(*i);
            let status = match (a, model.get(&key)) {
                (_, None) => 404,
                (Actor::User(u), Some(current)) if !sees(*u, &key, current) => 404,
                _ => 200,
            };
            (*a, key, status, None)
        }
        Op::Edit(u, i, o, v, channel) => {
            let key = id(*i);
            let base = match model.get(&key) {
                Some(current) if !sees(*u, &key, current) => return (Actor::User(*u), 404),
                Some(current) => current.clone(),
                None if *channel == Channel::Ops || m.ever.contains(&key) => {
                    return (Actor::User(*u), 404)
                }
                // Changes made on a new document create it.
                None => Map::new(),
            };
            let mut after = base;
            if let Some(o) = o {
                after.insert("owner".into(), json!(USERS[*o]));
            }
            after.insert("v".into(), json!(v));
            let status = if sees(*u, &key, &after) { 200 } else { 403 };
            (Actor::User(*u), key, status, Some(after))
        }
    };
    if status < 300 {
        m.ever.insert(key.clone());
        match after {
            Some(doc) => {
                model.insert(key, doc);
            }
            None => {
                model.remove(&key);
            }
        }
    }
    (who, status)
}

struct World {
    _dir: tempfile::TempDir,
    node: TestNode,
    /// Another node of the cluster, written to by [`Actor::Peer`].
    peer: TestNode,
    http: reqwest::Client,
    tokens: Vec<String>,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("jwt-secret");
        std::fs::write(&secret, SECRET).unwrap();
        let admin = || {
            vec![TokenConfig {
                name: "ops".into(),
                token: ADMIN.into(),
                access: Access::Admin,
                collections: None,
                scopes: None,
            }]
        };
        let node = TestNode::start_with(&dir.path().join("data"), |c| {
            c.jwt_secret_file = Some(secret);
            c.tokens = admin();
            c.cluster_secret = Some(CLUSTER_SECRET.into());
            c.anti_entropy_interval_ms = 200;
        })
        .await;
        let seed = node.url.trim_start_matches("http://").to_string();
        let peer = TestNode::start_with(&dir.path().join("peer"), |c| {
            c.tokens = admin();
            c.cluster_secret = Some(CLUSTER_SECRET.into());
            c.peers = vec![seed];
            c.anti_entropy_interval_ms = 200;
        })
        .await;
        let w = World {
            _dir: dir,
            node,
            peer,
            http: client(),
            tokens: (0..USERS.len()).map(token).collect(),
        };
        let (s, _) = w
            .call(
                ADMIN,
                "PUT",
                "/v1/collections/c/indexes/by_owner",
                Some(json!({"fields": ["owner"]})),
            )
            .await;
        assert_eq!(s, 201);
        w
    }

    fn token_of(&self, a: Actor) -> &str {
        match a {
            Actor::User(u) => &self.tokens[u],
            Actor::Admin | Actor::Peer => ADMIN,
        }
    }

    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_at(&self.node, token, method, path, body).await
    }

    async fn call_at(
        &self,
        node: &TestNode,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, node.url(path)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn apply(&self, op: &Op) -> u16 {
        if let Op::Edit(u, i, o, v, channel) = op {
            return self.edit(*u, &id(*i), *o, *v, *channel).await;
        }
        let (a, path, method, body) = match op {
            Op::Edit(..) => unreachable!("handled above"),
            Op::Put(a, i, o, v) => (a, id(*i), "PUT", Some(json!({"owner": USERS[*o], "v": v}))),
            Op::Patch(a, i, o, v) => {
                let mut p = json!({"v": v});
                if let Some(o) = o {
                    p["owner"] = json!(USERS[*o]);
                }
                (a, id(*i), "PATCH", Some(p))
            }
            Op::Delete(a, i) => (a, id(*i), "DELETE", None),
        };
        // Half the writes go through `bulk-write`, which must judge each as a single write.
        let v = match op {
            Op::Put(.., v) | Op::Patch(.., v) => *v,
            Op::Delete(..) | Op::Edit(..) => 0,
        };
        if matches!(a, Actor::Peer) {
            // Written on the other node once it holds this document as the node under test
            // does (so it answers as the model says), then replicated back before going on.
            let path = format!("/v1/collections/c/docs/{path}");
            self.converge(&path).await;
            let status = self.call_at(&self.peer, ADMIN, method, &path, body).await.0;
            self.converge(&path).await;
            return status;
        }
        if v % 2 == 1 {
            let bulk_op = match method {
                "PUT" => "put",
                "PATCH" => "patch",
                _ => "delete",
            };
            let mut w = json!({"id": path, "op": bulk_op});
            if let Some(b) = body {
                w["body"] = b;
            }
            let (s, r) = self
                .call(
                    self.token_of(*a),
                    "POST",
                    "/v1/collections/c/bulk-write",
                    Some(json!({"writes": [w]})),
                )
                .await;
            assert_eq!(s, 200, "{r}");
            return r["results"][0]["status"].as_u64().unwrap_or(0) as u16;
        }
        let path = format!("/v1/collections/c/docs/{path}");
        self.call(self.token_of(*a), method, &path, body).await.0
    }

    /// Waits until both nodes answer the admin's `GET path` alike (status and version).
    async fn converge(&self, path: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = Vec::new();
            for n in [&self.node, &self.peer] {
                let r = self
                    .http
                    .get(n.url(path))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .unwrap();
                let etag = r.headers().get("etag").map(|v| v.as_bytes().to_vec());
                seen.push((r.status().as_u16(), etag));
            }
            if seen[0] == seen[1] {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never converged: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// User `u` sets `v` (and `owner`) on document `id` through `channel`; the status (any
    /// success as 200).
    async fn edit(&self, u: usize, id: &str, o: Option<usize>, v: i64, channel: Channel) -> u16 {
        let token = &self.tokens[u];
        let url = self.node.url(&format!("/v1/collections/c/docs/{id}"));
        let set = |doc: &mut Automerge| {
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                if let Some(o) = o {
                    tx.put(ROOT, "owner", USERS[o])?;
                }
                tx.put(ROOT, "v", v)?;
                Ok(())
            })
            .unwrap();
        };
        let status = match channel {
            Channel::Ops => {
                let mut ops = vec![json!({"op": "set", "path": "/v", "value": v})];
                if let Some(o) = o {
                    ops.push(json!({"op": "set", "path": "/owner", "value": USERS[o]}));
                }
                let path = format!("/v1/collections/c/docs/{id}/ops");
                self.call(token, "POST", &path, Some(json!({ "ops": ops })))
                    .await
                    .0
            }
            Channel::Changes => {
                let r = self
                    .http
                    .get(format!("{url}/changes"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let mut doc = match r.status().as_u16() {
                    200 => Automerge::load(&r.bytes().await.unwrap()).unwrap(),
                    404 => Automerge::new(),
                    s => panic!("changes answered {s}"),
                };
                set(&mut doc);
                // Setting what is there already makes no change: nothing to send.
                let Some(change) = doc.get_last_local_change() else {
                    return 200;
                };
                let change = change.raw_bytes().to_vec();
                let r = self
                    .http
                    .post(format!("{url}/changes"))
                    .bearer_auth(token)
                    .body(change)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }
            Channel::Sync => {
                let mut doc = Automerge::new();
                let mut state = automerge::sync::State::new();
                let client = uuid::Uuid::new_v4().to_string();
                let mut status = self.sync(&url, token, &client, &mut doc, &mut state).await;
                if status < 300 {
                    set(&mut doc);
                    status = self.sync(&url, token, &client, &mut doc, &mut state).await;
                }
                status
            }
        };
        if status < 300 {
            200
        } else {
            status
        }
    }

    /// HTTP sync until neither side has anything to send; the first refusal's status, else 200.
    async fn sync(
        &self,
        url: &str,
        token: &str,
        client: &str,
        doc: &mut Automerge,
        state: &mut automerge::sync::State,
    ) -> u16 {
        for _ in 0..20 {
            let Some(msg) = doc.generate_sync_message(state) else {
                return 200;
            };
            let r = self
                .http
                .post(format!("{url}/sync"))
                .bearer_auth(token)
                .header("concord-client-id", client)
                .header("content-type", "application/octet-stream")
                .body(msg.encode())
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => {
                    let reply =
                        automerge::sync::Message::decode(&r.bytes().await.unwrap()).unwrap();
                    doc.receive_sync_message(state, reply).unwrap();
                }
                204 => {}
                s => return s,
            }
        }
        panic!("sync did not finish in 20 round trips");
    }

    /// Every id a read route shows `user`, with its contents where the route gives them.
    async fn views(&self, user: usize) -> Vec<(&'static str, BTreeMap<String, Option<Value>>)> {
        let t = self.tokens[user].clone();
        let mut out = Vec::new();
        let mut got = BTreeMap::new();
        for i in 0..IDS {
            let (s, v) = self
                .call(
                    &t,
                    "GET",
                    &format!("/v1/collections/c/docs/{}", id(i)),
                    None,
                )
                .await;
            assert!(s == 200 || s == 404, "GET {}: {s} {v}", id(i));
            if s == 200 {
                got.insert(id(i), Some(v));
            }
        }
        out.push(("GET", got));
        for (route, with_docs) in [("listing", true), ("listing ids", false)] {
            let mut listed = BTreeMap::new();
            let mut after = String::new();
            loop {
                let (s, v) = self
                    .call(
                        &t,
                        "GET",
                        &format!("/v1/collections/c/docs?include_docs={with_docs}&limit=3{after}"),
                        None,
                    )
                    .await;
                assert_eq!(s, 200, "{v}");
                for d in v["docs"].as_array().unwrap() {
                    let body = with_docs.then(|| d["body"].clone());
                    listed.insert(d["id"].as_str().unwrap().to_string(), body);
                }
                match v["next"].as_str() {
                    Some(n) => after = format!("&after={n}"),
                    None => break,
                }
            }
            out.push((route, listed));
        }
        let ids: Vec<String> = (0..IDS).map(id).collect();
        let (s, v) = self
            .call(
                &t,
                "POST",
                "/v1/collections/c/bulk-read",
                Some(json!({"ids": ids})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let mut bulk = BTreeMap::new();
        for r in v["results"].as_array().unwrap() {
            if r["status"] == 200 {
                bulk.insert(
                    r["id"].as_str().unwrap().to_string(),
                    Some(r["body"].clone()),
                );
            }
        }
        out.push(("bulk-read", bulk));
        let mut feed = BTreeMap::new();
        let (s, v) = self
            .call(&t, "GET", "/v1/changes?collection=c&limit=10000", None)
            .await;
        assert_eq!(s, 200, "{v}");
        for r in v["results"].as_array().unwrap() {
            feed.insert(r["id"].as_str().unwrap().to_string(), None);
        }
        out.push(("changes feed", feed));
        // Users 0 and 1 from the owner index; user 2 from its id prefix.
        let mut found = BTreeMap::new();
        let mut req = json!({"selector": {}, "limit": 3});
        loop {
            let (s, v) = self
                .call(&t, "POST", "/v1/collections/c/find", Some(req.clone()))
                .await;
            assert_eq!(s, 200, "{v}");
            for d in v["docs"].as_array().unwrap() {
                found.insert(
                    d["id"].as_str().unwrap().to_string(),
                    Some(d["doc"].clone()),
                );
            }
            match v["bookmark"].as_str() {
                Some(b) => req["bookmark"] = json!(b),
                None => break,
            }
        }
        out.push(("find", found));
        if user == 2 {
            let (s, v) = self
                .call(
                    &t,
                    "POST",
                    "/v1/collections/c/explain",
                    Some(json!({"selector": {}})),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(
                v["strategy"], "the caller's documents by id prefix, sorted in memory",
                "{v}"
            );
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_route_shows_each_user_exactly_their_scope(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let w = World::new().await;
            let mut m = Model::default();
            for o in &ops {
                let (_, want) = expect(&mut m, o);
                let got = w.apply(o).await;
                prop_assert_eq!(got, want, "{:?}", o);
            }
            // The index serves find once built (it holds few documents: at once, or nearly).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (s, _) = w.call(&w.tokens[0], "POST", "/v1/collections/c/find", Some(json!({"selector": {}}))).await;
                if s == 200 { break; }
                prop_assert!(std::time::Instant::now() < deadline, "the index never became ready");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for (u, name) in USERS.iter().enumerate() {
                let want: BTreeSet<String> = m.live
                    .iter()
                    .filter(|(k, d)| sees(u, k, d))
                    .map(|(k, _)| k.clone())
                    .collect();
                for (route, got) in w.views(u).await {
                    let ids: BTreeSet<String> = got.keys().cloned().collect();
                    prop_assert_eq!(&ids, &want, "user {} by {}", name, route);
                    for (k, body) in got {
                        if let Some(b) = body {
                            prop_assert_eq!(&b, &Value::Object(m.live[&k].clone()), "{} {}", route, k);
                        }
                    }
                }
            }
            w.peer.stop().await;
            w.node.stop().await;
            Ok(())
        })?;
    }
}

mod feed_from_scopes {
    //! A narrowed caller's changes feed answered from its documents (the scopes' indexes and id
    //! prefixes) equals the feed read entry by entry and judged: same entries, same order, across
    //! pages, from any cursor.

    use std::sync::Arc;

    use concord::access::{Access, Grant, ScopeRule, Scopes};
    use concord::doc::write::{apply, Write};
    use concord::find::scope_view::ScopeView;
    use concord::metrics::Metrics;
    use concord::store::index_registry::{BuildState, Definition};
    use concord::store::{DocKey, Store, StoreError, StoreOptions};
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    fn grant(rules: &[&str], sub: &str) -> Grant {
        let rules: Vec<ScopeRule> = rules
            .iter()
            .map(|r| ScopeRule::parse_arg(r).unwrap())
            .collect();
        let claims = json!({"sub": sub}).as_object().cloned().unwrap_or_default();
        Grant {
            name: sub.into(),
            access: Access::Read,
            collections: None,
            scopes: Some(Arc::new(Scopes::bind(&rules, &claims).unwrap())),
            expires: None,
        }
    }

    /// Owners 3 and 4 are longer than an index key holds, and differ only past its cut.
    fn owner_name(n: usize) -> String {
        match n {
            3 => format!("u0{}", "x".repeat(300)),
            4 => format!("u0{}y", "x".repeat(300)),
            n => format!("u{n}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn equals_the_judged_feed(
            writes in prop::collection::vec((0usize..40, 0usize..5, any::<bool>()), 1..120),
            since_frac in 0.0f64..1.0,
            limit in 1usize..12,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let opts = StoreOptions { sync_writes: false, ..StoreOptions::default() };
            let s = Store::open(dir.path(), opts, Metrics::new()).unwrap();
            let metrics = Metrics::new();
            s.define_index("c", "by_owner", &Definition { fields: vec!["owner".into()], partial_filter: None }).unwrap();
            for def in s.indexes().building() {
                while s.index_build_step(&def, 100).unwrap() != BuildState::Ready {}
            }
            for (i, owner, delete) in &writes {
                let id = if i % 2 == 0 { format!("u2-{i}") } else { format!("d{i}") };
                let key = DocKey::new("c", &id).unwrap();
                let w = if *delete {
                    Write::Delete
                } else {
                    let m: Map<String, Value> = json!({"owner": owner_name(*owner), "n": i}).as_object().cloned().unwrap_or_default();
                    Write::Replace(m)
                };
                let _ = s.write::<_, StoreError>(&key, |doc, meta| {
                    if matches!(w, Write::Delete) && meta.is_none_or(|m| m.deleted) {
                        return Ok(());
                    }
                    apply(doc, &w, 1).map_err(StoreError::Doc)
                });
            }
            let upto = *s.feed_watermark().borrow();
            let since = (upto as f64 * since_frac) as u64;
            for g in [
                grant(&[r#"c:{"owner":"$sub"}"#], "u0"),
                grant(&["c/u2-"], "u2"),
                grant(&[r#"c:{"owner":"$sub"}"#, "c/u2-"], "u1"),
                // Judged on the documents: the index holds these owners only in part...
                grant(&[r#"c:{"owner":"$sub"}"#], &owner_name(3)),
                // ...or does not hold every field the scope reads.
                grant(&[r#"c:{"owner":"$sub","n":{"$lt":20}}"#], "u1"),
                grant(&[r#"c:{"owner":{"$in":["u0","u2"]}}"#], "u9"),
            ] {
                let scope = ScopeView::new(&s, "c", &g).unwrap();
                let keep = |e: &concord::store::FeedEntry| scope.keep(&s, &metrics, e);
                let mut want = Vec::new();
                let mut cursor = since;
                loop {
                    let (page, last) = s.feed_page_where(cursor, limit, Some("c"), &keep).unwrap();
                    if page.is_empty() && last == cursor { break; }
                    want.extend(page.into_iter().map(|(q, e)| (q, e.id)));
                    cursor = last;
                }
                let mut got = Vec::new();
                let mut cursor = since;
                for pages in 0.. {
                    // A cursor that does not move on would page forever.
                    prop_assert!(pages <= want.len() + 1, "the cursor does not advance");
                    let (page, last) = scope.page_between(&s, cursor, upto, limit).unwrap().expect("served from the scopes");
                    prop_assert!(page.len() <= limit);
                    prop_assert!(last > cursor || page.is_empty(), "cursor {} after {}", last, cursor);
                    let done = page.len() < limit;
                    got.extend(page.into_iter().map(|(q, e)| (q, e.id)));
                    cursor = last;
                    if done { break; }
                }
                prop_assert_eq!(&got, &want, "{}", g.name);
            }
        }
    }
}

//! Multi-node replication: convergence after random concurrent writes, peer authentication,
//! partitions made by fault-injecting TCP proxies, an empty node joining, a randomized schedule
//! of writes/partitions/heals/restarts (seeded, printed, rerunnable with CONCORD_TEST_SEED),
//! real processes killed with `kill -9` during replication, and the fault loop: concurrent
//! writers against real processes while partitions, heals, kills and restarts happen at random;
//! deletes concurrent with updates and text splices on both sides of a partition.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use common::http::{get_json, get_text};
use common::proxy::Proxy;
use common::{client, poll_until, NodeProcess, TestNode};
use parking_lot::Mutex;
use serde_json::{json, Value};

const SECRET: &str = "test-cluster-secret-0123456789";
const CONVERGE: Duration = Duration::from_secs(60);

/// A running node: served in this process, or a real `concord` process (which can be killed).
enum Node {
    InProcess(TestNode),
    Process(NodeProcess),
}

impl Node {
    fn url(&self, path: &str) -> String {
        match self {
            Node::InProcess(n) => n.url(path),
            Node::Process(p) => p.url(path),
        }
    }
}

struct Member {
    node: Mutex<Option<Node>>,
    proxy: Proxy,
    ip: IpAddr,
    dir: tempfile::TempDir,
    seeds: Vec<String>,
    /// The API port of a process member, kept across restarts.
    port: u16,
}

struct Cluster {
    m: Vec<Member>,
    http: reqwest::Client,
    processes: bool,
    tls: Option<ClusterTls>,
}

/// Mutual TLS between the nodes: one CA, one certificate per node (valid for 127.0.0.1, the
/// proxies' address), every peer request over a connection with a client certificate.
struct ClusterTls {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    ca_pem: String,
}

impl ClusterTls {
    fn new(n: usize) -> ClusterTls {
        use concord::tls::local_ca::{write_node, LocalCa, Validity};
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::new("cluster test CA").unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).unwrap();
        for i in 0..n {
            let pem = ca
                .node(
                    &format!("node-{i}"),
                    &["127.0.0.1", "localhost"],
                    Validity::Lasting,
                )
                .unwrap();
            write_node(dir.path(), &format!("node-{i}"), &pem).unwrap();
        }
        ClusterTls {
            ca: ca_path,
            ca_pem: ca.cert_pem,
            dir,
        }
    }

    fn configure(&self, i: usize, c: &mut concord::Config) {
        c.tls_cert = Some(self.dir.path().join(format!("node-{i}.pem")));
        c.tls_key = Some(self.dir.path().join(format!("node-{i}.key")));
        c.peer_tls_ca = Some(self.ca.clone());
        c.peer_mtls = true;
    }
}

/// What `Cluster::send` answers when the request never reached a node (nothing was written).
const NOT_SENT: u16 = 0;
/// What `Cluster::send` answers when the node went away mid-request (the write may have landed).
const UNKNOWN: u16 = 1;

impl Cluster {
    /// `n` nodes in this process; node `i` is seeded with the nodes `seeds(i)`. Peer traffic to
    /// node `i` goes through its proxy and leaves node `i` from 127.0.0.(10 + i).
    async fn start(n: usize, seeds: impl Fn(usize) -> Vec<usize>) -> Cluster {
        Self::start_with(n, seeds, false).await
    }

    /// The same with real processes, so that nodes can be killed with `kill -9`.
    async fn start_processes(n: usize, seeds: impl Fn(usize) -> Vec<usize>) -> Cluster {
        Self::start_with(n, seeds, true).await
    }

    /// `n` nodes in this process that speak mutual TLS to each other.
    async fn start_tls(n: usize, seeds: impl Fn(usize) -> Vec<usize>) -> Cluster {
        Self::start_full(n, seeds, false, Some(ClusterTls::new(n))).await
    }

    async fn start_with(n: usize, seeds: impl Fn(usize) -> Vec<usize>, processes: bool) -> Cluster {
        Self::start_full(n, seeds, processes, None).await
    }

    async fn start_full(
        n: usize,
        seeds: impl Fn(usize) -> Vec<usize>,
        processes: bool,
        tls: Option<ClusterTls>,
    ) -> Cluster {
        let mut proxies = Vec::new();
        for _ in 0..n {
            proxies.push(Proxy::start().await);
        }
        let addrs: Vec<String> = proxies.iter().map(|p| p.addr.to_string()).collect();
        let mut m = Vec::new();
        for (i, proxy) in proxies.into_iter().enumerate() {
            m.push(Member {
                node: Mutex::new(None),
                proxy,
                ip: format!("127.0.0.{}", 10 + i).parse().unwrap(),
                dir: tempfile::tempdir().unwrap(),
                seeds: seeds(i).into_iter().map(|j| addrs[j].clone()).collect(),
                port: common::free_port(),
            });
        }
        let http = match &tls {
            Some(t) => common::tls_client(t.ca_pem.as_bytes()).build().unwrap(),
            None => client(),
        };
        let c = Cluster {
            m,
            http,
            processes,
            tls,
        };
        for i in 0..n {
            c.start_node(i).await;
        }
        c
    }

    async fn start_node(&self, i: usize) {
        let mem = &self.m[i];
        let (advertise, ip, seeds) = (mem.proxy.addr.to_string(), mem.ip, mem.seeds.clone());
        let node = if self.processes {
            let args: Vec<String> = [
                "--cluster-secret",
                SECRET,
                "--advertise",
                &advertise,
                "--peer-bind-ip",
                &ip.to_string(),
                "--anti-entropy-interval-ms",
                "100",
                "--peers",
                &seeds.join(","),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            let p = NodeProcess::start_with(mem.dir.path(), mem.port, &args).await;
            mem.proxy
                .set_target(format!("127.0.0.1:{}", mem.port).parse().unwrap());
            Node::Process(p)
        } else {
            let tls = &self.tls;
            let node = TestNode::start_with(mem.dir.path(), move |c| {
                c.cluster_secret = Some(SECRET.into());
                c.peers = seeds;
                c.advertise = Some(advertise);
                c.peer_bind_ip = Some(ip);
                c.anti_entropy_interval_ms = 100;
                if let Some(t) = tls {
                    t.configure(i, c);
                }
            })
            .await;
            let addr = node.url.split("://").nth(1).unwrap_or_default();
            mem.proxy.set_target(addr.parse().unwrap());
            Node::InProcess(node)
        };
        *mem.node.lock() = Some(node);
    }

    /// Graceful stop.
    async fn stop_node(&self, i: usize) {
        let node = self.m[i].node.lock().take();
        match node {
            Some(Node::InProcess(n)) => n.stop().await,
            Some(Node::Process(p)) => assert!(p.terminate().success(), "node {i} stopped cleanly"),
            None => {}
        }
    }

    /// `kill -9` of a process member.
    fn kill_node(&self, i: usize) {
        let node = self.m[i].node.lock().take();
        match node {
            Some(Node::Process(p)) => p.kill9(),
            Some(Node::InProcess(_)) => panic!("only processes can be killed"),
            None => {}
        }
    }

    fn try_url(&self, i: usize, path: &str) -> Option<String> {
        self.m[i].node.lock().as_ref().map(|n| n.url(path))
    }

    fn url(&self, i: usize, path: &str) -> String {
        self.try_url(i, path).expect("node running")
    }

    fn running(&self) -> Vec<usize> {
        (0..self.m.len())
            .filter(|i| self.m[*i].node.lock().is_some())
            .collect()
    }

    /// Cuts every link between nodes of different groups.
    fn partition(&self, groups: &[&[usize]]) {
        for (ga, a_nodes) in groups.iter().enumerate() {
            for (gb, b_nodes) in groups.iter().enumerate() {
                if ga == gb {
                    continue;
                }
                for &a in a_nodes.iter() {
                    for &b in b_nodes.iter() {
                        self.m[b].proxy.block(self.m[a].ip);
                    }
                }
            }
        }
    }

    fn heal(&self) {
        for mem in &self.m {
            mem.proxy.unblock_all();
        }
    }

    /// id → (version, deleted) on node `i`.
    async fn listing(&self, i: usize, collection: &str) -> BTreeMap<String, (String, bool)> {
        let v: Value = get_json(
            &self.http,
            self.url(
                i,
                &format!("/v1/collections/{collection}/docs?include_deleted=true&limit=1000"),
            ),
        )
        .await;
        v["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["id"].as_str().unwrap().to_string(),
                    (
                        d["version"].as_str().unwrap().to_string(),
                        d["deleted"].as_bool().unwrap(),
                    ),
                )
            })
            .collect()
    }

    async fn converged(&self, collection: &str) -> bool {
        let nodes = self.running();
        let first = self.listing(nodes[0], collection).await;
        for &i in &nodes[1..] {
            if self.listing(i, collection).await != first {
                return false;
            }
        }
        true
    }

    async fn wait_converged(&self, collection: &str) {
        let start = std::time::Instant::now();
        poll_until(&format!("{collection} converged"), CONVERGE, || {
            self.converged(collection)
        })
        .await;
        eprintln!(
            "{collection}: converged {:?} after the last fault",
            start.elapsed()
        );
        // Same versions must mean the same bodies.
        let nodes = self.running();
        for (id, (_, deleted)) in self.listing(nodes[0], collection).await {
            if deleted {
                continue;
            }
            let mut bodies = Vec::new();
            for &i in &nodes {
                bodies.push(self.get(i, collection, &id).await.1);
            }
            assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{id}: {bodies:?}");
        }
    }

    async fn get(&self, i: usize, collection: &str, id: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(i, &format!("/v1/collections/{collection}/docs/{id}")))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// The status, or [`NOT_SENT`] / [`UNKNOWN`] when no answer came.
    async fn send(&self, i: usize, method: reqwest::Method, path: &str, body: Value) -> u16 {
        self.send_with(i, method, path, body, &[]).await
    }

    async fn send_with(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> u16 {
        let Some(url) = self.try_url(i, path) else {
            return NOT_SENT;
        };
        let mut req = self
            .http
            .request(method, url)
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await;
        match r {
            Ok(r) => r.status().as_u16(),
            Err(e) if e.is_connect() => NOT_SENT,
            Err(_) => UNKNOWN,
        }
    }
}

/// Everything the writers were told succeeded.
#[derive(Default)]
struct Acked {
    increments: HashMap<String, i64>,
    /// Increments whose node went away before answering: each may or may not have landed.
    maybe_increments: HashMap<String, i64>,
    fields: HashMap<(String, String), i64>,
    /// Text document → the tokens acknowledged splices inserted (each unique).
    texts: HashMap<String, Vec<String>>,
}

impl Acked {
    /// Adds another writer's record (writers own disjoint fields).
    fn merge(&mut self, other: Acked) {
        for (k, n) in other.increments {
            *self.increments.entry(k).or_default() += n;
        }
        for (k, n) in other.maybe_increments {
            *self.maybe_increments.entry(k).or_default() += n;
        }
        self.fields.extend(other.fields);
        for (doc, tokens) in other.texts {
            self.texts.entry(doc).or_default().extend(tokens);
        }
    }
}

/// One random write to a random running node; records it when acknowledged.
async fn random_write(c: &Cluster, rng: &mut u64, acked: &mut Acked, tag: &str, n: i64) {
    let nodes = c.running();
    let i = nodes[(next(rng) % nodes.len() as u64) as usize];
    let doc = format!("d{}", next(rng) % 8);
    match next(rng) % 5 {
        0 | 1 => {
            // One writer node per field, so acknowledged writes to a field are causally ordered.
            let field = format!("{tag}_{i}_{}", next(rng) % 4);
            let body = json!({ &field: n });
            let mut s = c
                .send(
                    i,
                    reqwest::Method::PATCH,
                    &format!("/v1/collections/w/docs/{doc}"),
                    body.clone(),
                )
                .await;
            if s == 404 {
                s = c
                    .send(
                        i,
                        reqwest::Method::POST,
                        &format!("/v1/collections/w/docs/{doc}/ops"),
                        json!({"ops": [{"op": "set", "path": format!("/{field}"), "value": n}]}),
                    )
                    .await;
                if s == 404 {
                    // Create only if still absent: a PUT replaces the whole document, so if a
                    // peer's push created it meanwhile, a plain PUT would remove the fields other
                    // writers had acknowledged.
                    s = c
                        .send_with(
                            i,
                            reqwest::Method::PUT,
                            &format!("/v1/collections/w/docs/{doc}"),
                            body,
                            &[("if-none-match", "*")],
                        )
                        .await;
                    if s == 412 {
                        s = c
                            .send(
                                i,
                                reqwest::Method::POST,
                                &format!("/v1/collections/w/docs/{doc}/ops"),
                                json!({"ops": [{"op": "set", "path": format!("/{field}"), "value": n}]}),
                            )
                            .await;
                    }
                }
            }
            if s == 200 || s == 201 {
                acked.fields.insert((doc, field), n);
            }
        }
        2 | 3 => {
            let counter = format!("c{}", next(rng) % 3);
            let s = c
                .send(
                    i,
                    reqwest::Method::POST,
                    &format!("/v1/collections/k/docs/{counter}/ops"),
                    json!({"ops": [{"op": "increment", "path": "/n"}]}),
                )
                .await;
            if s == 200 {
                *acked.increments.entry(counter).or_default() += 1;
            } else if s == UNKNOWN || s >= 500 {
                *acked.maybe_increments.entry(counter).or_default() += 1;
            }
        }
        _ => {
            // Text edits and deletes/re-creates on their own documents.
            let t = format!("t{}", next(rng) % 3);
            if next(rng).is_multiple_of(3) {
                // A splice into a text document nobody deletes (see `create_texts`): the
                // acknowledged token must appear exactly once on every replica.
                let doc = format!("s{}", next(rng) % 3);
                let token = format!("<{tag}.{n}>");
                let s = c
                    .send(
                        i,
                        reqwest::Method::POST,
                        &format!("/v1/collections/x/docs/{doc}/ops"),
                        json!({"ops": [{"op": "splice", "path": "/s", "index": 0, "insert": token}]}),
                    )
                    .await;
                if s == 200 {
                    acked.texts.entry(doc).or_default().push(token);
                }
            } else if next(rng).is_multiple_of(4) {
                c.send(
                    i,
                    reqwest::Method::DELETE,
                    &format!("/v1/collections/x/docs/{t}"),
                    Value::Null,
                )
                .await;
            } else {
                let s = c
                    .send(
                        i,
                        reqwest::Method::POST,
                        &format!("/v1/collections/x/docs/{t}/ops"),
                        json!({"ops": [{"op": "splice", "path": "/s", "index": 0, "insert": tag}]}),
                    )
                    .await;
                if s == 404 {
                    c.send(
                        i,
                        reqwest::Method::PUT,
                        &format!("/v1/collections/x/docs/{t}"),
                        json!({"s": tag}),
                    )
                    .await;
                }
            }
        }
    }
}

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Counters must equal the sum of acknowledged increments; acknowledged fields must be present
/// unless a later acknowledged write to the same field replaced them; every acknowledged text
/// splice appears exactly once.
async fn check_acked(c: &Cluster, acked: &Acked) {
    let spliced: usize = acked.texts.values().map(Vec::len).sum();
    eprintln!("checking {spliced} acknowledged splices");
    for &i in &c.running() {
        for (doc, tokens) in &acked.texts {
            let (status, v) = c.get(i, "x", doc).await;
            assert_eq!(status, 200, "node {i}: x/{doc}");
            let text = v["s"].as_str().unwrap_or_default();
            for t in tokens {
                assert_eq!(
                    text.matches(t.as_str()).count(),
                    1,
                    "node {i}: acknowledged splice {t} in x/{doc} = {text:?}"
                );
            }
        }
        for (counter, n) in &acked.increments {
            let (_, v) = c.get(i, "k", counter).await;
            let got = v["n"].as_i64().unwrap_or(-1);
            let maybe = acked.maybe_increments.get(counter).copied().unwrap_or(0);
            assert!(
                (*n..=n + maybe).contains(&got),
                "node {i}: counter {counter} = {got}: {n} increments acknowledged, {maybe} unanswered"
            );
        }
        for ((doc, field), n) in &acked.fields {
            let (_, v) = c.get(i, "w", doc).await;
            let got = v[field].as_i64().unwrap_or(-1);
            assert!(
                got >= *n,
                "node {i}: {doc}.{field} = {got}, acknowledged {n}"
            );
        }
    }
}

/// Creates an empty document on node 0.
async fn create_empty(c: &Cluster, collection: &str, id: &str) {
    let path = format!("/v1/collections/{collection}/docs/{id}");
    let s = c.send(0, reqwest::Method::PUT, &path, json!({})).await;
    assert_eq!(s, 201, "{path}");
}

/// Creates the text documents random writers splice into (never deleted; created once here so
/// that no two nodes create the text concurrently, which would keep only one creation's text).
async fn create_texts(c: &Cluster) {
    for k in 0..3 {
        let path = format!("/v1/collections/x/docs/s{k}");
        let s = c
            .send(0, reqwest::Method::PUT, &path, json!({"s": ""}))
            .await;
        assert_eq!(s, 201, "{path}");
    }
    c.wait_converged("x").await;
}

async fn create_counters(c: &Cluster) {
    for k in 0..3 {
        create_empty(c, "k", &format!("c{k}")).await;
        let s = c
            .send(
                0,
                reqwest::Method::POST,
                &format!("/v1/collections/k/docs/c{k}/ops"),
                json!({"ops": [{"op": "counter", "path": "/n"}]}),
            )
            .await;
        assert_eq!(s, 200);
    }
    c.wait_converged("k").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_concurrent_writes_converge_and_membership_spreads() {
    // A chain of seeds: 0 ← 1 ← 2. Node 2 must learn node 0 through node 1.
    let c = Cluster::start(3, |i| if i == 0 { vec![] } else { vec![i - 1] }).await;
    create_counters(&c).await;
    create_texts(&c).await;
    let mut acked = Acked::default();
    let mut rng = 0x2545F4914F6CDD1Du64;
    for n in 0..300 {
        random_write(&c, &mut rng, &mut acked, &format!("w{}", n % 3), n).await;
    }
    for coll in ["w", "k", "x"] {
        c.wait_converged(coll).await;
    }
    check_acked(&c, &acked).await;

    let addr0 = c.m[0].proxy.addr.to_string();
    poll_until("node 2 learns node 0 by gossip", CONVERGE, || async {
        let v: Value = get_json(&c.http, c.url(2, "/v1/cluster")).await;
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["address"] == addr0.as_str() && m["state"] == "up")
    })
    .await;
    let m = get_text(&c.http, c.url(0, "/metrics")).await;
    assert!(m.contains("concord_anti_entropy_rounds_total"), "{m}");
    assert!(m.contains("concord_push_changes_total"));
}

#[tokio::test]
async fn peer_endpoints_refuse_without_the_cluster_secret() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), |c| c.cluster_secret = Some(SECRET.into())).await;
    let http = client();
    // A well-formed push that would create a document.
    let mut doc = automerge::Automerge::new();
    concord::doc::write::apply(
        &mut doc,
        &concord::doc::write::Write::Replace(json!({"a": 1}).as_object().unwrap().clone()),
        1,
    )
    .unwrap();
    let changes: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let body = postcard::to_stdvec(&concord::replication::wire::ChangesV1 {
        docs: vec![concord::replication::wire::DocChangesV1 {
            collection: "c".into(),
            id: "d".into(),
            changes,
        }],
    })
    .unwrap();
    for secret in [None, Some("wrong-secret-wrong-secret"), Some("")] {
        let mut r = http.post(node.url("/v1/peer/changes")).body(body.clone());
        if let Some(s) = secret {
            r = r.header("concord-cluster-secret", s);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401, "secret {secret:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let v: Value = get_json(&http, node.url("/v1/collections")).await;
    assert_eq!(v["collections"], json!([]), "no data moved");
    // A client-shaped request with the right secret but garbage is a 400, not a crash.
    let r = http
        .post(node.url("/v1/peer/changes"))
        .header("concord-cluster-secret", SECRET)
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(node.url("/v1/peer/changes"))
        .header("concord-cluster-secret", SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = get_json(&http, node.url("/v1/collections/c/docs/d")).await;
    assert_eq!(v, json!({"a": 1}));
    node.stop().await;

    // A node without a secret accepts no peer at all.
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let r = http
        .post(node.url("/v1/peer/hello"))
        .header("concord-cluster-secret", SECRET)
        .body(vec![])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_then_heal_loses_no_acknowledged_write() {
    let c = Cluster::start(3, |i| (0..3).filter(|j| *j != i).collect()).await;
    create_counters(&c).await;
    create_texts(&c).await;
    c.partition(&[&[0], &[1, 2]]);
    let mut acked = Acked::default();
    let mut rng = 0x9E3779B97F4A7C15u64;
    for n in 0..200 {
        random_write(&c, &mut rng, &mut acked, &format!("p{}", n % 2), n).await;
    }
    // While cut off, node 0 and node 1 disagree (both sides took writes).
    assert!(
        !c.converged("k").await || !c.converged("w").await,
        "the partition did not hold"
    );
    // And `/v1/cluster` shows it: their digest roots differ.
    let root = |v: &Value| v["digest_root"].as_str().unwrap().to_string();
    let (v0, v1) = (
        get_json(&c.http, c.url(0, "/v1/cluster")).await,
        get_json(&c.http, c.url(1, "/v1/cluster")).await,
    );
    assert_ne!(root(&v0), root(&v1), "diverged replicas, equal roots");
    c.heal();
    for coll in ["w", "k", "x"] {
        c.wait_converged(coll).await;
    }
    check_acked(&c, &acked).await;
    // Converged: every node reports one root, every member reported that root at its last
    // round, and nothing waits to be pushed.
    poll_until("the cluster view shows convergence", CONVERGE, || async {
        let mut views = Vec::new();
        for i in 0..3 {
            views.push(get_json(&c.http, c.url(i, "/v1/cluster")).await);
        }
        let r = root(&views[0]);
        views.iter().all(|v| {
            root(v) == r
                && v["members"].as_array().unwrap().iter().all(|m| {
                    m["digest_root"].as_str() == Some(r.as_str())
                        && m["digest_root_at_ms"].as_u64().is_some()
                        && m["push_queue"] == 0
                })
        })
    })
    .await;
}

/// The same over mutual TLS: every peer request on a verified connection, and still no
/// acknowledged write lost across a partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mutual_tls_cluster_converges_after_a_partition() {
    let c = Cluster::start_tls(3, |i| (0..3).filter(|j| *j != i).collect()).await;
    assert!(c.url(0, "").starts_with("https://"));
    create_counters(&c).await;
    create_texts(&c).await;
    c.partition(&[&[0], &[1, 2]]);
    let mut acked = Acked::default();
    let mut rng = 0x2545F4914F6CDD1Du64;
    for n in 0..100 {
        random_write(&c, &mut rng, &mut acked, &format!("t{}", n % 2), n).await;
    }
    assert!(
        !c.converged("k").await || !c.converged("w").await,
        "the partition did not hold"
    );
    c.heal();
    for coll in ["w", "k", "x"] {
        c.wait_converged(coll).await;
    }
    check_acked(&c, &acked).await;
    // Replication really went over TLS with client certificates: pushes and rounds counted,
    // and a peer request without a certificate is refused even with the right secret.
    let m = get_text(&c.http, c.url(0, "/metrics")).await;
    let rounds: f64 = m
        .lines()
        .filter(|l| l.starts_with("concord_anti_entropy_rounds_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(rounds > 0.0, "no anti-entropy round over TLS: {m}");
    let r = c
        .http
        .post(c.url(0, "/v1/peer/hello"))
        .header("concord-cluster-secret", SECRET)
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("client certificate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_node_joins_and_receives_everything() {
    let c = Cluster::start(3, |i| match i {
        0 => vec![],
        1 => vec![0],
        _ => vec![0],
    })
    .await;
    c.stop_node(2).await;
    for i in 0..150 {
        let s = c
            .send(
                i % 2,
                reqwest::Method::PUT,
                &format!("/v1/collections/j/docs/d{i}"),
                json!({"i": i}),
            )
            .await;
        assert_eq!(s, 201);
    }
    c.send(
        0,
        reqwest::Method::DELETE,
        "/v1/collections/j/docs/d0",
        Value::Null,
    )
    .await;
    c.wait_converged("j").await;
    c.start_node(2).await;
    c.wait_converged("j").await;
    assert_eq!(c.listing(2, "j").await.len(), 150, "tombstones included");
    assert_eq!(c.get(2, "j", "d7").await.1, json!({"i": 7}));
    assert_eq!(c.get(2, "j", "d0").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_schedule_of_faults_converges() {
    let seed = common::test_seed("randomized schedule");
    let mut rng = seed;
    let c = Cluster::start(3, |i| (0..3).filter(|j| *j != i).collect()).await;
    create_counters(&c).await;
    create_texts(&c).await;
    let mut acked = Acked::default();
    for step in 0..12 {
        match next(&mut rng) % 4 {
            0 => {
                let lone = (next(&mut rng) % 3) as usize;
                let rest: Vec<usize> = (0..3).filter(|j| *j != lone).collect();
                eprintln!("step {step}: partition {lone} | {rest:?}");
                c.partition(&[&[lone], &rest]);
            }
            1 => {
                eprintln!("step {step}: heal");
                c.heal();
            }
            2 if c.running().len() == 3 => {
                let victim = (next(&mut rng) % 3) as usize;
                eprintln!("step {step}: restart node {victim}");
                c.stop_node(victim).await;
                for n in 0..10 {
                    random_write(
                        &c,
                        &mut rng,
                        &mut acked,
                        &format!("r{step}"),
                        1000 * step + n,
                    )
                    .await;
                }
                c.start_node(victim).await;
            }
            _ => {}
        }
        for n in 0..25 {
            random_write(
                &c,
                &mut rng,
                &mut acked,
                &format!("s{}", step % 3),
                100 * step + n,
            )
            .await;
        }
    }
    c.heal();
    for coll in ["w", "k", "x"] {
        c.wait_converged(coll).await;
    }
    check_acked(&c, &acked).await;
}

/// Eager push alone (anti-entropy is an hour away) carries small commits in their events and
/// commits larger than an event may hold by reading them from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_push_carries_small_and_large_commits() {
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n1 = TestNode::start_with(d1.path(), |c| {
        c.cluster_secret = Some(SECRET.into());
        c.anti_entropy_interval_ms = 3_600_000;
    })
    .await;
    let a1 = n1.url.trim_start_matches("http://").to_string();
    let n0 = TestNode::start_with(d0.path(), move |c| {
        c.cluster_secret = Some(SECRET.into());
        c.peers = vec![a1];
        c.anti_entropy_interval_ms = 3_600_000;
    })
    .await;
    let http = client();
    let large = "x".repeat(3 * concord::store::INLINE_CHANGE_BYTES);
    for (id, body) in [
        ("small", json!({"s": "hi"})),
        ("large", json!({"s": large})),
    ] {
        let r = http
            .put(n0.url(&format!("/v1/collections/p/docs/{id}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let url = n1.url(&format!("/v1/collections/p/docs/{id}"));
        poll_until(&format!("{id} pushed"), Duration::from_secs(20), || {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => r.json::<Value>().await.ok() == Some(body),
                    _ => false,
                }
            }
        })
        .await;
    }
    n0.stop().await;
    n1.stop().await;
}

/// Creates the documents the field writers patch, so that no writer ever needs a creating PUT
/// (which replaces the document, and so could remove another writer's acknowledged field).
async fn create_docs(c: &Cluster) {
    for d in 0..8 {
        create_empty(c, "w", &format!("d{d}")).await;
    }
    c.wait_converged("w").await;
}

/// The cluster fault loop: real processes behind the fault-injecting proxies; four writers never
/// stop while a driver partitions, heals, kills (`kill -9`) and restarts nodes at random moments
/// (seeded, printed, replayable with `CONCORD_TEST_SEED`). After the final heal every replica is
/// identical and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_loop_partitions_kills_and_restarts_during_writes() {
    let seed = common::test_seed("fault loop");
    let c = Cluster::start_processes(3, |i| (0..3).filter(|j| *j != i).collect()).await;
    create_counters(&c).await;
    create_texts(&c).await;
    create_docs(&c).await;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writer = |w: u64| {
        let (c, stop) = (&c, &stop);
        async move {
            let mut rng = seed ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut acked = Acked::default();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                random_write(c, &mut rng, &mut acked, &format!("f{w}"), n).await;
                n += 1;
            }
            (acked, n)
        }
    };
    let driver = async {
        let mut rng = seed;
        let (mut kills, mut partitions) = (0, 0);
        for step in 0..24 {
            tokio::time::sleep(Duration::from_millis(150 + next(&mut rng) % 600)).await;
            let running = c.running();
            let dead: Vec<usize> = (0..3).filter(|i| !running.contains(i)).collect();
            // Every kind of fault happens in every run; the rest is up to the seed.
            let kind = match step {
                1 => 2,
                3 => 0,
                _ => next(&mut rng) % 4,
            };
            match kind {
                0 => {
                    let lone = (next(&mut rng) % 3) as usize;
                    let rest: Vec<usize> = (0..3).filter(|j| *j != lone).collect();
                    eprintln!("step {step}: partition {lone} | {rest:?}");
                    c.partition(&[&[lone], &rest]);
                    partitions += 1;
                }
                1 => {
                    eprintln!("step {step}: heal");
                    c.heal();
                }
                2 if running.len() > 1 => {
                    let victim = running[(next(&mut rng) % running.len() as u64) as usize];
                    eprintln!("step {step}: kill -9 node {victim}");
                    c.kill_node(victim);
                    kills += 1;
                }
                _ if !dead.is_empty() => {
                    let back = dead[(next(&mut rng) % dead.len() as u64) as usize];
                    eprintln!("step {step}: restart node {back}");
                    c.start_node(back).await;
                }
                _ => {}
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (kills, partitions)
    };
    let ((kills, partitions), results) =
        tokio::join!(driver, futures::future::join_all((0..4).map(writer)));
    let mut acked = Acked::default();
    let mut attempted = 0;
    for (a, n) in results {
        acked.merge(a);
        attempted += n;
    }
    let acknowledged = acked.fields.len() as i64 + acked.increments.values().sum::<i64>();
    eprintln!("fault loop: {kills} kills, {partitions} partitions, {attempted} writes attempted");
    assert!(kills >= 1 && partitions >= 1);
    assert!(
        acknowledged > 50,
        "writes to live nodes succeed ({acknowledged})"
    );

    c.heal();
    for i in 0..3 {
        if c.try_url(i, "/").is_none() {
            c.start_node(i).await;
        }
    }
    for coll in ["w", "k", "x"] {
        c.wait_converged(coll).await;
    }
    check_acked(&c, &acked).await;
}

/// Real processes: one is killed with SIGKILL while the others keep taking writes; it restarts
/// on the same data directory and port and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_replication_then_restart_converges() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let args = |i: usize| -> Vec<String> {
        let peers: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("127.0.0.1:{}", ports[j]))
            .collect();
        vec![
            "--peers".into(),
            peers.join(","),
            "--cluster-secret".into(),
            SECRET.into(),
            "--anti-entropy-interval-ms".into(),
            "200".into(),
        ]
    };
    let mut procs: Vec<Option<NodeProcess>> = Vec::new();
    for i in 0..3 {
        procs.push(Some(
            NodeProcess::start_with(dirs[i].path(), ports[i], &args(i)).await,
        ));
    }
    let http = client();
    let url = |i: usize, p: &str| format!("http://127.0.0.1:{}{}", ports[i], p);
    let mut acked = 0;
    for n in 0..400 {
        if n == 150 {
            procs[2].take().unwrap().kill9();
        }
        if n == 300 {
            procs[2] = Some(NodeProcess::start_with(dirs[2].path(), ports[2], &args(2)).await);
        }
        let i = if procs[2].is_some() { n % 3 } else { n % 2 };
        let r = http
            .put(url(i, &format!("/v1/collections/kp/docs/d{}", n % 60)))
            .header("content-type", "application/json")
            .body(json!({ format!("v{n}"): n }).to_string())
            .send()
            .await;
        if matches!(r, Ok(ref r) if r.status().is_success()) {
            acked += 1;
        }
    }
    assert!(acked >= 390, "writes to live nodes succeed ({acked})");
    let listing = |i: usize| {
        let http = http.clone();
        let u = url(i, "/v1/collections/kp/docs?include_deleted=true&limit=1000");
        async move {
            let v: Value = get_json(&http, u).await;
            v["docs"].clone()
        }
    };
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let a = listing(0).await;
        if a.as_array().map(|d| d.len() == 60).unwrap_or(false)
            && a == listing(1).await
            && a == listing(2).await
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            for i in 0..3 {
                let v: Value = get_json(&http, url(i, "/v1/cluster")).await;
                eprintln!(
                    "node {i}: {} docs; cluster {v}",
                    listing(i).await.as_array().map(|d| d.len()).unwrap_or(0)
                );
            }
            panic!("processes did not converge");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `concord cluster --nodes 2`: both nodes serve and replicate; SIGINT stops them all cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_command_runs_and_stops_a_local_cluster() {
    cluster_command(false).await;
}

/// `concord cluster --tls`: the same cluster over TLS with a CA made at start, mutual TLS between
/// the nodes (the write still replicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_command_runs_a_local_tls_cluster() {
    cluster_command(true).await;
}

async fn cluster_command(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Two consecutive free ports.
    let base = loop {
        let p = common::free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args([
            "cluster",
            "--nodes",
            "2",
            "--base-port",
            &base.to_string(),
            "--dir",
        ])
        .arg(dir.path())
        .args(tls.then_some("--tls"))
        .env("CONCORD_LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let scheme = if tls { "https" } else { "http" };
    let url = |i: u16, p: &str| format!("{scheme}://127.0.0.1:{}{}", base + i, p);
    let ca = dir.path().join("tls/ca.pem");
    if tls {
        poll_until("the CA is written", CONVERGE, || async {
            std::fs::read(&ca)
                .ok()
                .and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok())
                .is_some_and(|certs| !certs.is_empty())
        })
        .await;
    }
    let http = match tls {
        true => common::tls_client(&std::fs::read(&ca).unwrap())
            .build()
            .unwrap(),
        false => client(),
    };
    for i in 0..2 {
        let u = url(i, "/v1/health");
        poll_until("cluster node up", CONVERGE, || {
            let (http, u) = (http.clone(), u.clone());
            async move {
                http.get(u)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await;
    }
    let r = http
        .put(url(0, "/v1/collections/c/docs/x"))
        .header("content-type", "application/json")
        .body(r#"{"from": "node0"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let u = url(1, "/v1/collections/c/docs/x");
    poll_until("write replicated to node 1", CONVERGE, || {
        let (http, u) = (http.clone(), u.clone());
        async move {
            http.get(u)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(
        out.contains(&format!("node1: {scheme}://127.0.0.1:{}", base + 1)),
        "{out}"
    );
    assert_eq!(out.matches("stopped: exit status: 0").count(), 2, "{out}");
    assert!(
        http.get(url(0, "/v1/health")).send().await.is_err(),
        "nodes are gone"
    );
}

fn ok(status: u16) -> bool {
    (200..300).contains(&status)
}

async fn text_of(c: &Cluster, i: usize, collection: &str, id: &str, field: &str) -> String {
    let (s, v) = c.get(i, collection, id).await;
    assert_eq!(s, 200, "node {i}: {collection}/{id}");
    v[field].as_str().unwrap_or_default().to_string()
}

/// Splices `insert` into text `field` at `index` on node `i`, which must acknowledge it.
async fn splice(c: &Cluster, i: usize, path: &str, field: &str, index: usize, insert: &str) {
    let s = c
        .send(
            i,
            reqwest::Method::POST,
            &format!("{path}/ops"),
            json!({"ops": [{"op": "splice", "path": format!("/{field}"), "index": index, "insert": insert}]}),
        )
        .await;
    assert_eq!(s, 200, "splice on node {i}");
}

/// The README's delete rules across nodes ("Deletes": a delete on one node and an update on
/// another, made while they were cut off, merge like concurrent local ones):
/// - delete concurrent with an update: the fields the update wrote survive, the document is live
///   holding exactly those, every other field is gone;
/// - two concurrent deletes: the document stays deleted; a lone delete stays a delete;
///
/// and acknowledged text splices made on different sides of a partition all appear, each once,
/// on every replica after the heal. Collection counts agree with the merged state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_updates_and_splices_across_a_partition_merge_as_the_readme_says() {
    let c = Cluster::start(3, |i| (0..3).filter(|j| *j != i).collect()).await;
    let doc = |id: &str| format!("/v1/collections/del/docs/{id}");
    for (id, body) in [
        ("upd", json!({"keep": 1, "gone": 2, "nested": {"n": 1}})),
        ("both", json!({"a": 1})),
        ("solo", json!({"a": 1})),
        ("untouched", json!({"a": 1})),
    ] {
        assert_eq!(c.send(0, reqwest::Method::PUT, &doc(id), body).await, 201);
    }
    let text = "/v1/collections/txt/docs/t";
    assert_eq!(
        c.send(0, reqwest::Method::PUT, text, json!({"s": "ab"}))
            .await,
        201
    );
    // Before the partition: acknowledged splices on every node, each seeing the others'.
    for i in 0..3 {
        c.wait_converged("txt").await;
        let len = text_of(&c, i, "txt", "t", "s").await.len();
        splice(&c, i, text, "s", len, &format!("<{i}>")).await;
    }
    c.wait_converged("del").await;
    c.wait_converged("txt").await;
    assert_eq!(text_of(&c, 2, "txt", "t", "s").await, "ab<0><1><2>");

    c.partition(&[&[0], &[1, 2]]);
    // Node 0 deletes three documents; node 1 updates one of them and deletes another.
    for id in ["upd", "both", "solo"] {
        assert!(
            ok(c.send(0, reqwest::Method::DELETE, &doc(id), Value::Null)
                .await),
            "{id}"
        );
    }
    assert_eq!(
        c.send(
            1,
            reqwest::Method::PATCH,
            &doc("upd"),
            json!({"keep": 10, "added": 5})
        )
        .await,
        200
    );
    assert!(ok(c
        .send(1, reqwest::Method::DELETE, &doc("both"), Value::Null)
        .await));
    // Text: node 0 prepends, node 1 appends, then node 2 (on node 1's side) inserts after the
    // first character; each several times, every splice acknowledged.
    let mut acked = Vec::new();
    for k in 0..3 {
        let t = format!("[0.{k}]");
        splice(&c, 0, text, "s", 0, &t).await;
        acked.push(t);
        let t = format!("[1.{k}]");
        let len = text_of(&c, 1, "txt", "t", "s").await.len();
        splice(&c, 1, text, "s", len, &t).await;
        acked.push(t);
    }
    for k in 0..3 {
        let t = format!("[2.{k}]");
        splice(&c, 2, text, "s", 1, &t).await;
        acked.push(t);
    }
    // The partition held: node 0 has the deletes and not the update.
    assert_eq!(c.get(0, "del", "upd").await.0, 404);
    assert_eq!(
        c.get(1, "del", "upd").await.1,
        json!({"keep": 10, "gone": 2, "nested": {"n": 1}, "added": 5})
    );
    assert_eq!(c.get(1, "del", "solo").await.0, 200);

    c.heal();
    c.wait_converged("del").await;
    c.wait_converged("txt").await;
    for i in 0..3 {
        // Delete vs update: exactly the fields the update wrote.
        let (s, v) = c.get(i, "del", "upd").await;
        assert_eq!(
            (s, v),
            (200, json!({"keep": 10, "added": 5})),
            "node {i}: delete concurrent with an update"
        );
        for id in ["both", "solo"] {
            assert_eq!(
                c.get(i, "del", id).await.0,
                404,
                "node {i}: {id} stays deleted"
            );
        }
        assert_eq!(c.get(i, "del", "untouched").await, (200, json!({"a": 1})));
        let listing = c.listing(i, "del").await;
        let deleted: Vec<_> = listing
            .iter()
            .filter(|(_, (_, d))| *d)
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(deleted, ["both", "solo"], "node {i}: tombstones listed");
        let v: Value = get_json(&c.http, c.url(i, "/v1/collections")).await;
        let count = v["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "del")
            .map(|e| e["docs"].clone());
        assert_eq!(
            count,
            Some(json!(2)),
            "node {i}: live documents in del: {v}"
        );

        // Every acknowledged splice, exactly once, around the untouched original.
        let s = text_of(&c, i, "txt", "t", "s").await;
        for t in &acked {
            assert_eq!(s.matches(t.as_str()).count(), 1, "node {i}: {t} in {s:?}");
        }
        let rest = acked
            .iter()
            .fold(s.clone(), |s, t| s.replacen(t.as_str(), "", 1));
        assert_eq!(rest, "ab<0><1><2>", "node {i}: {s:?}");
        assert!(
            s.ends_with("[1.0][1.1][1.2]"),
            "node {i}: appends in order: {s:?}"
        );
        assert!(
            s.contains("[0.2][0.1][0.0]"),
            "node {i}: prepends in order: {s:?}"
        );
    }
}

/// The README's rule for a delete concurrent with an update, for the two kinds of write a merge
/// patch makes: a field it *puts* (new, or a scalar replaced) survives the delete; an edit *inside*
/// a field's existing value (a string edited in place as text, a nested object's field) edits a
/// value the delete removed, so it goes with it, as Automerge treats any edit inside a removed
/// object. Node 1's patch edits `note` and `meta.by` in place and puts `n` and `extra`: after the
/// heal exactly `n` and `extra` remain on both nodes, and a patch made only of in-place edits
/// leaves its document deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_concurrent_with_edits_inside_fields_keeps_only_the_put_fields() {
    let c = Cluster::start(2, |i| vec![1 - i]).await;
    let path = "/v1/collections/del/docs/note";
    let only_text = "/v1/collections/del/docs/text-only";
    for p in [path, only_text] {
        assert_eq!(
            c.send(
                0,
                reqwest::Method::PUT,
                p,
                json!({"note": "old", "n": 1, "meta": {"by": "a"}})
            )
            .await,
            201
        );
    }
    c.wait_converged("del").await;
    c.partition(&[&[0], &[1]]);
    for p in [path, only_text] {
        assert!(ok(c.send(0, reqwest::Method::DELETE, p, Value::Null).await));
    }
    assert_eq!(
        c.send(
            1,
            reqwest::Method::PATCH,
            path,
            json!({"note": "new", "n": 2, "extra": true, "meta": {"by": "b"}})
        )
        .await,
        200
    );
    assert_eq!(
        c.send(1, reqwest::Method::PATCH, only_text, json!({"note": "new"}))
            .await,
        200
    );
    assert_eq!(
        c.get(1, "del", "note").await,
        (
            200,
            json!({"note": "new", "n": 2, "extra": true, "meta": {"by": "b"}})
        )
    );
    c.heal();
    c.wait_converged("del").await;
    for i in 0..2 {
        assert_eq!(
            c.get(i, "del", "note").await,
            (200, json!({"n": 2, "extra": true})),
            "node {i}: put fields survive the concurrent delete, in-place edits do not"
        );
        assert_eq!(
            c.get(i, "del", "text-only").await.0,
            404,
            "node {i}: a patch of in-place edits only leaves the document deleted"
        );
    }
}

/// Index definitions replicate like documents; entries are each node's own. An index defined on
/// one node before a partition, writes on every node during it (updates moving documents in and
/// out of the result, deletes), and after the heal every node gives the same answer to the same
/// query, equal to filtering every document.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_agree_on_every_node_after_a_partition_heals() {
    let c = Cluster::start(3, |i| (0..3).filter(|j| *j != i).collect()).await;
    let doc = |i: usize| format!("/v1/collections/q/docs/d{i:03}");
    for i in 0..30 {
        let s = ["a", "b"][i % 2];
        let body = json!({"s": s, "n": i});
        assert_eq!(
            c.send(i % 3, reqwest::Method::PUT, &doc(i), body).await,
            201
        );
    }
    let def = json!({"fields": ["s", "n"]});
    assert_eq!(
        c.send(
            0,
            reqwest::Method::PUT,
            "/v1/collections/q/indexes/s_n",
            def
        )
        .await,
        201
    );
    c.partition(&[&[0], &[1, 2]]);
    for i in 30..90 {
        let s = ["a", "b", "c"][i % 3];
        let body = json!({"s": s, "n": i});
        assert!(ok(c.send(i % 3, reqwest::Method::PUT, &doc(i), body).await));
    }
    for i in (0..30).step_by(4) {
        // Concurrent on both sides of the partition: both fields survive the merge.
        assert!(ok(c
            .send(0, reqwest::Method::PATCH, &doc(i), json!({"s": "b"}))
            .await));
        assert!(ok(c
            .send(1, reqwest::Method::PATCH, &doc(i), json!({"n": 1000 + i}))
            .await));
    }
    for i in (1..30).step_by(7) {
        assert!(ok(c
            .send(2, reqwest::Method::DELETE, &doc(i), Value::Null)
            .await));
    }
    c.heal();
    c.wait_converged("q").await;
    for i in 0..3 {
        let url = c.url(i, "/v1/collections/q/indexes/s_n");
        poll_until("index ready everywhere", CONVERGE, || {
            let (http, url) = (c.http.clone(), url.clone());
            async move { get_json(&http, url).await["state"] == "ready" }
        })
        .await;
    }
    // Every live document, from node 0's listing, filtered by hand.
    let listing = get_json(
        &c.http,
        c.url(0, "/v1/collections/q/docs?include_docs=true&limit=1000"),
    )
    .await;
    let mut want: Vec<(i64, String)> = listing["docs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            !d["deleted"].as_bool().unwrap()
                && d["body"]["s"] == "b"
                && d["body"]["n"].as_i64().unwrap() >= 10
        })
        .map(|d| {
            (
                d["body"]["n"].as_i64().unwrap(),
                d["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    want.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    assert!(want.len() > 10, "{want:?}");
    let query = json!({
        "selector": {"s": "b", "n": {"$gte": 10}}, "sort": [{"n": "desc"}], "limit": 1000
    });
    for i in 0..3 {
        let r = c
            .http
            .post(c.url(i, "/v1/collections/q/find"))
            .json(&query)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["stats"]["index"], "s_n", "node {i}: {v}");
        let got: Vec<&str> = v["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "node {i}");
    }
}

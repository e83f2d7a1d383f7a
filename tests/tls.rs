//! Native TLS: clients over HTTPS (HTTP/2 and HTTP/1.1 by ALPN; Rust and curl), certificates
//! that must not be accepted (expired, from another CA, none where one is required), a
//! certificate rotated on disk served to new connections while open ones carry on, a rotated
//! peer CA followed without a restart, peer host names checked against certificates, and
//! `X-Forwarded-For` believed only from trusted proxies. The mutual-TLS cluster is in
//! `tests/cluster.rs`; the automerge-repo client over `wss://` in `tests/js_clients.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http::get_json;
use common::{poll_until, tls_client, TestNode};
use concord::tls::local_ca::{write_node, LocalCa, Validity};
use serde_json::json;

const SECRET: &str = "tls-cluster-secret-0123456789";

/// A CA and one node certificate, written to `dir`.
struct Pki {
    ca: LocalCa,
    ca_path: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, validity: Validity) -> Pki {
    let ca = LocalCa::new("test CA").unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let pem = ca
        .node("node", &["127.0.0.1", "localhost"], validity)
        .unwrap();
    let f = write_node(dir, "node", &pem).unwrap();
    Pki {
        ca,
        ca_path,
        cert: f.cert,
        key: f.key,
    }
}

async fn tls_node(data: &Path, p: &Pki, mtls: bool) -> TestNode {
    let (cert, key, ca) = (p.cert.clone(), p.key.clone(), p.ca_path.clone());
    TestNode::start_with(data, move |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        if mtls {
            c.cluster_secret = Some(SECRET.into());
            c.peer_tls_ca = Some(ca);
            c.peer_mtls = true;
        }
    })
    .await
}

/// Whether the node whose `/v1/cluster` is at `url` has marked its (first) peer down after
/// repeated failures.
async fn first_peer_down(http: &reqwest::Client, url: String) -> bool {
    let v = get_json(http, url).await;
    v["members"][0]["state"] == "down"
        && v["members"][0]["consecutive_failures"].as_u64() >= Some(3)
}

/// curl's exit code, stdout and stderr.
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_speak_https_with_http2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), Validity::Lasting);
    let node = tls_node(&dir.path().join("data"), &p, false).await;
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
    let http = tls_client(p.ca.cert_pem.as_bytes()).build().unwrap();
    let r = http
        .put(node.url("/v1/collections/c/docs/d"))
        .json(&json!({"over": "tls"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = http
        .get(node.url("/v1/collections/c/docs/d"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"over": "tls"}));

    // curl with the CA negotiates HTTP/2 by ALPN, or HTTP/1.1 when asked; without it, refuses.
    let ca = p.ca_path.to_string_lossy().into_owned();
    let url = node.url("/v1/collections/c/docs/d");
    let (rc, out, err) = curl(&["--cacert", &ca, "-w", "\n%{http_version}", &url]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out, "{\"over\":\"tls\"}\n2", "{err}");
    let (rc, out, _) = curl(&[
        "--http1.1",
        "--cacert",
        &ca,
        "-w",
        "\n%{http_version}",
        &url,
    ]);
    assert_eq!((rc, out.as_str()), (0, "{\"over\":\"tls\"}\n1.1"));
    let (rc, _, err) = curl(&[&url]);
    assert_eq!(rc, 60, "an unknown CA must be refused: {err}");
    // A client that trusts another CA refuses the node; plain HTTP to the TLS port gets nothing.
    let other = LocalCa::new("another CA").unwrap();
    let stranger = tls_client(other.cert_pem.as_bytes()).build().unwrap();
    assert!(stranger.get(node.url("/v1/health")).send().await.is_err());
    let plain = common::client();
    let http_url = node.url("/v1/health").replace("https://", "http://");
    assert!(plain.get(&http_url).send().await.is_err());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), Validity::Expired);
    let node = tls_node(&dir.path().join("data"), &p, false).await;
    let http = tls_client(p.ca.cert_pem.as_bytes()).build().unwrap();
    let e = http.get(node.url("/v1/health")).send().await.unwrap_err();
    let chain = format!("{e:?}").to_lowercase();
    assert!(chain.contains("expired"), "{chain}");
    let ca = p.ca_path.to_string_lossy().into_owned();
    let (rc, _, err) = curl(&["--cacert", &ca, &node.url("/v1/health")]);
    assert_eq!(rc, 60, "{err}");
    assert!(err.contains("expired"), "{err}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), Validity::Lasting);
    let node = tls_node(&dir.path().join("data"), &p, false).await;
    let leaf = |r: &reqwest::Response| -> Vec<u8> {
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .expect("TLS info")
            .to_vec()
    };
    let keep_alive = tls_client(p.ca.cert_pem.as_bytes())
        .tls_info(true)
        .build()
        .unwrap();
    let first = keep_alive.get(node.url("/v1/health")).send().await.unwrap();
    let old = leaf(&first);
    drop(first);

    // Rotate: a new certificate and key (the key first: a half-done rotation keeps the old one).
    let pem =
        p.ca.node(
            "node-rotated",
            &["127.0.0.1", "localhost"],
            Validity::Lasting,
        )
        .unwrap();
    std::fs::write(&p.key, &pem.key).unwrap();
    std::fs::write(&p.cert, &pem.cert).unwrap();
    let ca = p.ca.cert_pem.clone();
    let url = node.url("/v1/health");
    poll_until(
        "a new connection gets the new certificate",
        Duration::from_secs(20),
        || {
            let (ca, url, old) = (ca.clone(), url.clone(), old.clone());
            async move {
                let fresh = tls_client(ca.as_bytes()).tls_info(true).build().unwrap();
                match fresh.get(&url).send().await {
                    Ok(r) => leaf(&r) != old,
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    // The connection opened before the rotation was not dropped: it still answers, on the old
    // certificate.
    let again = keep_alive.get(node.url("/v1/health")).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(leaf(&again), old, "the open connection was replaced");
    node.stop().await;
}

/// With `peer_mtls`, a peer must present a certificate of the cluster's CA: one from another CA
/// is refused at the handshake, none at all is refused before the secret is even looked at, and
/// a node with another CA's certificate moves no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_need_a_certificate_of_the_clusters_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), Validity::Lasting);
    let node = tls_node(&dir.path().join("a"), &p, true).await;
    let hello = |client: reqwest::Client| {
        let url = node.url("/v1/peer/hello");
        async move {
            client
                .post(url)
                .header("concord-cluster-secret", SECRET)
                .header("content-type", "application/x-concord-peer-v1")
                .body(Vec::new())
                .send()
                .await
        }
    };
    // A client that trusts the node and presents `pem` as its certificate.
    let presenting = |pem: &concord::tls::local_ca::Pem| {
        let id = reqwest::Identity::from_pem(format!("{}\n{}", pem.cert, pem.key).as_bytes());
        tls_client(p.ca.cert_pem.as_bytes())
            .identity(id.unwrap())
            .build()
            .unwrap()
    };
    // A certificate of the cluster's CA gets through to the secret check (and past it: 400 for
    // an empty hello, not 401).
    let ours =
        p.ca.node("peer", &["127.0.0.1"], Validity::Lasting)
            .unwrap();
    let r = hello(presenting(&ours)).await.unwrap();
    assert_ne!(r.status(), 401, "{:?}", r.text().await);
    // No certificate: refused, whatever the secret.
    let r = hello(tls_client(p.ca.cert_pem.as_bytes()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Refused at the handshake: never an answer, and the server's alert names the reason. In
    // TLS 1.3 the server judges the client's certificate after the client has finished its side
    // of the handshake, so a client may see the connection close before it reads the alert
    // ("connection was not ready"): every try must fail, and one of a few must show the alert.
    let refused = |pem: concord::tls::local_ca::Pem, alert: &'static str| {
        let client = presenting(&pem);
        let hello = &hello;
        async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                let e = match hello(client.clone()).await {
                    Ok(r) => panic!("answered {} despite the certificate", r.status()),
                    Err(e) => format!("{e:?}").to_lowercase(),
                };
                if e.contains(alert) {
                    return;
                }
                seen.push(e);
            }
            panic!("no try showed the `{alert}` alert: {seen:?}");
        }
    };
    // Another CA's certificate.
    let other = LocalCa::new("another CA").unwrap();
    let theirs = other
        .node("intruder", &["127.0.0.1"], Validity::Lasting)
        .unwrap();
    refused(theirs, "unknown").await;
    // An expired certificate of the right CA.
    let stale =
        p.ca.node("stale", &["127.0.0.1"], Validity::Expired)
            .unwrap();
    refused(stale, "expired").await;

    // A whole node certified by the other CA, seeded with this one: it writes, nothing arrives.
    let bdir = dir.path().join("b");
    std::fs::create_dir_all(&bdir).unwrap();
    let b_ca = bdir.join("ca.pem");
    // B trusts both CAs, so it does reach A's listener: only A's check of B's client certificate
    // (from the other CA) can keep the data out.
    std::fs::write(&b_ca, format!("{}\n{}", other.cert_pem, p.ca.cert_pem)).unwrap();
    let b_pem = other
        .node("b", &["127.0.0.1", "localhost"], Validity::Lasting)
        .unwrap();
    let bf = write_node(&bdir, "b", &b_pem).unwrap();
    let seed = node.url.trim_start_matches("https://").to_string();
    let b = TestNode::start_with(&bdir.join("data"), move |c| {
        c.tls_cert = Some(bf.cert);
        c.tls_key = Some(bf.key);
        c.peer_tls_ca = Some(b_ca);
        c.peer_mtls = true;
        c.cluster_secret = Some(SECRET.into());
        c.peers = vec![seed];
        c.anti_entropy_interval_ms = 50;
    })
    .await;
    let bc = tls_client(other.cert_pem.as_bytes()).build().unwrap();
    let r = bc
        .put(b.url("/v1/collections/c/docs/x"))
        .json(&json!({"leak": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    poll_until("b marks the node down", Duration::from_secs(20), || {
        first_peer_down(&bc, b.url("/v1/cluster"))
    })
    .await;
    let ac = tls_client(p.ca.cert_pem.as_bytes()).build().unwrap();
    let v: serde_json::Value = ac
        .get(node.url("/v1/collections"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["collections"], json!([]), "data moved: {v}");
    b.stop().await;
    node.stop().await;
}

/// A proxy on the same host makes every client look like loopback: only `trusted_proxies` makes
/// the node read `X-Forwarded-For`, and then no forwarded request counts as loopback.
#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let http = common::client();
    let status = |node: &TestNode, xff: Option<&'static str>| {
        let mut r = http.get(node.url("/v1/collections"));
        if let Some(x) = xff {
            r = r.header("x-forwarded-for", x);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let untrusting = TestNode::start(&dir.path().join("a")).await;
    // Ignored: a client cannot talk its way out of (or into) loopback.
    assert_eq!(status(&untrusting, Some("203.0.113.9")).await, 200);
    untrusting.stop().await;
    let behind_proxy = TestNode::start_with(&dir.path().join("b"), |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    assert_eq!(status(&behind_proxy, Some("203.0.113.9")).await, 403);
    assert_eq!(status(&behind_proxy, Some("garbage")).await, 403);
    // A forwarded request is never loopback: not when the header says so (a client may have
    // written it), nor without a header (a TCP or TLS proxy).
    assert_eq!(status(&behind_proxy, Some("127.0.0.1")).await, 403);
    assert_eq!(status(&behind_proxy, None).await, 403);
    behind_proxy.stop().await;
}

/// Peer addresses may be host names, and the name a node dials is the one checked against the
/// peer's certificate: two nodes certified for `localhost` only and addressed as `localhost`
/// converge, while a node dialling the same listener as `127.0.0.1` (a name the certificate does
/// not carry) refuses it and moves no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_host_names_are_checked_against_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::new("host-name CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let start = |name: &'static str, peers: Vec<String>| {
        let pem = ca.node(name, &["localhost"], Validity::Lasting).unwrap();
        let files = write_node(dir.path(), name, &pem).unwrap();
        let ca_path = ca_path.clone();
        let data = dir.path().join(name);
        async move {
            TestNode::start_with(&data, move |c| {
                c.tls_cert = Some(files.cert);
                c.tls_key = Some(files.key);
                c.peer_tls_ca = Some(ca_path);
                c.peer_mtls = true;
                c.cluster_secret = Some(SECRET.into());
                c.advertise = Some(format!("localhost:{}", c.listen.port()));
                c.peers = peers;
                c.anti_entropy_interval_ms = 50;
            })
            .await
        }
    };
    // Clients, too, must dial these nodes by the name their certificates carry.
    let url = |n: &TestNode, path: &str| n.url(path).replace("127.0.0.1", "localhost");
    let a = start("a", vec![]).await;
    let a_port = a.url.rsplit(':').next().unwrap().to_string();
    let b = start("b", vec![format!("localhost:{a_port}")]).await;
    let http = tls_client(ca.cert_pem.as_bytes()).build().unwrap();
    for (node, id) in [(&a, "from-a"), (&b, "from-b")] {
        let r = http
            .put(url(node, &format!("/v1/collections/c/docs/{id}")))
            .json(&json!({"by": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    for node in [&a, &b] {
        poll_until(
            "both documents on both nodes",
            Duration::from_secs(30),
            || async {
                let r = http.get(url(node, "/v1/collections/c/docs")).send().await;
                let Ok(r) = r else { return false };
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                v["docs"].as_array().map(Vec::len) == Some(2)
            },
        )
        .await;
    }

    // The same listener dialled by address: the certificate does not name 127.0.0.1.
    let c = start("c", vec![format!("127.0.0.1:{a_port}")]).await;
    let r = http
        .put(url(&c, "/v1/collections/c/docs/from-c"))
        .json(&json!({"by": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    poll_until("c marks a down", Duration::from_secs(20), || {
        first_peer_down(&http, url(&c, "/v1/cluster"))
    })
    .await;
    let r = http
        .get(url(&a, "/v1/collections/c/docs/from-c"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a document crossed a refused handshake");
    c.stop().await;
    b.stop().await;
    a.stop().await;
}

/// A node follows its `peer_tls_ca` file as it does its own certificate: with a CA file that
/// does not sign its peer it cannot sync; once the right CA is written over it, the peer client
/// is rebuilt (no restart, no signal) and the nodes converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_peer_ca_is_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), Validity::Lasting);
    let (a_cert, a_key, a_ca) = (p.cert.clone(), p.key.clone(), p.ca_path.clone());
    let a = TestNode::start_with(&dir.path().join("a"), move |c| {
        c.tls_cert = Some(a_cert);
        c.tls_key = Some(a_key);
        c.peer_tls_ca = Some(a_ca);
        c.cluster_secret = Some(SECRET.into());
    })
    .await;
    let bdir = dir.path().join("b");
    std::fs::create_dir_all(&bdir).unwrap();
    let b_files = write_node(
        &bdir,
        "b",
        &p.ca.node("b", &["127.0.0.1"], Validity::Lasting).unwrap(),
    )
    .unwrap();
    let b_ca = bdir.join("peer-ca.pem");
    let stranger = LocalCa::new("not the cluster's CA").unwrap();
    std::fs::write(&b_ca, &stranger.cert_pem).unwrap();
    let seed = a.url.trim_start_matches("https://").to_string();
    let b_ca_for_config = b_ca.clone();
    let b = TestNode::start_with(&bdir.join("data"), move |c| {
        c.tls_cert = Some(b_files.cert);
        c.tls_key = Some(b_files.key);
        c.peer_tls_ca = Some(b_ca_for_config);
        c.cluster_secret = Some(SECRET.into());
        c.peers = vec![seed];
        c.anti_entropy_interval_ms = 50;
    })
    .await;
    let http = tls_client(p.ca.cert_pem.as_bytes()).build().unwrap();
    let r = http
        .put(a.url("/v1/collections/c/docs/d"))
        .json(&json!({"v": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    poll_until("b cannot verify a", Duration::from_secs(20), || {
        first_peer_down(&http, b.url("/v1/cluster"))
    })
    .await;
    let r = http
        .get(b.url("/v1/collections/c/docs/d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "synced while b could not verify a");

    std::fs::write(&b_ca, &p.ca.cert_pem).unwrap();
    poll_until(
        "b syncs with the new CA",
        Duration::from_secs(30),
        || async {
            http.get(b.url("/v1/collections/c/docs/d"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        },
    )
    .await;
    b.stop().await;
    a.stop().await;
}

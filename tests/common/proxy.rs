//! A fault-injecting TCP proxy for partition tests: one in front of each node's peer traffic.
//! Nodes send peer traffic from distinct loopback addresses (127.0.0.x), so the proxy can cut
//! the link from one node to another while every other link keeps working, and cutting a link
//! also kills its open (pooled keep-alive) connections.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};

struct Inner {
    target: Mutex<Option<SocketAddr>>,
    blocked: Mutex<HashSet<IpAddr>>,
    conns: Mutex<Vec<(IpAddr, tokio::task::AbortHandle)>>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let inner = Arc::new(Inner {
            target: Mutex::new(None),
            blocked: Mutex::new(HashSet::new()),
            conns: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, from)) = listener.accept().await else {
                    continue;
                };
                let target = *i.target.lock();
                let Some(target) = target else { continue };
                if i.blocked.lock().contains(&from.ip()) {
                    continue; // dropped: the connection is reset
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                let mut conns = i.conns.lock();
                conns.retain(|(_, h)| !h.is_finished());
                conns.push((from.ip(), task.abort_handle()));
            }
        });
        Proxy {
            addr,
            inner,
            accept,
        }
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.inner.target.lock() = Some(target);
    }

    /// Cuts traffic from `ip` (new and open connections).
    pub fn block(&self, ip: IpAddr) {
        self.inner.blocked.lock().insert(ip);
        for (from, h) in self.inner.conns.lock().iter() {
            if *from == ip {
                h.abort();
            }
        }
    }

    pub fn unblock(&self, ip: IpAddr) {
        self.inner.blocked.lock().remove(&ip);
    }

    pub fn unblock_all(&self) {
        self.inner.blocked.lock().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, h) in self.inner.conns.lock().iter() {
            h.abort();
        }
    }
}

//! A TCP proxy between the service and PostgreSQL or Redis that injects the faults seen
//! in production: connections reset (a restart, or PgBouncer whose upstream is down),
//! connections refused (nothing listening), and a blackhole (a network that drops every
//! packet: nothing answers and nothing closes). Faults apply to open connections at once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes flow both ways.
    Pass,
    /// Open connections are reset; new ones are accepted and reset at once.
    Reset,
    /// Open connections are reset and the port stops listening.
    Refuse,
    /// Nothing is delivered either way and nothing is closed. Connections held open
    /// through a blackhole are reset when it ends, as their peers gave up on them.
    Blackhole,
}

#[derive(Debug, Clone, Copy)]
struct State {
    fault: Fault,
    /// Connections opened under an older epoch are reset.
    epoch: u64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: watch::Sender<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Ends every connection task too.
        self.state.send_modify(|s| s.epoch += 1);
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (state, watcher) = watch::channel(State {
            fault: Fault::Pass,
            epoch: 0,
        });
        let task = tokio::spawn(accept_loop(listener, addr, upstream, watcher));
        FaultProxy { addr, state, task }
    }

    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| {
            // Resetting and refusing end what is open; so does the end of a blackhole.
            if matches!(fault, Fault::Reset | Fault::Refuse) || s.fault == Fault::Blackhole {
                s.epoch += 1;
            }
            s.fault = fault;
        });
    }

    /// `url` with its `host:port` replaced by the proxy's.
    pub fn url_for(&self, url: &str, upstream: &str) -> String {
        assert!(url.contains(upstream), "{url} does not name {upstream}");
        url.replacen(upstream, &self.addr.to_string(), 1)
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: String,
    mut state: watch::Receiver<State>,
) {
    let mut listener = Some(listener);
    loop {
        let now = *state.borrow_and_update();
        if now.fault == Fault::Refuse {
            listener = None;
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        let current = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let accepted = tokio::select! {
            accepted = current.accept() => accepted,
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let Ok((client, _)) = accepted else { continue };
        let now = *state.borrow();
        match now.fault {
            Fault::Reset | Fault::Refuse => reset(client),
            Fault::Pass | Fault::Blackhole => {
                tokio::spawn(connection(
                    client,
                    upstream.clone(),
                    state.clone(),
                    now.epoch,
                ));
            }
        }
    }
}

fn reset(stream: TcpStream) {
    // Linger 0 makes the close an RST, as a crashed peer's kernel would send.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn connection(
    client: TcpStream,
    upstream: String,
    state: watch::Receiver<State>,
    epoch: u64,
) {
    let server = loop {
        // A connection accepted into a blackhole waits for the fault to end.
        if state.borrow().epoch != epoch {
            return reset(client);
        }
        if state.borrow().fault == Fault::Pass {
            match TcpStream::connect(&upstream).await {
                Ok(s) => break s,
                Err(_) => return reset(client),
            }
        }
        let mut watcher = state.clone();
        if watcher.changed().await.is_err() {
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Linger 0 on both: whenever a fault ends the connection, both peers see an RST, as
    // from a crashed server or a reset middlebox.
    #[allow(deprecated)]
    {
        let _ = client.set_linger(Some(Duration::ZERO));
        let _ = server.set_linger(Some(Duration::ZERO));
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, state.clone(), epoch);
    let down = pump(server_read, client_write, state.clone(), epoch);
    tokio::pin!(up, down);
    // One side ending normally leaves the other running (a half-close); a fault ends both.
    tokio::select! {
        killed = &mut up => if !killed { down.await; },
        killed = &mut down => if !killed { up.await; },
    }
}

/// Copies one direction; true when a fault ended it.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    epoch: u64,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let now = *state.borrow_and_update();
        if now.epoch != epoch {
            return true;
        }
        if now.fault == Fault::Blackhole {
            if state.changed().await.is_err() {
                return true;
            }
            continue;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return false;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return false;
                    }
                }
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return true;
                }
            }
        }
    }
}

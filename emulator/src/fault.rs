//! A TCP proxy that injects faults between a client and a Volt, for tests: latency, a
//! bandwidth cap, a blackhole (bytes held, nothing forwarded, no reset), cutting every live
//! connection at once, and refusing new ones. Each control takes effect on live connections.
//!
//! ```no_run
//! # async fn demo(emulator: &tdx_volt_emulator::Emulator) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tdx_volt_emulator::fault::{route_config_through, FaultProxy};
//!
//! let grpc: std::net::SocketAddr = emulator.address().parse().expect("host:port");
//! let proxy = FaultProxy::start(grpc).await?;
//! let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
//!     emulator.config_path(),
//! )?)?;
//! let through = route_config_through(&config, Some(proxy.addr()), None)?;
//! // ... give `through` to the client under test, then:
//! proxy.set_latency(Duration::from_millis(200));
//! proxy.pause();
//! proxy.resume();
//! proxy.cut_all();
//! # let _ = through;
//! # Ok(())
//! # }
//! ```

mod config;
mod pipe;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use config::route_config_through;

/// How long the proxy waits for the upstream to accept a connection before it drops the
/// client's.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The controls, shared by the proxy's handle and every connection.
struct Controls {
    upstream: SocketAddr,
    latency: watch::Sender<Duration>,
    throttle: watch::Sender<Option<u64>>,
    paused: watch::Sender<bool>,
    refuse: watch::Sender<bool>,
    /// Bumped by [`FaultProxy::cut_all`]: every connection open then ends.
    cuts: watch::Sender<u64>,
    /// Connections being proxied right now.
    live: watch::Sender<usize>,
}

/// A fault-injecting TCP proxy on `127.0.0.1`, forwarding to one upstream address. Dropping it
/// stops it and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    controls: Arc<Controls>,
    accepting: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.controls.upstream)
            .finish()
    }
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `upstream`, with no fault
    /// until one is set.
    pub async fn start(upstream: SocketAddr) -> tdx_volt::Result<FaultProxy> {
        let io = |what: &str, e: std::io::Error| {
            tdx_volt::Error::new(tdx_volt::ErrorKind::Io, what.to_owned()).with_source(e)
        };
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| io("binding the fault proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| io("the fault proxy's address", e))?;
        let controls = Arc::new(Controls {
            upstream,
            latency: watch::Sender::new(Duration::ZERO),
            throttle: watch::Sender::new(None),
            paused: watch::Sender::new(false),
            refuse: watch::Sender::new(false),
            cuts: watch::Sender::new(0),
            live: watch::Sender::new(0),
        });
        let accepting = tokio::spawn(accept_loop(listener, Arc::clone(&controls)));
        Ok(FaultProxy {
            addr,
            controls,
            accepting,
        })
    }

    /// Where clients connect: `127.0.0.1` and the port bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every chunk by `latency` in each direction (a round trip gains twice that).
    pub fn set_latency(&self, latency: Duration) {
        self.controls.latency.send_replace(latency);
    }

    /// Caps each direction of each connection at `bytes_per_sec` (`None`: no cap).
    pub fn set_throttle(&self, bytes_per_sec: Option<u64>) {
        self.controls.throttle.send_replace(bytes_per_sec);
    }

    /// Forwards nothing, in either direction, until [`FaultProxy::resume`]: connections stay
    /// open and what arrives is held (up to a bounded buffer per direction, then TCP flow
    /// control holds the sender), as on a network path that silently drops everything.
    pub fn pause(&self) {
        self.controls.paused.send_replace(true);
    }

    /// Delivers what was held during a pause, and forwards again.
    pub fn resume(&self) {
        self.controls.paused.send_replace(false);
    }

    /// Drops every live connection at once (both sides see the connection close); new ones
    /// are still accepted.
    pub fn cut_all(&self) {
        self.controls.cuts.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// While `true`, each new connection is accepted and closed at once, without reaching the
    /// upstream; live connections are left alone.
    pub fn refuse_new(&self, refuse: bool) {
        self.controls.refuse.send_replace(refuse);
    }

    /// How many connections are being proxied right now.
    pub fn connections(&self) -> usize {
        *self.controls.live.borrow()
    }

    /// Waits until exactly `n` connections are being proxied.
    pub async fn wait_for_connections(&self, n: usize) {
        let mut live = self.controls.live.subscribe();
        // The sender lives as long as `self`: the wait ends only with the count.
        let _ = live.wait_for(|count| *count == n).await;
    }
}

async fn accept_loop(listener: TcpListener, controls: Arc<Controls>) {
    // Dropped with this task (when the proxy is): every connection ends with it.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors, say: let connections finish before trying again.
                tracing::debug!("fault proxy: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if *controls.refuse.borrow() {
            drop(client);
            continue;
        }
        connections.spawn(serve(client, Arc::clone(&controls)));
    }
}

/// Counts a connection as live for as long as it is held.
struct Live<'a>(&'a watch::Sender<usize>);

impl<'a> Live<'a> {
    fn new(live: &'a watch::Sender<usize>) -> Live<'a> {
        live.send_modify(|n| *n += 1);
        Live(live)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn serve(client: TcpStream, controls: Arc<Controls>) {
    let _live = Live::new(&controls.live);
    let mut cuts = controls.cuts.subscribe();
    let proxied = async {
        let upstream = match tokio::time::timeout(
            UPSTREAM_CONNECT_TIMEOUT,
            TcpStream::connect(controls.upstream),
        )
        .await
        {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => return tracing::debug!("fault proxy: upstream: {e}"),
            Err(_) => return tracing::debug!("fault proxy: upstream did not accept in time"),
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        let (up, down) = (controls_view(&controls), controls_view(&controls));
        tokio::join!(
            pipe::forward(client_read, upstream_write, &up),
            pipe::forward(upstream_read, client_write, &down),
        );
    };
    tokio::select! {
        () = proxied => {}
        _ = cuts.changed() => tracing::debug!("fault proxy: connection cut"),
    }
}

fn controls_view(controls: &Controls) -> pipe::Faults {
    pipe::Faults {
        latency: controls.latency.subscribe(),
        throttle: controls.throttle.subscribe(),
        paused: controls.paused.subscribe(),
    }
}

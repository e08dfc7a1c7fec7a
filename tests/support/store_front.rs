//! A loopback TCP front for a real store (moto) that can be switched to hang: the sidecar's
//! SDK is pointed at the front, which forwards to moto while healthy and, when hanging,
//! accepts connections, reads the requests and never answers — a store that is up at the TCP
//! level and dead above it, which moto cannot play by itself. It counts the HTTP requests it
//! received while hanging, i.e. the store calls the sidecar made during the outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The front; dropping it stops accepting.
pub struct StoreFront {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    hanging: watch::Sender<bool>,
    calls_while_hanging: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
}

impl StoreFront {
    /// Serves on `listener` (bound before the runtime, so its address can go into the
    /// environment while no other thread runs) in front of `upstream`.
    pub fn start(listener: std::net::TcpListener, upstream: std::net::SocketAddr) -> Self {
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (hanging, watching) = watch::channel(false);
        let calls_while_hanging = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let (calls, stop) = (calls_while_hanging.clone(), stopped.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (watching, calls) = (watching.clone(), calls.clone());
                tokio::spawn(async move {
                    if *watching.borrow() {
                        swallow(client, calls).await;
                    } else {
                        forward(client, upstream, watching).await;
                    }
                });
            }
        });
        Self {
            endpoint,
            hanging,
            calls_while_hanging,
            stopped,
        }
    }

    /// From now on every connection (open ones included) gets no answer.
    pub fn hang(&self) {
        self.calls_while_hanging.store(0, Ordering::SeqCst);
        self.hanging.send_replace(true);
    }

    /// Back to forwarding (to whatever listens upstream, or nothing).
    pub fn forward(&self) {
        self.hanging.send_replace(false);
    }

    /// HTTP requests received since [`StoreFront::hang`].
    pub fn calls_while_hanging(&self) -> usize {
        self.calls_while_hanging.load(Ordering::SeqCst)
    }
}

impl Drop for StoreFront {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Reads requests and counts them (one per request line), answering nothing.
async fn swallow(mut client: TcpStream, calls: Arc<AtomicUsize>) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = client.read(&mut buffer).await {
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&buffer[..n]);
        calls.fetch_add(text.matches("POST / HTTP/1.1").count(), Ordering::SeqCst);
    }
}

/// Pipes both ways until either side closes or the front starts hanging (then the client's
/// connection is dropped, as a store that died mid-connection would).
async fn forward(
    mut client: TcpStream,
    upstream: std::net::SocketAddr,
    mut watching: watch::Receiver<bool>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = watching.wait_for(|hanging| *hanging) => {}
    }
    let _ = client.shutdown().await;
}

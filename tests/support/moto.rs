//! A real AWS wire-API server for the tests: `moto_server` from PyPI's `moto[server]`, on a
//! loopback port of its own, killed when dropped. Tests talk to it with static test
//! credentials, and the SDK is told never to ask the instance metadata address.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::python::python_tool;

/// The moto release the tests were written against.
const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts moto on `port` (a restart after [`Moto::kill`] reuses the old port). moto keeps
    /// its state in memory: a restarted server is empty.
    pub fn start_on(port: u16) -> Self {
        let server = python_tool(MOTO_REQUIREMENT, |venv| {
            Some(venv.join("bin/moto_server")).filter(|p| p.is_file())
        });
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Stops the server (an outage, as the sidecar sees it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

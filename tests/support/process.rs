//! `serve` as a process of its own, for what only a real process shows: signals, exit codes,
//! what reaches stderr.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port};

/// A `serve` child on free loopback ports; killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub authz: u16,
    pub http: u16,
    pub dir: TempDir,
}

impl ServeProcess {
    /// Writes `config.yaml` — `listen:` on two free ports, then `rest` — into a new folder
    /// named after `name`, and starts `serve` on it; `adjust` may set the environment or stderr.
    pub fn spawn(name: &str, rest: &str, adjust: impl FnOnce(&mut Command, &TempDir)) -> Self {
        let dir = TempDir::new(name);
        let (authz, http) = (free_port(), free_port());
        let config = dir.write(
            "config.yaml",
            &format!("listen: {{ authz: '127.0.0.1:{authz}', http: '127.0.0.1:{http}' }}\n{rest}"),
        );
        let mut command = Command::new(env!("CARGO_BIN_EXE_evs-token-vending"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        adjust(&mut command, &dir);
        let child = command.spawn().expect("serve");
        Self {
            child,
            authz,
            http,
            dir,
        }
    }

    /// `serve` with a generated key, the sample grants and `issuer` trusted, then `extra`
    /// config (e.g. `shutdown:`); `adjust` as in [`ServeProcess::spawn`].
    pub fn trusting(
        name: &str,
        issuer: &str,
        extra: &str,
        adjust: impl FnOnce(&mut Command, &TempDir),
    ) -> Self {
        let rest = format!(
            "token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: '{issuer}' }} ]
grants: {{ file: grants.yaml }}
{extra}"
        );
        Self::spawn(name, &rest, |command, dir| {
            dir.write("grants.yaml", evs_token_vending::demo::SAMPLE_GRANTS);
            adjust(command, dir);
        })
    }

    /// The config file it runs with.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Waits until both ports accept connections.
    pub async fn wait_listening(&self) {
        let started = Instant::now();
        for port in [self.http, self.authz] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "serve did not start"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
    }

    /// Its exit status, or a panic when it is still running `within` after `since`.
    pub async fn exit_status(&mut self, since: Instant, within: Duration) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if since.elapsed() > within {
                let _ = self.child.kill();
                panic!("still running {within:?} after the signal");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

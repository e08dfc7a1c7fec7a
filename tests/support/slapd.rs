//! A real OpenLDAP `slapd` on a loopback port, with a generated config and an LDIF.
//!
//! The Debian package and the libraries it needs that a slim machine lacks are fetched with
//! `apt-get download` and unpacked with `dpkg -x` into `target/test-deps/slapd/`: nothing is
//! installed system-wide. The directory is loaded with `slapd -T add` (slapadd) before start;
//! the `memberof` overlay is loaded, so entries may carry `memberOf` (slapadd takes the values
//! as written). A failed fetch fails the test: nothing ever skips.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::python::deps_dir;
use super::{TempDir, free_port};

/// The suffix of the test directory.
pub const SUFFIX: &str = "dc=example,dc=com";
/// The administrator, who may bind with [`ROOT_PASSWORD`].
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const ROOT_PASSWORD: &str = "test-only-secret";

/// Packages unpacked beside slapd: the libraries it links that a slim image may not have.
const LIBRARIES: [&str; 7] = [
    "libltdl7",
    "libwrap0",
    "libldap-2.5-0",
    "libsasl2-2",
    "libsasl2-modules-db",
    "libargon2-1",
    "libodbc2",
];

/// A running slapd.
pub struct Slapd {
    child: Option<Child>,
    /// `ldap://127.0.0.1:PORT`.
    pub url: String,
    /// `ldaps://127.0.0.1:PORT`, when started with TLS.
    pub ldaps_url: Option<String>,
    dir: TempDir,
}

/// A server certificate and its key, PEM, for StartTLS and ldaps://.
pub struct ServerTls<'a> {
    pub certificate: &'a str,
    pub key: &'a str,
}

impl Slapd {
    /// Starts slapd holding the base entries plus `ldif`.
    pub fn start(ldif: &str) -> Self {
        Self::start_with(ldif, None)
    }

    /// The same, with TLS: StartTLS on `url`, and `ldaps_url` besides.
    pub fn start_with(ldif: &str, tls: Option<ServerTls<'_>>) -> Self {
        let root = installed();
        let dir = TempDir::new("slapd");
        std::fs::create_dir_all(dir.path().join("db")).expect("db folder");
        let mut slapd_conf = config(&root, dir.path());
        if let Some(tls) = &tls {
            let certificate = dir.write("server.pem", tls.certificate);
            let key = dir.write("server.key", tls.key);
            // Global directives: before the first `database` line.
            slapd_conf = slapd_conf.replacen(
                "database mdb",
                &format!(
                    "TLSCertificateFile {}\nTLSCertificateKeyFile {}\ndatabase mdb",
                    certificate.display(),
                    key.display()
                ),
                1,
            );
        }
        let conf = dir.write("slapd.conf", &slapd_conf);
        let data = dir.write("data.ldif", &format!("{}\n{ldif}", base_entries()));
        let added = slapd(&root)
            .args(["-T", "add", "-f"])
            .arg(&conf)
            .arg("-l")
            .arg(&data)
            .output()
            .expect("run slapadd");
        assert!(
            added.status.success(),
            "slapadd refused the LDIF: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let port = free_port();
        let url = format!("ldap://127.0.0.1:{port}");
        let ldaps_url = tls
            .is_some()
            .then(|| format!("ldaps://127.0.0.1:{}", free_port()));
        let listen = match &ldaps_url {
            Some(ldaps) => format!("{url}/ {ldaps}/"),
            None => format!("{url}/"),
        };
        let child = slapd(&root)
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(listen)
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "slapd did not listen on {url}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child: Some(child),
            url,
            ldaps_url,
            dir,
        }
    }

    /// Stops slapd at once (as a crashed or unreachable directory).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A file in slapd's folder (for a bind password file).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        self.dir.write(name, text)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn base_entries() -> String {
    format!(
        "dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups
"
    )
}

fn config(root: &Path, dir: &Path) -> String {
    let schema = root.join("etc/ldap/schema");
    format!(
        "include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
modulepath {modules}
moduleload back_mdb
moduleload memberof
pidfile {dir}/slapd.pid
database mdb
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PASSWORD}
directory {dir}/db
maxsize 104857600
overlay memberof
",
        schema = schema.display(),
        modules = root.join("usr/lib/ldap").display(),
        dir = dir.display(),
    )
}

fn slapd(root: &Path) -> Command {
    let mut command = Command::new(root.join("usr/sbin/slapd"));
    command.env(
        "LD_LIBRARY_PATH",
        format!(
            "{}:{}",
            root.join("usr/lib/x86_64-linux-gnu").display(),
            root.join("lib/x86_64-linux-gnu").display()
        ),
    );
    command
}

/// The unpacked packages' root, fetched on first use (serialized across test processes).
fn installed() -> PathBuf {
    let deps = deps_dir();
    std::fs::create_dir_all(&deps).expect("create target/test-deps");
    let lock = std::fs::File::create(deps.join(".slapd.lock")).expect("create slapd lock");
    lock.lock().expect("take slapd lock");
    let home = deps.join("slapd");
    let root = home.join("root");
    if root.join("usr/sbin/slapd").is_file() {
        return root;
    }
    let debs = home.join("debs");
    std::fs::create_dir_all(&debs).expect("create debs folder");
    if !download(&debs, "slapd") {
        let updated = Command::new("apt-get").args(["update", "-qq"]).status();
        assert!(
            updated.is_ok_and(|s| s.success()),
            "apt-get update failed; the LDAP tests need Debian's slapd package"
        );
        assert!(
            download(&debs, "slapd"),
            "apt-get download slapd failed; the LDAP tests need it"
        );
    }
    for library in LIBRARIES {
        // Names differ between Debian releases; whatever is missing shows in the ldd check.
        download(&debs, library);
    }
    for deb in std::fs::read_dir(&debs).expect("read debs") {
        let deb = deb.expect("deb entry").path();
        let unpacked = Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .expect("run dpkg -x");
        assert!(unpacked.success(), "dpkg -x {} failed", deb.display());
    }
    let linked = slapd(&root)
        .arg("-VV")
        .output()
        .expect("run the unpacked slapd");
    assert!(
        linked.status.success(),
        "the unpacked slapd does not run: {}",
        String::from_utf8_lossy(&linked.stderr)
    );
    root
}

fn download(into: &Path, package: &str) -> bool {
    Command::new("apt-get")
        .args(["download", "-qq", package])
        .current_dir(into)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

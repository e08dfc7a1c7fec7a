//! An AWS world for IAM callers: moto (IAM and STS wire APIs), the verifying STS front of
//! `sts_front.py` before it, and the real AWS CLI (`awscli` from PyPI) to create the role,
//! assume it, and make the caller's token with `aws eks get-token`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::moto::Moto;
use super::python::{python_tool_in, python_with};
use super::{TempDir, free_port};

/// The AWS CLI release the tests were written against.
const AWSCLI_REQUIREMENT: &str = "awscli==1.46.3";
/// moto's default account (the sidecar's own: its static test credentials belong to it).
pub const ACCOUNT: &str = "123456789012";
/// Another AWS customer's account, in the same moto: moto keys each STS session to the
/// account of the role it assumed, and serves that account's IAM to it.
pub const OTHER_ACCOUNT: &str = "999999999999";
/// The role the tests' caller assumes.
pub const ROLE: &str = "orders-writer";
/// The sidecar's `aws_iam.server_id` in the tests.
pub const SERVER_ID: &str = "evs-test";

/// Temporary credentials of an assumed role.
pub struct RoleSession {
    pub access_key: String,
    pub secret: String,
    pub token: String,
}

/// moto, the STS front, and a role with grants tags, assumed once.
pub struct IamWorld {
    pub moto: Moto,
    pub front: Child,
    /// `http://127.0.0.1:PORT` of the STS front.
    pub sts_endpoint: String,
    pub session: RoleSession,
    pub dir: TempDir,
}

/// The real AWS CLI, installed on first use.
pub fn aws_cli() -> PathBuf {
    python_tool_in("awscli-venv", AWSCLI_REQUIREMENT, |venv| {
        Some(venv.join("bin/aws")).filter(|p| p.is_file())
    })
}

/// Runs `aws …` against `endpoint` with static test credentials; returns its JSON output.
pub fn aws(endpoint: &str, args: &[&str]) -> Value {
    aws_as(None, endpoint, args)
}

/// Runs `aws …` against `endpoint` as `session` (static test credentials when `None`).
pub fn aws_as(session: Option<&RoleSession>, endpoint: &str, args: &[&str]) -> Value {
    let mut command = Command::new(aws_cli());
    command
        .args(args)
        .args(["--endpoint-url", endpoint, "--output", "json"])
        .env("AWS_DEFAULT_REGION", "us-east-1");
    match session {
        Some(s) => command
            .env("AWS_ACCESS_KEY_ID", &s.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s.secret)
            .env("AWS_SESSION_TOKEN", &s.token),
        None => command
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing"),
    };
    let output = command.output().expect("run aws");
    assert!(
        output.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

impl RoleSession {
    /// The credentials `aws sts assume-role` printed.
    pub fn from_cli(assumed: &Value) -> Self {
        let credentials = &assumed["Credentials"];
        let text = |key: &str| credentials[key].as_str().expect(key).to_owned();
        Self {
            access_key: text("AccessKeyId"),
            secret: text("SecretAccessKey"),
            token: text("SessionToken"),
        }
    }
}

impl IamWorld {
    /// Starts moto and the STS front, creates the role with `tags` (`Key=…,Value=…` as the
    /// CLI takes them) and assumes it.
    pub fn start(tags: &[&str]) -> Self {
        let moto = Moto::start();
        let dir = TempDir::new("iam");
        create_role(None, &moto.endpoint, ROLE, tags);
        let assumed = aws(
            &moto.endpoint,
            &[
                "sts",
                "assume-role",
                "--role-arn",
                &role_arn(),
                "--role-session-name",
                "pod-7",
            ],
        );
        let session = RoleSession::from_cli(&assumed);
        let secrets = dir.write(
            "secrets.json",
            &serde_json::json!({ &session.access_key: [&session.secret, &session.token] })
                .to_string(),
        );
        let python = python_with("moto[server]==5.2.5", "moto");
        let port = free_port();
        let front = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/sts_front.py"
            ))
            .args(["--port", &port.to_string(), "--moto", &moto.endpoint])
            .arg("--secrets")
            .arg(&secrets)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the STS front");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the STS front did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            moto,
            front,
            sts_endpoint: format!("http://127.0.0.1:{port}"),
            session,
            dir,
        }
    }

    /// `aws eks get-token --cluster-name <server_id>` as the role's session, for the front.
    pub fn eks_token(&self, server_id: &str) -> String {
        self.eks_token_as(&self.session, server_id)
    }

    /// A genuine caller of another AWS customer: in `account`, `roles` are created (the
    /// first tagged with `tags`), and the first is assumed as session `pod-9`. The front is
    /// told the session's secret, so its tokens verify as any real STS would verify them.
    pub fn foreign_session(&self, account: &str, roles: &[&str], tags: &[&str]) -> RoleSession {
        let admin = RoleSession::from_cli(&aws(
            &self.moto.endpoint,
            &[
                "sts",
                "assume-role",
                "--role-arn",
                &format!("arn:aws:iam::{account}:role/admin"),
                "--role-session-name",
                "setup",
            ],
        ));
        for (i, role) in roles.iter().enumerate() {
            let role_tags = if i == 0 { tags } else { &[] };
            create_role(Some(&admin), &self.moto.endpoint, role, role_tags);
        }
        let session = RoleSession::from_cli(&aws_as(
            Some(&admin),
            &self.moto.endpoint,
            &[
                "sts",
                "assume-role",
                "--role-arn",
                &format!("arn:aws:iam::{account}:role/{}", roles[0]),
                "--role-session-name",
                "pod-9",
            ],
        ));
        self.tell_front(&session);
        session
    }

    /// Adds `session`'s secret to those the STS front verifies signatures with.
    pub fn tell_front(&self, session: &RoleSession) {
        let path = self.dir.path().join("secrets.json");
        let mut secrets: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("secrets")).unwrap();
        secrets[&session.access_key] = serde_json::json!([&session.secret, &session.token]);
        std::fs::write(&path, secrets.to_string()).expect("write secrets");
    }

    /// Queues the answer the STS front gives the next correctly signed request instead of
    /// moto's (see `sts_front.py`: for what neither moto nor a test account can produce).
    pub async fn answer_next(&self, status: u16, document: Value) {
        reqwest::Client::new()
            .post(format!("{}/__answer", self.sts_endpoint))
            .json(&serde_json::json!({ "status": status, "document": document }))
            .send()
            .await
            .expect("queue an STS answer")
            .error_for_status()
            .expect("the front queued it");
    }

    /// `aws eks get-token` as `session`.
    pub fn eks_token_as(&self, session: &RoleSession, server_id: &str) -> String {
        let output = Command::new(aws_cli())
            .args([
                "eks",
                "get-token",
                "--cluster-name",
                server_id,
                "--output",
                "json",
            ])
            .env("AWS_ACCESS_KEY_ID", &session.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &session.secret)
            .env("AWS_SESSION_TOKEN", &session.token)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_STS", &self.sts_endpoint)
            .output()
            .expect("run aws eks get-token");
        assert!(
            output.status.success(),
            "aws eks get-token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: Value = serde_json::from_slice(&output.stdout).expect("get-token JSON");
        printed["status"]["token"]
            .as_str()
            .expect("status.token")
            .to_owned()
    }

    /// How many requests the STS front received.
    pub async fn sts_calls(&self) -> u64 {
        super::get_json(&format!("{}/__calls", self.sts_endpoint)).await["calls"]
            .as_u64()
            .expect("calls")
    }

    /// The sidecar config that trusts this world: `aws_iam` plus `extra` grants settings.
    pub fn options(&self, grants_extra: &str) -> super::Options {
        self.options_with(grants_extra, "")
    }

    /// [`Self::options`] with more `aws_iam` keys (`accounts: […]`), spliced in as written.
    pub fn options_with(&self, grants_extra: &str, aws_iam_extra: &str) -> super::Options {
        super::Options {
            grants_source: "iam_role_tags".into(),
            grants_extra: format!(
                "iam_role_tags: {{ endpoint_url: '{}' }}\n  {grants_extra}",
                self.moto.endpoint
            ),
            extra_config: format!(
                "aws_iam: {{ enabled: true, server_id: {SERVER_ID}, sts_endpoint: '{}' {aws_iam_extra} }}",
                self.sts_endpoint
            ),
            ..Default::default()
        }
    }
}

impl Drop for IamWorld {
    fn drop(&mut self) {
        let _ = self.front.kill();
        let _ = self.front.wait();
    }
}

/// Creates the role `name` with `tags` (`Key=…,Value=…`), as `session` (the default account's
/// static credentials when `None`) — so in that session's account.
fn create_role(session: Option<&RoleSession>, endpoint: &str, name: &str, tags: &[&str]) {
    aws_as(
        session,
        endpoint,
        &[
            "iam",
            "create-role",
            "--role-name",
            name,
            "--assume-role-policy-document",
            r#"{"Version":"2012-10-17","Statement":[]}"#,
        ],
    );
    if !tags.is_empty() {
        let mut args = vec!["iam", "tag-role", "--role-name", name, "--tags"];
        args.extend_from_slice(tags);
        aws_as(session, endpoint, &args);
    }
}

/// The role's ARN.
pub fn role_arn() -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{ROLE}")
}

/// The presigned URL inside a `k8s-aws-v1.` token.
pub fn url_of(token: &str) -> String {
    use base64::Engine;
    let encoded = token
        .strip_prefix("k8s-aws-v1.")
        .expect("k8s-aws-v1. prefix");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .expect("base64url");
    String::from_utf8(bytes).expect("UTF-8 URL")
}

/// A `k8s-aws-v1.` token carrying `url`.
pub fn token_of(url: &str) -> String {
    use base64::Engine;
    format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    )
}

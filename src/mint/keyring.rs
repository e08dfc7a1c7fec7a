//! The key ring: every key we publish, the one we sign with, and its hot reload.
//!
//! `signing.keys_dir` holds PEM private keys and a file `active` naming the signer (with one
//! key, that key). Every key in the folder is published, so the reference rotation is done by
//! changing files alone: add the next key (published, not signing) → after the JWKS max-age,
//! name it in `active` → after the longest token lifetime, delete the old one. The folder is
//! polled (which also sees Kubernetes' atomic symlink swap of a mounted Secret) and SIGHUP
//! forces a reload; a change that does not load keeps the last good ring and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::Notify;

use super::Minter;
use super::keys::{KeyError, SigningKey};
use super::secrets_manager::SecretKeys;
use super::{SigningConfig, SigningSource};
use crate::algorithms::MIN_RSA_BITS;
use crate::file_stamp::FileStamp;
use crate::hot_reload::{HotReload, RefusedChange, keep_fresh, reload_now};

/// The keys we publish and the one we sign with.
pub struct KeyRing {
    /// Index of the signing key in `keys`.
    active: usize,
    /// Every published key.
    keys: Vec<SigningKey>,
    /// For our own tokens coming back: each key's `kid` (as a searcher, whose needle is the
    /// kid: a token header naming none is not one of ours), pinned algorithm and public key,
    /// built once with the ring rather than per Check.
    verifiers: Vec<(
        memchr::memmem::Finder<'static>,
        jsonwebtoken::Algorithm,
        jsonwebtoken::DecodingKey,
    )>,
    /// The JWKS document, serialized once.
    jwks: String,
    /// Strong ETag of `jwks`.
    etag: String,
    /// Distinct for every ring built in this process (token cache entries remember it).
    generation: u64,
}

impl KeyRing {
    /// A ring of `keys` that signs with `keys[active]`.
    pub fn new(active: usize, keys: Vec<SigningKey>) -> Self {
        let jwks = serde_json::json!({
            "keys": keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>(),
        })
        .to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jwks.as_bytes());
        let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]));
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let verifiers = keys
            .iter()
            .filter_map(|key| {
                let jwk: jsonwebtoken::jwk::Jwk =
                    serde_json::from_value(key.public_jwk().clone()).ok()?;
                let algorithm = key.algorithm().name().parse().ok()?;
                let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).ok()?;
                let kid = memchr::memmem::Finder::new(key.kid()).into_owned();
                Some((kid, algorithm, decoding))
            })
            .collect();
        Self {
            active,
            keys,
            verifiers,
            jwks,
            etag,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The pinned algorithm and public key of the published key `kid`.
    pub(crate) fn verifier(
        &self,
        kid: &str,
    ) -> Option<(jsonwebtoken::Algorithm, &jsonwebtoken::DecodingKey)> {
        self.verifiers
            .iter()
            .find(|(k, _, _)| k.needle() == kid.as_bytes())
            .map(|(_, algorithm, decoding)| (*algorithm, decoding))
    }

    /// Whether `header` (a token's decoded JOSE header) holds the `kid` of any published key
    /// anywhere: one that holds none is not one of ours, and need not be parsed. Our kids are
    /// RFC 7638 thumbprints, base64url text that JSON writes unescaped.
    pub(crate) fn is_named_in(&self, header: &[u8]) -> bool {
        self.verifiers
            .iter()
            .any(|(kid, ..)| kid.find(header).is_some())
    }

    /// This ring's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The key that signs.
    pub fn active(&self) -> &SigningKey {
        &self.keys[self.active]
    }

    /// The kids of every published key.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(SigningKey::kid).collect()
    }

    /// The JWKS document (`{"keys":[…]}`).
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// The JWKS's strong ETag (quoted).
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// Algorithms of the published keys, for discovery.
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut algs: Vec<_> = self.keys.iter().map(SigningKey::algorithm).collect();
        algs.sort_unstable();
        algs.dedup();
        algs.into_iter().map(|a| a.name()).collect()
    }

    /// Same signer and same published keys.
    fn same_as(&self, other: &KeyRing) -> bool {
        self.active().kid() == other.active().kid() && self.jwks == other.jwks
    }
}

/// Loads the keys of a folder: every `*.pem` is published; `active` names the signer.
/// Returns the index of the signing key and every key.
pub fn load_keys_dir(dir: &Path) -> Result<(usize, Vec<SigningKey>), KeyError> {
    let shown = dir.display().to_string();
    let files = key_files(dir).map_err(|e| KeyError::Read {
        path: shown.clone(),
        reason: e.kind(),
    })?;
    if files.is_empty() {
        return Err(KeyError::NoKeys { dir: shown });
    }
    let keys = files
        .iter()
        .map(|path| SigningKey::from_pem_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    let active_path = dir.join("active");
    let active = match std::fs::read_to_string(&active_path) {
        Ok(name) => {
            let name = name.trim().to_owned();
            files
                .iter()
                .position(|path| path.file_name().and_then(|n| n.to_str()) == Some(name.as_str()))
                .ok_or(KeyError::ActiveMissing { dir: shown, name })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if keys.len() == 1 {
                0
            } else {
                return Err(KeyError::NoActive {
                    dir: shown,
                    count: keys.len(),
                });
            }
        }
        Err(e) => {
            return Err(KeyError::Read {
                path: active_path.display().to_string(),
                reason: e.kind(),
            });
        }
    };
    Ok((active, keys))
}

/// The `*.pem` files of a folder, sorted. Hidden names are skipped: Kubernetes mounts Secrets
/// through `..data` folders whose content the visible names already point at.
fn key_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".pem") && path.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Where the keys come from, with the secret's client connected.
pub enum KeySource {
    /// `keys_dir`.
    KeysDir(PathBuf),
    /// `key_file`.
    KeyFile(PathBuf),
    /// `secrets_manager`, read again every poll interval.
    Secret(SecretKeys, Duration),
    /// `dev_generate`: one in-memory key, never reloaded.
    Generated,
}

impl KeySource {
    /// The source `signing:` describes (no key is read yet).
    pub async fn from_config(signing: &SigningConfig) -> Self {
        match &signing.source {
            SigningSource::KeysDir(dir) => KeySource::KeysDir(dir.clone()),
            SigningSource::KeyFile(file) => KeySource::KeyFile(file.clone()),
            SigningSource::SecretsManager(secret) => {
                KeySource::Secret(SecretKeys::connect(secret).await, secret.poll_interval)
            }
            SigningSource::DevGenerate => KeySource::Generated,
        }
    }

    /// Reads the keys.
    pub async fn load(&self) -> Result<KeyRing, KeyError> {
        match self {
            KeySource::KeysDir(dir) => {
                let (active, keys) = load_keys_dir(dir)?;
                Ok(KeyRing::new(active, keys))
            }
            KeySource::KeyFile(file) => Ok(KeyRing::new(0, vec![SigningKey::from_pem_file(file)?])),
            KeySource::Secret(secret, _) => {
                let (active, keys) = secret.load().await?;
                Ok(KeyRing::new(active, keys))
            }
            KeySource::Generated => {
                tracing::warn!(
                    "signing.dev_generate: signing with a key generated in memory; every restart \
                     changes it and replicas disagree. Never use this in production."
                );
                Ok(KeyRing::new(
                    0,
                    vec![SigningKey::generate_rsa(MIN_RSA_BITS)?],
                ))
            }
        }
    }

    /// What the source looks like without reading keys: file names, times and sizes plus
    /// `active`; `None` when only reading tells (a secret's version is checked by reading it).
    fn stamp(&self) -> Option<Stamp> {
        let describe = |path: &Path| (path.display().to_string(), FileStamp::of(path));
        match self {
            KeySource::KeysDir(dir) => Some(Stamp {
                files: key_files(dir)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| describe(p))
                    .collect(),
                active: std::fs::read_to_string(dir.join("active")).unwrap_or_default(),
            }),
            KeySource::KeyFile(file) => Some(Stamp {
                files: vec![describe(file)],
                active: String::new(),
            }),
            KeySource::Secret(..) | KeySource::Generated => None,
        }
    }
}

/// What the watched files looked like: each key file's stamp, and the content of `active`.
/// Any difference triggers a reload.
#[derive(PartialEq, Eq)]
pub(crate) struct Stamp {
    files: Vec<(String, FileStamp)>,
    active: String,
}

/// Reloads the minter's ring when the keys change or when asked (SIGHUP).
pub struct KeyRingReloader {
    source: KeySource,
    interval: Duration,
    minter: Arc<Minter>,
    refusal: RefusedChange,
    forced: Arc<Notify>,
}

impl KeyRingReloader {
    /// A reloader watching `source` every `file_interval` (files) or the secret's own poll
    /// interval, feeding `minter`.
    pub fn new(source: KeySource, file_interval: Duration, minter: Arc<Minter>) -> Self {
        let interval = match &source {
            KeySource::Secret(_, poll) => *poll,
            _ => file_interval,
        };
        Self {
            source,
            interval,
            minter,
            refusal: RefusedChange::default(),
            forced: Arc::new(Notify::new()),
        }
    }

    /// True when there is something to reload (a generated dev key has nothing).
    pub fn watches(&self) -> bool {
        !matches!(self.source, KeySource::Generated)
    }

    /// Why the last reload was refused, while the last good ring is still in use.
    pub fn last_error(&self) -> Option<Arc<String>> {
        self.refusal.reason()
    }

    /// Asks the watcher to reload now, whether or not the source looks changed.
    pub fn request_reload(&self) {
        self.forced.notify_one();
    }

    /// Loads the keys and swaps them in if they load; otherwise keeps the current ring.
    pub async fn reload(&self) {
        reload_now(self).await;
    }

    /// Runs until stopped: checks the source every interval, reloads on a change or a request.
    pub async fn run(self: Arc<Self>) {
        let (interval, forced) = (self.interval, self.forced.clone());
        keep_fresh(self, interval, Some(forced)).await;
    }
}

impl HotReload for KeyRingReloader {
    type Value = KeyRing;
    type Stamp = Stamp;
    type Error = KeyError;

    fn stamp(&self) -> Option<Stamp> {
        self.source.stamp()
    }

    async fn rebuild(&self) -> Result<KeyRing, KeyError> {
        self.source.load().await
    }

    fn put_in_force(&self, ring: KeyRing) {
        if ring.same_as(&self.minter.ring()) {
            return;
        }
        tracing::info!(active = %ring.active().kid(), published = ?ring.kids(), "signing keys reloaded");
        self.minter.replace_ring(ring);
    }

    fn refused(&self, error: &KeyError) {
        tracing::error!(error = %error, kid = %self.minter.ring().active().kid(), "signing key change refused; still signing with the last good keys");
    }

    fn refusal(&self) -> &RefusedChange {
        &self.refusal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("evs-keyring-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn add_key(dir: &Path) -> String {
        let key = SigningKey::generate_rsa(MIN_RSA_BITS).unwrap();
        let path = key.write_into(dir).unwrap();
        path.file_name().unwrap().to_str().unwrap().to_owned()
    }

    #[test]
    fn a_single_key_signs_without_an_active_file() {
        let dir = folder("single");
        add_key(&dir);
        let (active, keys) = load_keys_dir(&dir).unwrap();
        assert_eq!((active, keys.len()), (0, 1));
    }

    #[test]
    fn two_keys_need_an_active_file_naming_one_of_them() {
        let dir = folder("two");
        let first = add_key(&dir);
        let second = add_key(&dir);
        assert!(matches!(
            load_keys_dir(&dir),
            Err(KeyError::NoActive { count: 2, .. })
        ));
        std::fs::write(dir.join("active"), "gone.pem\n").unwrap();
        assert!(matches!(
            load_keys_dir(&dir),
            Err(KeyError::ActiveMissing { name, .. }) if name == "gone.pem"
        ));
        std::fs::write(dir.join("active"), format!("{second}\n")).unwrap();
        let (active, keys) = load_keys_dir(&dir).unwrap();
        let ring = KeyRing::new(active, keys);
        assert_eq!(format!("{}.pem", ring.active().kid()), second);
        assert_eq!(ring.kids().len(), 2, "both keys are published");
        assert!(ring.kids().iter().any(|kid| format!("{kid}.pem") == first));
    }

    #[test]
    fn hidden_files_and_other_extensions_are_not_keys() {
        let dir = folder("hidden");
        add_key(&dir);
        std::fs::write(dir.join(".hidden.pem"), "not a key").unwrap();
        std::fs::write(dir.join("notes.txt"), "not a key").unwrap();
        let (_, keys) = load_keys_dir(&dir).unwrap();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn an_empty_folder_and_a_garbage_key_are_refused() {
        let dir = folder("empty");
        assert!(matches!(load_keys_dir(&dir), Err(KeyError::NoKeys { .. })));
        std::fs::write(dir.join("bad.pem"), "garbage").unwrap();
        assert!(matches!(load_keys_dir(&dir), Err(KeyError::NotPem { .. })));
    }
}

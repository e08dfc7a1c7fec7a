//! Start-up and shutdown: builds every stage from a validated [`Config`], binds both
//! listeners, prefetches the issuers' keys and starts the background refreshers.
//!
//! Anything wrong (a key, the grants file, a port) stops start-up with an error naming it;
//! nothing runs half configured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use tokio::sync::watch;

use crate::authz::AuthzService;
use crate::background::Background;
use crate::bind::{BoundAuthz, bind_authz, bind_tcp, local_addr};
use crate::config::Config;
use crate::credential::Extractor;
use crate::decision_log::DecisionLog;
use crate::exchange::ExchangeService;
use crate::grants::GrantsLookup;
use crate::handshake::MutualTlsListener;
use crate::hot_reload::keep_fresh;
use crate::http::{SidePortState, router};
use crate::identity::Authenticator;
use crate::identity::aws_iam::{AwsIamVerifier, ServedAccounts};
use crate::identity::oidc::OidcVerifier;
use crate::identity::x509::X509Verifier;
pub use crate::listen::AuthzAddress;
use crate::listen::ListenConfig;
use crate::mint::Minter;
use crate::mint::keyring::{KeyRingReloader, KeySource};
use crate::pipeline::TokenVending;
use crate::server_tls::{RELOAD_INTERVAL, ReloadingTls, TlsFiles};
pub use crate::start_error::StartError;
pub(crate) use crate::start_error::issuer_client;
use crate::telemetry::Metrics;

/// The least time background work is given to stop after the listeners (the decision log's
/// last lines), even when the grace is spent.
const FLUSH_AT_LEAST: Duration = Duration::from_secs(1);

/// How long start-up waits for the issuers' keys before serving anyway.
const PREFETCH_WAIT: Duration = Duration::from_secs(5);
/// How long an HTTP/2 ping (`listen.authz_http2_keepalive`) may go unanswered.
const AUTHZ_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A running sidecar; dropping it does not stop it, [`RunningSidecar::shutdown`] does.
pub struct RunningSidecar {
    /// Where ext_authz listens (the bound port when the config said port 0).
    pub authz_addr: AuthzAddress,
    /// Where the side port listens.
    pub http_addr: SocketAddr,
    /// Where probes and metrics listen, when `listen.admin` is set.
    pub admin_addr: Option<SocketAddr>,
    /// The pipeline (tests and the demo inspect it).
    pub vending: Arc<TokenVending>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The signing keys' reloader.
    pub keys: Arc<KeyRingReloader>,
    /// How long in-flight work may take after a stop before connections are cut.
    pub grace: Duration,
    /// How long the listeners keep serving after [`RunningSidecar::begin_drain`].
    pub drain: Duration,
    draining: Arc<std::sync::atomic::AtomicBool>,
    stop: watch::Sender<bool>,
    /// The ext_authz, side and admin listeners.
    listeners: Background,
    /// Reloads, refreshes, the decision log's writer, LDAP drivers.
    background: Background,
}

impl RunningSidecar {
    /// Stops accepting, lets in-flight calls finish, then stops the background work (the
    /// decision log is flushed), each within the grace.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.wait_within_grace().await;
    }

    /// Waits until the listeners end (they end on a stop only).
    pub async fn wait(&mut self) {
        self.listeners.finished().await;
    }

    /// After a stop: waits for the listeners to finish in-flight work, at most `grace`, then
    /// cuts what they still hold (idle or half-sent connections would otherwise hold the
    /// process forever); then gives the background work its stop signal and waits for it (the
    /// decision log drains its queue), within what is left of the grace and at least
    /// [`FLUSH_AT_LEAST`]. True when the listeners finished in time.
    pub async fn wait_within_grace(&mut self) -> bool {
        let started = std::time::Instant::now();
        let finished = tokio::time::timeout(self.grace, self.listeners.finished())
            .await
            .is_ok();
        if !finished {
            // Idle or half-sent connections the listeners still hold are cut.
            self.listeners.stop(FLUSH_AT_LEAST).await;
        }
        let left = self
            .grace
            .saturating_sub(started.elapsed())
            .max(FLUSH_AT_LEAST);
        if !self.background.stop(left).await {
            tracing::warn!(
                still_running = self.background.running(),
                "background work did not stop within the grace"
            );
        }
        finished
    }

    /// Background tasks still running (0 once a shutdown has finished).
    pub fn background_tasks(&self) -> usize {
        self.background.running()
    }

    /// Reloads the signing keys on each SIGHUP until the sidecar stops; the listener is owned
    /// with the rest of the background work.
    pub fn reload_keys_on_hangup(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let keys = self.keys.clone();
        self.background.spawn_until_stopped(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading signing keys");
                keys.request_reload();
            }
        });
        Ok(())
    }

    /// Turns `/readyz` to 503 while everything keeps serving (the first step of a shutdown).
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// A handle that stops the sidecar when sent `true`.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Builds and starts everything `config` describes.
pub async fn start(config: Config) -> Result<RunningSidecar, StartError> {
    let metrics = Arc::new(Metrics::new(config.telemetry.stage_metrics));
    let background = Background::default();
    let (minter, keys) = start_signing(&config, &metrics, &background).await?;
    let vending = start_pipeline(&config, &metrics, &minter, &background).await?;

    let authz_listener = bind_authz(&config.listen).await?;
    let http_listener = bind_tcp("http", config.listen.http).await?;
    let admin_listener = match config.listen.admin {
        Some(addr) => Some((bind_tcp("admin", addr).await?, addr)),
        None => None,
    };
    let authz_addr = authz_listener.address()?;
    let http_addr = local_addr(&http_listener, "http", config.listen.http)?;

    let side_tls = config.listen.http_tls.as_ref().map(TlsFiles::side_port);
    let side_tls = start_listener_tls(side_tls, &background)?;
    let authz_tls = config.listen.authz_tls.as_ref().map(TlsFiles::authz);
    let authz_tls = start_listener_tls(authz_tls, &background)?;
    let decisions =
        DecisionLog::start(&config.telemetry.decision_log, metrics.clone(), &background)
            .await
            .map_err(|source| StartError::DecisionLog {
                path: config.telemetry.decision_log.path.clone(),
                source,
            })?
            .map(Arc::new);
    let (stop, stopped) = watch::channel(false);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let side_state = Arc::new(SidePortState {
        minter: minter.clone(),
        vending: vending.clone(),
        metrics: metrics.clone(),
        keys: keys.clone(),
        jwks_max_age: config.signing.jwks_max_age,
        authz_serving: Default::default(),
        draining: draining.clone(),
        exchange: start_exchange(&config, &vending, &metrics, &decisions).await,
        tls: side_tls.clone(),
        authz_tls: authz_tls.clone(),
    });
    let listeners = Background::default();
    listeners.spawn_until_stopped(crate::side_port::serve(
        http_listener,
        router(side_state.clone(), admin_listener.is_none()),
        side_tls,
        config.listen.header_timeout,
        stopped.clone(),
    ));
    let admin_addr = match admin_listener {
        Some((listener, configured)) => {
            let addr = local_addr(&listener, "admin", configured)?;
            listeners.spawn_until_stopped(crate::side_port::serve(
                listener,
                crate::http::admin_router(side_state.clone()),
                None,
                config.listen.header_timeout,
                stopped.clone(),
            ));
            Some(addr)
        }
        None => None,
    };

    vending.authenticator().oidc().prefetch(PREFETCH_WAIT).await;
    vending.authenticator().oidc().spawn_refreshers(&background);

    let authz = AuthzService::new(
        vending.clone(),
        config.response.remove_headers.clone(),
        metrics.clone(),
        decisions,
        config.telemetry.trace_subjects,
    );
    serve_authz_listener(
        authz_listener,
        authz_tls,
        authz,
        &config.listen,
        stopped,
        &listeners,
    );
    side_state.authz_serving.store(true, Ordering::Release);
    tracing::info!(%authz_addr, %http_addr, "evs-token-vending serving");

    Ok(RunningSidecar {
        authz_addr,
        http_addr,
        admin_addr,
        vending,
        metrics,
        keys,
        grace: config.shutdown.grace,
        drain: config.shutdown.drain,
        draining,
        stop,
        listeners,
        background,
    })
}

/// Stage 4's handles: the minter with the keys loaded, and their reloader (its watch runs in
/// `background`).
async fn start_signing(
    config: &Config,
    metrics: &Arc<Metrics>,
    background: &Background,
) -> Result<(Arc<Minter>, Arc<KeyRingReloader>), StartError> {
    let key_source = KeySource::from_config(&config.signing).await;
    let ring = key_source.load().await?;
    tracing::info!(active = %ring.active().kid(), published = ?ring.kids(), "signing keys loaded");
    let minter = Arc::new(Minter::new(&config.token, ring, metrics.clone()));
    let keys = Arc::new(KeyRingReloader::new(
        key_source,
        config.signing.reload_interval,
        minter.clone(),
    ));
    if keys.watches() {
        background.spawn_until_stopped(keys.clone().run());
    }
    Ok((minter, keys))
}

/// Stages 1–3 wired to `minter`: the extractor, the verifiers (with the AWS accounts served),
/// the grants sources (their reloads and connections run in `background`).
async fn start_pipeline(
    config: &Config,
    metrics: &Arc<Metrics>,
    minter: &Arc<Minter>,
    background: &Background,
) -> Result<Arc<TokenVending>, StartError> {
    let served_accounts = if config.aws_iam.enabled {
        Some(Arc::new(ServedAccounts::resolve(&config.aws_iam).await?))
    } else {
        None
    };
    let grants =
        GrantsLookup::connect(&config.grants, metrics, served_accounts.clone(), background).await?;
    let client = issuer_client(&config.trust)?;
    let oidc = OidcVerifier::new(&config.trust, client, metrics.clone())
        .keeping_other_claims(config.grants.reads_idp_claims());
    if let Some(problem) = oidc.token_review_problems().into_iter().next() {
        return Err(StartError::TokenReview(problem));
    }
    let x509 = if config.client_certs.enabled {
        Some(X509Verifier::from_config(&config.client_certs)?)
    } else {
        None
    };
    let aws_iam = match served_accounts {
        Some(accounts) => Some(AwsIamVerifier::new(
            &config.aws_iam,
            accounts,
            metrics.clone(),
        )?),
        None => None,
    };
    Ok(Arc::new(TokenVending::new(
        Extractor::from_config(&config.client_certs),
        Authenticator::new(oidc, x509, aws_iam),
        grants,
        minter.clone(),
        config.token.accept_own,
    )))
}

/// A listener's TLS, when it has files: loaded now (a start-up error names the bad one) and
/// re-read on change in `background`.
fn start_listener_tls(
    files: Option<TlsFiles>,
    background: &Background,
) -> Result<Option<Arc<ReloadingTls>>, StartError> {
    let Some(files) = files else {
        return Ok(None);
    };
    let tls = Arc::new(ReloadingTls::load(files)?);
    background.spawn_until_stopped(keep_fresh(tls.clone(), RELOAD_INTERVAL, None));
    Ok(Some(tls))
}

/// `/exchange`, when enabled: the same pipeline behind an OAuth token endpoint, with its
/// replay store.
async fn start_exchange(
    config: &Config,
    vending: &Arc<TokenVending>,
    metrics: &Arc<Metrics>,
    decisions: &Option<Arc<DecisionLog>>,
) -> Option<Arc<ExchangeService>> {
    if !config.exchange.enabled {
        return None;
    }
    let replays = crate::exchange::ReplayStore::connect(
        &config.exchange.replay_store,
        config.exchange.timeout,
    )
    .await;
    Some(Arc::new(ExchangeService::new(
        &config.exchange,
        replays,
        &config.token.issuer,
        &config.token.audience,
        vending.clone(),
        metrics.clone(),
        decisions.clone(),
        config.telemetry.trace_subjects,
    )))
}

/// Serves ext_authz on what was bound: TCP (with mTLS when `authz_tls` is set) or a Unix
/// socket, each connection's handshake and HTTP/2 preface bounded by
/// `listen.handshake_timeout`, HTTP/2 pings as `listen.authz_http2_keepalive` says.
fn serve_authz_listener(
    bound: BoundAuthz,
    authz_tls: Option<Arc<ReloadingTls>>,
    authz: AuthzService,
    listen: &ListenConfig,
    stopped: watch::Receiver<bool>,
    listeners: &Background,
) {
    let (handshake, pings) = (listen.handshake_timeout, listen.authz_http2_keepalive);
    match bound {
        BoundAuthz::Tcp(tcp) if let Some(tls) = authz_tls => {
            listeners.spawn_until_stopped(serve_authz(
                crate::handshake::prefaced(MutualTlsListener { tcp, tls }, handshake),
                authz,
                pings,
                stopped,
            ))
        }
        BoundAuthz::Tcp(listener) => listeners.spawn_until_stopped(serve_authz(
            crate::handshake::prefaced(listener, handshake),
            authz,
            pings,
            stopped,
        )),
        // The socket file is removed when this ends (or is cut), so no stale file is left.
        BoundAuthz::Unix(socket) => listeners.spawn_until_stopped(async move {
            serve_authz(
                crate::handshake::prefaced(socket.listener, handshake),
                authz,
                pings,
                stopped,
            )
            .await;
            drop(socket.file);
        }),
    }
}

async fn serve_authz<IO>(
    incoming: impl futures_util::Stream<Item = std::io::Result<IO>> + Send + 'static,
    service: AuthzService,
    pings: Option<Duration>,
    mut stopped: watch::Receiver<bool>,
) where
    IO: tonic::transport::server::Connected
        + tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Unpin
        + Send
        + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AuthorizationServer<AuthzService>>()
        .await;
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    // Connections that never finish the preface are closed by `prefaced`; the kernel's TCP
    // keep-alive finds vanished peers of idle connections (HTTP/2 pings only when configured:
    // they cost a lock and a clock read on every frame); the shutdown grace ends the rest.
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(pings)
        .http2_keepalive_timeout(pings.map(|_| AUTHZ_PING_TIMEOUT))
        .add_service(health_service)
        .add_service(AuthorizationServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "ext_authz server stopped");
    }
}

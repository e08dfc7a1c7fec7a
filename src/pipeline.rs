//! The token swap as one call: extract → authenticate → grants → mint.
//!
//! Both front doors call in here — ext_authz through [`TokenVending::check`], `/exchange`
//! through [`TokenVending::swap`] — and turn a [`SwapError`] into their own kind of answer; no
//! stage below knows about either.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::clock::unix_now;
use crate::credential::{
    Credential, ExtractError, Extractor, Fingerprint, InboundRequest, fingerprint_of,
};
use crate::grants::{GrantsError, GrantsLookup};
use crate::identity::aws_iam::presigned::TOKEN_PREFIX as AWS_TOKEN_PREFIX;
use crate::identity::{AuthError, Authenticator, Identity};
use crate::mint::{MintError, MintedToken, Minter, OwnToken};
use crate::stage_times::{Micros, StageTimes};

/// The stages, wired once at start-up.
pub struct TokenVending {
    extractor: Extractor,
    authenticator: Authenticator,
    grants: GrantsLookup,
    minter: Arc<Minter>,
    accept_own: bool,
}

/// What a Check went through, for the decision log: the credential's kind, each stage's time,
/// and whether the token came from the cache.
#[derive(Debug, Default, Clone, Copy)]
pub struct Trail {
    /// [`kind_of`] the credential; `None` when none was found.
    pub credential: Option<&'static str>,
    pub stages: StageTimes,
    /// Whether the minted token was served from the cache; `None` before minting.
    pub cache_hit: Option<bool>,
    /// Whether the decision has a span: its stages then get spans too; otherwise none is
    /// built (the times above come from the stages' own `Instant`s either way).
    pub traced: bool,
    /// When the last stage ended (or the decision began): the next stage's start, so each
    /// stage boundary reads the clock once.
    pub(crate) clock: Option<Instant>,
}

impl Trail {
    /// A trail for work already running in a decision's span, if any (`/exchange`).
    pub(crate) fn under_current_span() -> Self {
        Self {
            traced: !tracing::Span::current().is_none(),
            ..Self::default()
        }
    }

    /// A stage begins: where the previous one ended (or the decision began), else now.
    pub(crate) fn stage_begins(&mut self) {
        self.clock.get_or_insert_with(Instant::now);
    }

    /// The stage under way ended: its time since it began; the next one begins here.
    pub(crate) fn stage_ends(&mut self) -> Micros {
        let now = Instant::now();
        let began = self.clock.replace(now).unwrap_or(now);
        Micros(now.saturating_duration_since(began))
    }
}

/// `work`, or `None` once `deadline` passes. The timer is made only if `work` has to wait:
/// a Check answered from the caches never touches the runtime's timer wheel.
pub(crate) async fn by_deadline<F: std::future::Future>(
    deadline: Instant,
    work: F,
) -> Option<F::Output> {
    use std::task::Poll;
    let mut work = std::pin::pin!(work);
    let mut timer = std::pin::pin!(None::<tokio::time::Sleep>);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep_until(deadline.into())));
        }
        match timer.as_mut().as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}

/// A span for a stage when the decision is traced, else none (nothing is built).
macro_rules! stage_span {
    ($trail:expr, $($span:tt)+) => {
        if $trail.traced {
            tracing::info_span!($($span)+)
        } else {
            tracing::Span::none()
        }
    };
}

/// `work` in `span`; when the span is none (the decision is not traced), `work` itself, with
/// no wrapper entering and leaving a span that is not there on every poll.
pub(crate) fn in_span<F: std::future::Future>(
    span: tracing::Span,
    work: F,
) -> futures_util::future::Either<tracing::instrument::Instrumented<F>, F> {
    use futures_util::future::Either;
    if span.is_none() {
        Either::Right(work)
    } else {
        Either::Left(work.instrument(span))
    }
}

/// The credential's kind as the decision log names it.
fn kind_of(credential: &Credential<'_>) -> &'static str {
    match credential {
        Credential::Bearer(token) if token.expose().starts_with(AWS_TOKEN_PREFIX) => "aws_iam",
        Credential::Bearer(_) => "bearer",
        Credential::Certificate(_) => "certificate",
        Credential::Both(..) => "bearer+certificate",
    }
}

/// What a Check lets through.
#[derive(Debug)]
pub enum Passage {
    /// The credential was swapped for a minted token.
    Swapped(Box<Swapped>),
    /// The request already carries a valid token of ours: it goes on unchanged.
    OwnToken(OwnToken),
}

/// A successful swap.
#[derive(Debug)]
pub struct Swapped {
    /// Who the caller proved to be.
    pub identity: Arc<Identity>,
    /// The token that replaces their credential.
    pub minted: MintedToken,
}

/// The stage that refused, and why.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// No usable credential in the request.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The credential did not verify.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No grants (unknown subject under `deny`, or the store is down).
    #[error(transparent)]
    Grants(#[from] GrantsError),
    /// Signing failed.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// The caller's deadline passed before an answer was ready.
    #[error("deadline exceeded while swapping the credential")]
    DeadlineExceeded,
}

/// What a refusal means, decided once here for every front door; each door maps it to its
/// protocol in one table (ext_authz: `authz/denial.rs`, `/exchange`: `exchange/answer.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential at all.
    NoCredential,
    /// A credential that cannot be read (a malformed header, certificate or token form).
    Unreadable,
    /// A credential that was read and is not valid (signature, issuer, audience, expiry).
    Invalid,
    /// A valid credential of a caller who may not have a token.
    Forbidden,
    /// Nothing is wrong with the credential; a dependency could not answer in time.
    Unavailable,
}

impl Refusal {
    /// The outcome metrics, traces and the decision log count it as.
    pub fn outcome(self) -> crate::telemetry::Outcome {
        use crate::telemetry::Outcome;
        match self {
            Refusal::NoCredential | Refusal::Unreadable | Refusal::Invalid => {
                Outcome::Unauthenticated
            }
            Refusal::Forbidden => Outcome::Forbidden,
            Refusal::Unavailable => Outcome::Unavailable,
        }
    }
}

impl SwapError {
    /// What this refusal means, whichever front door it came through.
    pub fn refusal(&self) -> Refusal {
        match self {
            SwapError::Extract(ExtractError::Missing) => Refusal::NoCredential,
            SwapError::Extract(_) => Refusal::Unreadable,
            SwapError::Auth(e) if e.is_unavailable() => Refusal::Unavailable,
            SwapError::Auth(e) if e.is_forbidden() => Refusal::Forbidden,
            SwapError::Auth(_) | SwapError::Mint(MintError::CredentialExpired) => Refusal::Invalid,
            SwapError::Grants(GrantsError::UnknownSubject) => Refusal::Forbidden,
            SwapError::Grants(_) | SwapError::Mint(_) | SwapError::DeadlineExceeded => {
                Refusal::Unavailable
            }
        }
    }
}

impl TokenVending {
    /// Wires the stages together.
    pub fn new(
        extractor: Extractor,
        authenticator: Authenticator,
        grants: GrantsLookup,
        minter: Arc<Minter>,
        accept_own: bool,
    ) -> Self {
        Self {
            extractor,
            authenticator,
            grants,
            minter,
            accept_own,
        }
    }

    /// The grants look-up (for readiness warnings).
    pub fn grants(&self) -> &GrantsLookup {
        &self.grants
    }

    /// The authenticator (for readiness and prefetch).
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// A Check: our own valid token passes unchanged (when `token.accept_own`); any other
    /// credential is swapped.
    /// `trail` records what the Check went through, for the decision log.
    pub async fn check(
        &self,
        request: &InboundRequest<'_>,
        deadline: Instant,
        trail: &mut Trail,
    ) -> Result<Passage, SwapError> {
        let credential = self.extract(request, trail)?;
        if self.accept_own
            && let Credential::Bearer(token) = &credential
            && let Some(verdict) = self.minter.verify_own(token.expose())
        {
            return Ok(Passage::OwnToken(verdict?));
        }
        self.swap_credential(credential, deadline, trail)
            .await
            .map(|swapped| Passage::Swapped(Box::new(swapped)))
    }

    /// Stage 1, timed: the credential in `request`, its kind noted in `trail`.
    fn extract<'r>(
        &self,
        request: &InboundRequest<'r>,
        trail: &mut Trail,
    ) -> Result<Credential<'r>, SwapError> {
        trail.stage_begins();
        let credential = stage_span!(trail, "extract").in_scope(|| self.extractor.extract(request));
        trail.stages.extract = Some(trail.stage_ends());
        let credential = credential?;
        trail.credential = Some(kind_of(&credential));
        Ok(credential)
    }

    /// Swaps the credential in `request` for a minted token, answering by `deadline`.
    pub async fn swap(
        &self,
        request: &InboundRequest<'_>,
        deadline: Instant,
    ) -> Result<Swapped, SwapError> {
        self.swap_recorded(request, deadline, &mut Trail::under_current_span())
            .await
    }

    /// [`TokenVending::swap`], recording each stage's time in `trail` (`/exchange`).
    pub(crate) async fn swap_recorded(
        &self,
        request: &InboundRequest<'_>,
        deadline: Instant,
        trail: &mut Trail,
    ) -> Result<Swapped, SwapError> {
        let credential = self.extract(request, trail)?;
        self.swap_credential(credential, deadline, trail).await
    }

    /// The credential's identity, then its grants, then the minted token; each stage's time
    /// goes to `trail`.
    pub(crate) async fn swap_credential(
        &self,
        credential: Credential<'_>,
        deadline: Instant,
        trail: &mut Trail,
    ) -> Result<Swapped, SwapError> {
        let stages = async {
            trail.stage_begins();
            let fingerprint = credential.fingerprint();
            let identity = in_span(
                stage_span!(trail, "authenticate"),
                self.authenticator
                    .authenticate(&credential, &fingerprint, deadline),
            )
            .await;
            trail.stages.authenticate = Some(trail.stage_ends());
            self.grant_and_mint(identity?, &fingerprint, deadline, trail)
                .await
        };
        by_deadline(deadline, stages)
            .await
            .unwrap_or(Err(SwapError::DeadlineExceeded))
    }

    /// Grants and a minted token for an identity a front door verified itself (an RFC 7523
    /// assertion); `credential` keys the token cache.
    pub(crate) async fn swap_identity(
        &self,
        identity: Arc<Identity>,
        credential: &[u8],
        deadline: Instant,
        trail: &mut Trail,
    ) -> Result<Swapped, SwapError> {
        let fingerprint = fingerprint_of(credential);
        by_deadline(
            deadline,
            self.grant_and_mint(identity, &fingerprint, deadline, trail),
        )
        .await
        .unwrap_or(Err(SwapError::DeadlineExceeded))
    }

    async fn grant_and_mint(
        &self,
        identity: Arc<Identity>,
        credential: &Fingerprint,
        deadline: Instant,
        trail: &mut Trail,
    ) -> Result<Swapped, SwapError> {
        trail.stage_begins();
        let grants = in_span(
            stage_span!(trail, "grants"),
            self.grants.grants_for(&identity, deadline),
        )
        .await;
        trail.stages.grants = Some(trail.stage_ends());
        let span = stage_span!(trail, "mint", cache_hit = tracing::field::Empty);
        let minted = in_span(
            span.clone(),
            self.minter
                .mint_cached(&identity, &grants?, credential, unix_now()),
        )
        .await;
        trail.stages.mint = Some(trail.stage_ends());
        let (minted, cache_hit) = minted?;
        span.record("cache_hit", cache_hit);
        trail.cache_hit = Some(cache_hit);
        Ok(Swapped { identity, minted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_error_says_once_what_its_refusal_means() {
        let cases = [
            (
                SwapError::Extract(ExtractError::Missing),
                Refusal::NoCredential,
            ),
            (
                SwapError::Extract(ExtractError::NotBearer),
                Refusal::Unreadable,
            ),
            (SwapError::Auth(AuthError::BadSignature), Refusal::Invalid),
            (
                SwapError::Auth(AuthError::KeysUnavailable),
                Refusal::Unavailable,
            ),
            (
                SwapError::Auth(AuthError::NotServed("another account")),
                Refusal::Forbidden,
            ),
            (
                SwapError::Grants(GrantsError::UnknownSubject),
                Refusal::Forbidden,
            ),
            (
                SwapError::Grants(GrantsError::Unavailable),
                Refusal::Unavailable,
            ),
            (
                SwapError::Mint(MintError::CredentialExpired),
                Refusal::Invalid,
            ),
            (SwapError::DeadlineExceeded, Refusal::Unavailable),
        ];
        for (error, refusal) in cases {
            assert_eq!(error.refusal(), refusal, "{error}");
        }
    }
}

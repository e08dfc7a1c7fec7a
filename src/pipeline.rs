//! The token swap as one call: extract → authenticate → grants → mint.
//!
//! Both front doors (ext_authz today, `/exchange` later) call [`TokenVending::swap`] and turn
//! its [`SwapError`] into their own kind of answer; no stage below knows about either.

use std::time::Instant;

use crate::clock::unix_now;
use crate::credential::{ExtractError, Extractor, InboundRequest};
use crate::grants::{GrantsError, GrantsLookup};
use crate::identity::{AuthError, Authenticator, Identity};
use crate::mint::{MintError, MintedToken, Minter};

/// The stages, wired once at start-up.
pub struct TokenVending {
    extractor: Extractor,
    authenticator: Authenticator,
    grants: GrantsLookup,
    minter: std::sync::Arc<Minter>,
}

/// A successful swap.
#[derive(Debug)]
pub struct Swapped {
    /// Who the caller proved to be.
    pub identity: Identity,
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

impl TokenVending {
    /// Wires the stages together.
    pub fn new(
        extractor: Extractor,
        authenticator: Authenticator,
        grants: GrantsLookup,
        minter: std::sync::Arc<Minter>,
    ) -> Self {
        Self {
            extractor,
            authenticator,
            grants,
            minter,
        }
    }

    /// The authenticator (for readiness and prefetch).
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// Swaps the credential in `request` for a minted token, answering by `deadline`.
    pub async fn swap(
        &self,
        request: &InboundRequest<'_>,
        deadline: Instant,
    ) -> Result<Swapped, SwapError> {
        let credential = self.extractor.extract(request)?;
        let stages = async {
            let identity = self
                .authenticator
                .authenticate(&credential, deadline)
                .await?;
            let grants = self.grants.grants_for(&identity, deadline).await?;
            let minted = self
                .minter
                .mint_cached(&identity, &grants, credential.as_bytes(), unix_now())
                .await?;
            Ok(Swapped { identity, minted })
        };
        tokio::time::timeout_at(deadline.into(), stages)
            .await
            .unwrap_or(Err(SwapError::DeadlineExceeded))
    }
}

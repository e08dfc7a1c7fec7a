//! One recorder for every decision a front door makes — a Check, an exchange: its span in the
//! caller's trace, its metrics, the log line of a refusal and its decision-log line are made
//! here, once, from the same facts (docs/observability.md describes each).

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::Context;

use crate::decision_log::{Decision, DecisionLog};
use crate::pipeline::Trail;
use crate::telemetry::traces::DecisionSpan;
use crate::telemetry::{Metrics, Outcome};

/// Which front door decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrontDoor {
    /// Envoy's Check.
    ExtAuthz,
    /// `POST /exchange`.
    Exchange,
}

impl FrontDoor {
    fn label(self) -> &'static str {
        match self {
            FrontDoor::ExtAuthz => "ext_authz",
            FrontDoor::Exchange => "exchange",
        }
    }

    fn span_name(self) -> &'static str {
        match self {
            FrontDoor::ExtAuthz => "ext_authz.Check",
            FrontDoor::Exchange => "POST /exchange",
        }
    }
}

/// Records a front door's decisions.
pub(crate) struct DecisionRecorder {
    front_door: FrontDoor,
    metrics: Arc<Metrics>,
    decisions: Option<Arc<DecisionLog>>,
    /// `telemetry.trace_subjects`.
    trace_subjects: bool,
}

/// Who was let through.
pub(crate) struct Allowed<'a> {
    /// The verified issuer (none for our own token passing unchanged).
    pub(crate) issuer: Option<&'a str>,
    pub(crate) subject: &'a str,
    /// The key that signed the minted token.
    pub(crate) kid: Option<&'a str>,
    /// Why, when it is not a swap.
    pub(crate) reason: Option<&'static str>,
}

/// A refusal as the front door answered it.
pub(crate) struct Refused<'a> {
    /// What it counts as.
    pub(crate) outcome: Outcome,
    /// The outcome the log, the span and the decision log name: the outcome's own label for a
    /// Check, the OAuth error code for an exchange.
    pub(crate) label: &'static str,
    /// The HTTP status the caller gets.
    pub(crate) status: u16,
    /// The reason, a fixed text of ours.
    pub(crate) description: &'a str,
}

/// A decision under way: made by [`DecisionRecorder::begin`], ended by
/// [`Deciding::allowed`] or [`Deciding::refused`].
pub(crate) struct Deciding<'a> {
    recorder: &'a DecisionRecorder,
    request_id: &'a str,
    trace_id: Option<&'a str>,
    span: DecisionSpan,
    started: Instant,
}

impl DecisionRecorder {
    /// A recorder for `front_door`'s decisions.
    pub(crate) fn new(
        front_door: FrontDoor,
        metrics: Arc<Metrics>,
        decisions: Option<Arc<DecisionLog>>,
        trace_subjects: bool,
    ) -> Self {
        Self {
            front_door,
            metrics,
            decisions,
            trace_subjects,
        }
    }

    /// The metrics decisions are counted in.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts a decision that began at `started`: its span under the trace context `parent`
    /// builds (called only when a span may be made).
    pub(crate) fn begin<'a>(
        &'a self,
        started: Instant,
        request_id: &'a str,
        trace_id: Option<&'a str>,
        parent: impl FnOnce() -> Option<Context>,
    ) -> Deciding<'a> {
        Deciding {
            span: DecisionSpan::start(
                self.front_door.span_name(),
                request_id,
                trace_id,
                parent,
                self.trace_subjects,
            ),
            recorder: self,
            request_id,
            trace_id,
            started,
        }
    }

    fn count(
        &self,
        credential: Option<&'static str>,
        outcome: Outcome,
        label: &'static str,
        trail: &Trail,
        started: Instant,
    ) {
        match self.front_door {
            FrontDoor::ExtAuthz => {
                self.metrics
                    .checked(outcome, started.elapsed(), &trail.stages);
            }
            FrontDoor::Exchange => self
                .metrics
                .count_exchange(credential.unwrap_or("unparsed"), label),
        }
    }

    fn write(&self, decision: &Decision<'_>) {
        if let Some(log) = &self.decisions {
            log.record(decision);
        }
    }
}

impl<'a> Deciding<'a> {
    /// The span to run the decision's work in.
    pub(crate) fn span(&self) -> &tracing::Span {
        self.span.span()
    }

    /// Whether the decision has a span (its stages then get spans too).
    pub(crate) fn is_traced(&self) -> bool {
        self.span.is_live()
    }

    fn decision(&self, credential: Option<&'static str>, trail: &Trail) -> Decision<'a> {
        Decision {
            request_id: self.request_id,
            trace_id: self.trace_id,
            front_door: self.recorder.front_door.label(),
            credential,
            issuer: None,
            subject: None,
            outcome: Outcome::Ok.label(),
            status: 200,
            reason: None,
            kid: None,
            cache_hit: trail.cache_hit,
            stages: trail.stages,
        }
    }

    /// The caller was let through: counted, traced, logged at debug, and in the decision log.
    pub(crate) fn allowed(self, credential: Option<&'static str>, trail: &Trail, who: Allowed<'_>) {
        let recorder = self.recorder;
        recorder.count(credential, Outcome::Ok, "ok", trail, self.started);
        self.span.credential(credential);
        self.span
            .allowed(who.issuer, who.subject, who.kid, trail.cache_hit);
        tracing::debug!(request_id = %self.request_id, front_door = recorder.front_door.label(), subject = %who.subject, kid = who.kid.unwrap_or("-"), "credential swapped");
        recorder.write(&Decision {
            issuer: who.issuer,
            subject: Some(who.subject),
            kid: who.kid,
            reason: who.reason,
            ..self.decision(credential, trail)
        });
    }

    /// The caller was refused: counted, traced as an error, logged at info with the request
    /// id, and in the decision log.
    pub(crate) fn refused(
        self,
        credential: Option<&'static str>,
        trail: &Trail,
        refused: Refused<'_>,
    ) {
        let recorder = self.recorder;
        recorder.count(
            credential,
            refused.outcome,
            refused.label,
            trail,
            self.started,
        );
        self.span.credential(credential);
        self.span
            .refused(refused.label, refused.status, refused.description);
        tracing::info!(request_id = %self.request_id, trace_id = %self.trace_id.unwrap_or("-"), front_door = recorder.front_door.label(), credential = credential.unwrap_or("-"), status = refused.status, outcome = refused.label, reason = %refused.description, "request denied");
        recorder.write(&Decision {
            outcome: refused.label,
            status: refused.status,
            reason: Some(refused.description),
            ..self.decision(credential, trail)
        });
    }
}

//! The front doors as an attacker tries them: the AWS IAM door (`iam`) and `/exchange`
//! (`exchange`), each move of the threat model in `docs`' security notes (docs/security.md, "Threat
//! model") a test against the real sidecar. Cases ported from peers' public suites —
//! aws-iam-authenticator's token verifier, fosite's RFC 7523 handler — are written here in
//! our own words and say which they follow.

mod exchange;
mod iam;
mod kubernetes;
mod replay;

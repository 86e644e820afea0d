//! The one mapping from engine errors to gRPC statuses. Exhaustive, no catch-all arm: a new
//! error kind does not compile until someone decides its status.
//!
//! Every status a program may act on carries `google.rpc` details next to its message:
//! INVALID_ARGUMENT a `BadRequest` naming the field, FAILED_PRECONDITION an `ErrorInfo` with a
//! stable reason ([`Precondition::reason`], domain [`DOMAIN`]), UNAVAILABLE and
//! RESOURCE_EXHAUSTED that are worth retrying a `RetryInfo` with a delay.

use std::collections::HashMap;
use std::time::Duration;

use dispatch_domain::{FieldError, Precondition, Rejection};
use dispatch_engine::EngineError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of this service's reasons.
pub const DOMAIN: &str = "dispatch.v1";

/// How long a caller should wait before retrying an UNAVAILABLE (a reconcile, an outage, a
/// compare-and-set that kept losing).
pub const RETRY_UNAVAILABLE: Duration = Duration::from_millis(250);

/// ... and a RESOURCE_EXHAUSTED from load shedding or a bound.
pub const RETRY_EXHAUSTED: Duration = Duration::from_millis(100);

/// The gRPC code for an engine error.
pub fn code(e: &EngineError) -> Code {
    match e {
        EngineError::Rejected(r) => match r {
            Rejection::InvalidArgument(_) => Code::InvalidArgument,
            Rejection::NotFound(_) => Code::NotFound,
            Rejection::PermissionDenied(_) => Code::PermissionDenied,
            Rejection::FailedPrecondition(..) => Code::FailedPrecondition,
            Rejection::AlreadyExists(_) => Code::AlreadyExists,
            Rejection::StaleSession => Code::FailedPrecondition,
        },
        // Both are safe to retry: idempotent calls give the same result again.
        EngineError::Unavailable(_) | EngineError::Contention(_) => Code::Unavailable,
        EngineError::Exhausted(_) => Code::ResourceExhausted,
        EngineError::Config(_) | EngineError::Internal(_) => Code::Internal,
    }
}

/// What an engine error tells a program besides its code: the field, the reason, the retry
/// delay (the status details, and the in-band `CommandResult` fields).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// INVALID_ARGUMENT: the field and what is wrong with it.
    pub field: Option<FieldError>,
    /// FAILED_PRECONDITION: the stable reason.
    pub reason: Option<&'static str>,
    /// UNAVAILABLE, RESOURCE_EXHAUSTED: wait this long.
    pub retry: Option<Duration>,
}

impl Details {
    /// The details of `e`.
    pub fn of(e: &EngineError) -> Details {
        match e {
            EngineError::Rejected(Rejection::InvalidArgument(f)) => {
                Details { field: Some(f.clone()), ..Details::default() }
            }
            EngineError::Rejected(r) => {
                Details { reason: r.precondition().map(Precondition::reason), ..Details::default() }
            }
            EngineError::Unavailable(_) | EngineError::Contention(_) => {
                Details { retry: Some(RETRY_UNAVAILABLE), ..Details::default() }
            }
            EngineError::Exhausted(_) => Details { retry: Some(RETRY_EXHAUSTED), ..Details::default() },
            EngineError::Config(_) | EngineError::Internal(_) => Details::default(),
        }
    }
}

impl Details {
    /// As `google.rpc` status details (`None`: nothing to add).
    fn to_status_details(&self) -> Option<ErrorDetails> {
        let Details { field, reason, retry } = self;
        match (field, reason, retry) {
            (Some(f), _, _) => Some(bad_request(f)),
            (None, Some(r), _) => Some(ErrorDetails::with_error_info(*r, DOMAIN, HashMap::new())),
            (None, None, Some(d)) => Some(ErrorDetails::with_retry_info(Some(*d))),
            (None, None, None) => None,
        }
    }
}

/// The status for an engine error, with its details.
pub fn status(e: EngineError) -> Status {
    let code = code(&e);
    match Details::of(&e).to_status_details() {
        Some(d) => Status::with_error_details(code, e.to_string(), d),
        None => Status::new(code, e.to_string()),
    }
}

/// INVALID_ARGUMENT naming the field, in the message and as a `BadRequest` field violation.
pub fn invalid(e: FieldError) -> Status {
    Status::with_error_details(Code::InvalidArgument, e.to_string(), bad_request(&e))
}

/// RESOURCE_EXHAUSTED with a `RetryInfo`.
pub fn exhausted(message: impl Into<String>) -> Status {
    Status::with_error_details(Code::ResourceExhausted, message, ErrorDetails::with_retry_info(Some(RETRY_EXHAUSTED)))
}

/// UNAVAILABLE with a `RetryInfo` (the caller should reconnect or retry after
/// [`RETRY_UNAVAILABLE`]).
pub fn unavailable(message: impl Into<String>) -> Status {
    Status::with_error_details(Code::Unavailable, message, ErrorDetails::with_retry_info(Some(RETRY_UNAVAILABLE)))
}

fn bad_request(e: &FieldError) -> ErrorDetails {
    ErrorDetails::with_bad_request_violation(e.field.clone(), e.reason.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_a_program_acts_on_carries_its_details() {
        let s = status(EngineError::Rejected(Rejection::InvalidArgument(FieldError::new("spec.language", "empty"))));
        let details = s.get_error_details();
        let v = &details.bad_request().expect("bad request").field_violations[0];
        assert_eq!((v.field.as_str(), v.description.as_str()), ("spec.language", "empty"));
        let s = status(EngineError::Rejected(Rejection::StaleSession));
        assert_eq!(s.get_error_details().error_info().expect("error info").reason, "SESSION_REPLACED");
        let s = status(EngineError::Rejected(Rejection::FailedPrecondition(Precondition::OfferExpired, "x".into())));
        assert_eq!(s.get_error_details().error_info().expect("error info").domain, DOMAIN);
        let s = status(EngineError::Unavailable("reconciling".into()));
        assert_eq!(s.get_error_details().retry_info().expect("retry").retry_delay, Some(RETRY_UNAVAILABLE));
        let reasons: std::collections::HashSet<_> = Precondition::ALL.iter().map(|p| p.reason()).collect();
        assert_eq!(reasons.len(), Precondition::ALL.len(), "reasons are distinct");
    }
}

//! The one mapping from engine errors to gRPC statuses. Exhaustive, no catch-all arm: a new
//! error kind does not compile until someone decides its status.

use dispatch_domain::{FieldError, Rejection};
use dispatch_engine::EngineError;
use tonic::{Code, Status};

/// The gRPC code for an engine error.
pub fn code(e: &EngineError) -> Code {
    match e {
        EngineError::Rejected(r) => match r {
            Rejection::InvalidArgument(_) => Code::InvalidArgument,
            Rejection::NotFound(_) => Code::NotFound,
            Rejection::PermissionDenied(_) => Code::PermissionDenied,
            Rejection::FailedPrecondition(_) => Code::FailedPrecondition,
            Rejection::AlreadyExists(_) => Code::AlreadyExists,
            Rejection::StaleSession => Code::FailedPrecondition,
        },
        // Both are safe to retry: idempotent calls give the same result again.
        EngineError::Unavailable(_) | EngineError::Contention(_) => Code::Unavailable,
        EngineError::Exhausted(_) => Code::ResourceExhausted,
        EngineError::Config(_) | EngineError::Internal(_) => Code::Internal,
    }
}

/// The status for an engine error.
pub fn status(e: EngineError) -> Status {
    Status::new(code(&e), e.to_string())
}

/// INVALID_ARGUMENT naming the field.
pub fn invalid(e: FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

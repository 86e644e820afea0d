//! Trace context, when traces are exported (`tracing-opentelemetry` layer installed by the
//! binary): the W3C `traceparent` of the current span, kept with a submitted case, and links
//! from a case's later spans (its offers, made by a matcher on any replica) back to it. With no
//! exporter every span context is invalid: nothing is stored, nothing linked, and the engine's
//! spans (DEBUG level) are not even created.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current span's `traceparent` (`00-<trace id>-<span id>-<flags>`), if it is traced.
pub(crate) fn current_traceparent() -> Option<String> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// Parses a W3C `traceparent`.
pub(crate) fn parse_traceparent(raw: &str) -> Option<SpanContext> {
    let mut parts = raw.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// Links `span` to the span of `traceparent` (a case's submit).
pub(crate) fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(sc) = traceparent.and_then(parse_traceparent) {
        span.add_link(sc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_ignored() {
        let raw = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(raw).expect("valid");
        assert_eq!(format!("{}", sc.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(format!("{}", sc.span_id()), "00f067aa0ba902b7");
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        assert_eq!(current_traceparent(), None, "no exporter: nothing traced");
    }
}

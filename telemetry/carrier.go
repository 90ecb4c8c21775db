package telemetry

// Limits on received W3C trace context: a traceparent other than 55
// characters (the version 00 form) or a tracestate over 512 bytes is
// ignored, so a malformed or oversized header from outside starts a new
// root span (or keeps the parent without the tracestate) instead of being
// parsed or passed on.
const (
	traceparentLen   = 55
	maxTracestateLen = 512
)

// inbound returns v, the received value of header key, or "" when it is a
// traceparent or tracestate outside the limits. Every carrier that reads
// received headers (brokerCarrier, inboundCarrier) goes through it.
func inbound(key, v string) string {
	switch key {
	case "traceparent":
		if len(v) != traceparentLen {
			return ""
		}
	case "tracestate":
		if len(v) > maxTracestateLen {
			return ""
		}
	}
	return v
}

package event

import "strings"

// maxTraceState bounds the tracestate we carry: W3C allows 32 members, which
// fit in 512 characters, and anything longer is dropped rather than trimmed
// so that we never forward half a member.
const maxTraceState = 512

// maxTraceParent bounds a traceparent of a later version than 00 (which
// is 55 characters): it is copied onto the outcome, whose header must stay
// small, so a longer one is dropped as malformed.
const maxTraceParent = 256

// validTraceParent checks the W3C traceparent form
// version-traceid-parentid-flags, all lower-case hex, with the all-zero ids
// and version ff that W3C declares invalid. Later versions may append
// fields after a '-', which are accepted up to maxTraceParent in all.
func validTraceParent(s string) bool {
	if len(s) < 55 || len(s) > maxTraceParent || (len(s) > 55 && s[55] != '-') {
		return false
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	version, traceID, parentID, flags := s[0:2], s[3:35], s[36:52], s[53:55]
	for _, part := range []string{version, traceID, parentID, flags} {
		if !lowerHex(part) {
			return false
		}
	}
	if version == "ff" || (version == "00" && len(s) != 55) {
		return false
	}
	return strings.Trim(traceID, "0") != "" && strings.Trim(parentID, "0") != ""
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// cleanTraceState returns s if it can travel in a header (printable ASCII,
// bounded), else "": tracestate is advisory, losing it is harmless.
func cleanTraceState(s string) string {
	if len(s) > maxTraceState {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return ""
		}
	}
	return s
}

package event

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

func invalid(format string, args ...any) *DecodeError {
	return &DecodeError{Reason: ReasonInvalidEvent, Message: capMessage(fmt.Sprintf(format, args...))}
}

func unsupported(format string, args ...any) *DecodeError {
	return &DecodeError{Reason: ReasonUnsupportedEvent, Message: capMessage(fmt.Sprintf(format, args...))}
}

func schemaInvalid(format string, args ...any) *DecodeError {
	return &DecodeError{Reason: ReasonSchemaInvalid, Message: capMessage(fmt.Sprintf(format, args...))}
}

// maxDecodeMessage bounds DecodeError.Message (bytes), as card.failed bounds
// its message: the SDK quotes whole attribute values in its errors, and the
// validator names every unknown member.
const maxDecodeMessage = 1024

// capMessage cuts s to maxDecodeMessage bytes, on a character boundary.
func capMessage(s string) string {
	if len(s) <= maxDecodeMessage {
		return s
	}
	const more = "…"
	return strings.ToValidUTF8(s[:maxDecodeMessage-len(more)], "") + more
}

// usableAttribute returns s if it can identify a request in a card.failed:
// valid UTF-8 and not longer than MaxAttributeLength; otherwise "".
func usableAttribute(s string) string {
	if len(s) > MaxAttributeLength || !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError) {
		return ""
	}
	return s
}

// quoteShort quotes an attribute value for an error message, cut short so a
// hostile value cannot bloat logs.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return strconv.Quote(s)
}

// oneLine keeps messages from the SDK on one line. Cut them with capMessage
// first: the SDK quotes whole values.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), "; ")
}

// recoverStructured fills e with what a lenient reading of a structured body
// gives, for correlation. encoding/json replaces invalid UTF-8 with U+FFFD,
// which usableAttribute then refuses, so a damaged id is never reported as
// if it were the real one.
//
// With sdkFailed, the SDK refused the event, and the reading also names the
// cause more precisely than the SDK's error does.
//
// body must be JSON; its top level is read in one pass, without decoding
// the members that are not needed (thousands of them cost milliseconds).
func recoverStructured(body []byte, m *incoming, e *DecodeError, sdkFailed bool) {
	fields := topLevelMembers(body, "id", "source", "subject", "type", "traceparent", "tracestate", "specversion", "datacontenttype")
	str := func(name string) string {
		var s string
		// A value past maxAttributeValue is not read: it can name
		// nothing usable, and decoding 64 KB of it costs a millisecond.
		if raw, ok := fields[name]; !ok || len(raw) > maxAttributeValue+2 || json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return s
	}
	e.ID = usableAttribute(str("id"))
	e.Source = usableAttribute(str("source"))
	e.Subject = usableAttribute(str("subject"))
	e.Type = usableAttribute(str("type"))
	e.TraceParent, e.TraceState = m.traceContext(str("traceparent"), str("tracestate"))

	if !sdkFailed {
		return
	}
	if _, ok := fields["specversion"]; !ok {
		e.Message = "required attribute specversion is missing"
		return
	}
	if sv := str("specversion"); sv != "1.0" {
		e.Reason, e.Message = ReasonUnsupportedEvent, fmt.Sprintf("specversion %s is not supported, only 1.0", quoteShort(sv))
		return
	}
	if ct, ok := fields["datacontenttype"]; ok {
		var s string
		if json.Unmarshal(ct, &s) == nil && !isJSONMediaType(s) {
			e.Reason, e.Message = ReasonUnsupportedEvent, fmt.Sprintf("datacontenttype %s is not JSON", quoteShort(mediaType(s)))
		}
	}
}

// hasControl reports whether s holds a character CloudEvents 1.0 forbids in
// string attributes: the C0 and C1 control characters and DEL.
func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return true
		}
	}
	return false
}

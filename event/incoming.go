package event

import (
	"bytes"
	"context"
	"mime"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/nats-io/nats.go"
)

// Header names of the CloudEvents NATS binding, in the lower case this
// package normalises incoming names to and writes outgoing names in.
const (
	headerContentType = "content-type"
	headerPrefix      = "ce-"
	headerSpecVersion = "ce-specversion"
	headerID          = "ce-id"
	headerSource      = "ce-source"
	headerType        = "ce-type"
	headerSubject     = "ce-subject"
	headerTraceParent = "ce-traceparent"
	headerTraceState  = "ce-tracestate"
	// Plain W3C names, as set by OpenTelemetry's NATS propagation rather
	// than by a CloudEvents producer; read as a fallback.
	headerW3CTraceParent = "traceparent"
	headerW3CTraceState  = "tracestate"
	headerMsgID          = "Nats-Msg-Id"
)

// mediaTypeStructuredJSON is the content type of a structured-mode event.
const mediaTypeStructuredJSON = "application/cloudevents+json"

// versions maps prefixed header names to CloudEvents attributes.
var versions = spec.WithPrefix(headerPrefix)

// incoming is a received NATS message seen as a binding.Message, so that the
// SDK's binding.ToEvent does the CloudEvents mapping. Its headers are
// normalised once, at construction, to lower-case names with one value each.
type incoming struct {
	encoding binding.Encoding
	headers  map[string]string
	names    []string // sorted keys of headers, for a deterministic walk
	body     []byte
	// dataErr is why the data of a structured event was refused before
	// the SDK read the event (which then reads it with data null).
	dataErr *DecodeError
}

var (
	_ binding.Message               = (*incoming)(nil)
	_ binding.MessageMetadataReader = (*incoming)(nil)
)

// newIncoming normalises the headers and decides the binding mode. Errors are
// *DecodeError, carrying whatever attributes the headers did give.
func newIncoming(h nats.Header, body []byte) (*incoming, *DecodeError) {
	var bad *DecodeError
	relevant := 0
	for name, values := range h {
		if len(values) > 0 && relevantName(name) {
			relevant++
		}
	}
	if relevant > maxAttributes {
		// Thousands of extensions cost the SDK milliseconds to copy and
		// validate; only what names the request is kept, to answer it.
		bad = invalid("more than %d CloudEvents headers", maxAttributes)
	}
	m := &incoming{headers: make(map[string]string, min(relevant, maxAttributes)), body: body}
	var ambiguous map[string]bool // names given twice with different values
	for name, values := range h {
		if len(values) == 0 || !relevantName(name) || (relevant > maxAttributes && !correlating(name)) {
			continue
		}
		lower := strings.ToLower(name)
		if !relevantHeader(lower) || ambiguous[lower] {
			continue
		}
		v := values[0]
		if len(v) > maxAttributeValue {
			if lower == headerTraceState || lower == headerW3CTraceState {
				continue // too long to carry: dropped, as tracestate is advisory
			}
			if bad == nil {
				bad = invalid("header %s is longer than %d bytes", lower, maxAttributeValue)
			}
			continue // not kept: nothing reads it
		}
		conflict := false
		for _, other := range values[1:] {
			conflict = conflict || other != v
		}
		if prev, dup := m.headers[lower]; dup && prev != v {
			// Ce-Id and ce-id on one message: which one is the
			// idempotency key is anyone's guess.
			conflict = true
		}
		if conflict {
			if bad == nil {
				bad = invalid("header %s is given more than once with different values", lower)
			}
			if ambiguous == nil {
				ambiguous = map[string]bool{}
			}
			ambiguous[lower] = true
			delete(m.headers, lower) // not to be reported for correlation
			continue
		}
		if !utf8.ValidString(v) && bad == nil {
			bad = invalid("header %s is not valid UTF-8", lower)
		}
		m.headers[lower] = v
	}
	for name := range m.headers {
		m.names = append(m.names, name)
	}
	sort.Strings(m.names)
	if bad != nil {
		m.recover(bad)
		return nil, bad
	}

	if ct, ok := m.headers[headerContentType]; ok {
		if len(ct) > maxContentType {
			// Parsing thousands of parameters, three times over, costs
			// milliseconds.
			e := invalid("content-type is longer than %d bytes", maxContentType)
			m.recover(e)
			return nil, e
		}
		mt := mediaType(ct)
		if mt == mediaTypeStructuredJSON {
			m.encoding = binding.EncodingStructured
			return m, nil
		}
		if format.IsFormat(mt) {
			// Batches and other event formats are CloudEvents we do not take.
			e := &DecodeError{Reason: ReasonUnsupportedEvent, Message: "structured content type " + quoteShort(mt) + " is not supported, only " + mediaTypeStructuredJSON}
			return nil, e
		}
	}
	if _, ok := m.headers[headerSpecVersion]; ok {
		m.encoding = binding.EncodingBinary
		return m, nil
	}
	return nil, invalid("not a CloudEvent: no %s header and content-type is not %s", headerSpecVersion, mediaTypeStructuredJSON)
}

// relevantHeader says which headers take part in decoding; others (such as
// Nats-Msg-Id) are ignored, whatever they contain.
func relevantHeader(lower string) bool {
	return strings.HasPrefix(lower, headerPrefix) ||
		lower == headerContentType || lower == headerW3CTraceParent || lower == headerW3CTraceState
}

// relevantName is relevantHeader(strings.ToLower(name)) without lowering
// the name: the names are ASCII, and no other character lowers to one of
// their letters.
func relevantName(name string) bool {
	return (len(name) >= len(headerPrefix) && equalFoldASCII(name[:len(headerPrefix)], headerPrefix)) ||
		equalFoldASCII(name, headerContentType) || equalFoldASCII(name, headerW3CTraceParent) || equalFoldASCII(name, headerW3CTraceState)
}

// correlating says whether a header is one recover and traceContext read,
// to answer a request refused for its headers.
func correlating(name string) bool {
	for _, c := range [...]string{headerID, headerSource, headerSubject, headerType,
		headerTraceParent, headerTraceState, headerW3CTraceParent, headerW3CTraceState} {
		if equalFoldASCII(name, c) {
			return true
		}
	}
	return false
}

// equalFoldASCII compares s with lower, an ASCII lower-case string, folding
// only ASCII letters.
func equalFoldASCII(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// recover copies into e the attributes the binary headers give, for
// correlation; attributes that are unusable stay empty.
func (m *incoming) recover(e *DecodeError) {
	e.ID = usableAttribute(m.headers[headerID])
	e.Source = usableAttribute(m.headers[headerSource])
	e.Subject = usableAttribute(m.headers[headerSubject])
	e.Type = usableAttribute(m.headers[headerType])
	e.TraceParent, e.TraceState = m.traceContext("", "")
}

// traceContext picks the trace context: the CloudEvents extension values
// (ext*, from the event) first, then ce-traceparent headers, then the plain
// W3C headers. A malformed traceparent is dropped with its tracestate, as
// W3C Trace Context asks, rather than failing the request.
func (m *incoming) traceContext(extParent, extState string) (string, string) {
	for _, c := range [][2]string{
		{extParent, extState},
		{m.headers[headerTraceParent], m.headers[headerTraceState]},
		{m.headers[headerW3CTraceParent], m.headers[headerW3CTraceState]},
	} {
		if c[0] == "" {
			continue
		}
		if !validTraceParent(c[0]) {
			return "", ""
		}
		return c[0], cleanTraceState(c[1])
	}
	return "", ""
}

func (m *incoming) ReadEncoding() binding.Encoding { return m.encoding }

func (m *incoming) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	if m.encoding != binding.EncodingStructured {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, format.JSON, bytes.NewReader(m.body))
}

func (m *incoming) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	if m.encoding != binding.EncodingBinary {
		return binding.ErrNotBinary
	}
	sv := m.headers[headerSpecVersion]
	version := versions.Version(sv)
	if version == nil {
		return binding.ErrNotBinary // Decode checks the version first; this is a guard
	}
	// The spec version goes first: it decides which attributes exist.
	if err := w.SetAttribute(version.AttributeFromKind(spec.SpecVersion), sv); err != nil {
		return err
	}
	for _, name := range m.names {
		value := m.headers[name]
		switch {
		case name == headerSpecVersion:
		case name == headerContentType:
			if err := w.SetAttribute(version.AttributeFromKind(spec.DataContentType), value); err != nil {
				return err
			}
		case version.Attribute(name) != nil:
			if err := w.SetAttribute(version.Attribute(name), value); err != nil {
				return err
			}
		case strings.HasPrefix(name, headerPrefix):
			if err := w.SetExtension(strings.TrimPrefix(name, headerPrefix), value); err != nil {
				return err
			}
		}
	}
	if len(m.body) > 0 {
		return w.SetData(bytes.NewReader(m.body))
	}
	return nil
}

func (m *incoming) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	version := versions.Version(m.headers[headerSpecVersion])
	if version == nil {
		return nil, nil
	}
	a := version.AttributeFromKind(k)
	if a == nil {
		return nil, nil
	}
	name := a.PrefixedName()
	if k == spec.DataContentType {
		name = headerContentType
	}
	if v, ok := m.headers[name]; ok {
		return a, v
	}
	return a, nil
}

func (m *incoming) GetExtension(name string) any {
	if v, ok := m.headers[headerPrefix+strings.ToLower(name)]; ok {
		return v
	}
	return nil
}

// Finish does nothing: acknowledging the NATS message is the consumer's
// decision, taken after the outcome is committed.
func (m *incoming) Finish(error) error { return nil }

// mediaType returns the lower-case media type of a content type, without
// parameters; a content type mime cannot parse is cut at its first ';'.
func mediaType(ct string) string {
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// isJSONMediaType reports whether data of this datacontenttype is JSON. An
// absent content type means JSON, as in CloudEvents' JSON format. +json
// suffixes are not accepted because the SDK's structured reader does not
// treat them as JSON, and both modes must accept the same events.
func isJSONMediaType(ct string) bool {
	switch mediaType(ct) {
	case "", "application/json", "text/json":
		return true
	}
	return false
}

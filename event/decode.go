package event

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	cloudevent "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/cardbridge/cardbridge/schemas"
)

// MaxEventSize bounds an incoming message: body plus header names and values.
// A card request is a few hundred bytes; the bound is checked before any
// parsing so that a hostile message costs nothing to refuse.
const MaxEventSize = 64 << 10

// MaxAttributeLength bounds the id and source of a request (bytes). They
// become the idempotency key in Postgres, whose B-tree index entries must
// stay well under its ~2.7 KB limit.
const MaxAttributeLength = 256

// Decode turns a NATS message into a validated employee.card.requested
// request. It accepts structured mode (content-type
// application/cloudevents+json) and binary mode (ce-* headers), matching
// header names case-insensitively.
//
// Any error is a *DecodeError whose Reason is one of the Reason* codes.
// Decode never panics, whatever the input.
func Decode(h nats.Header, body []byte) (*Request, error) {
	r, derr := decode(h, body)
	if derr != nil {
		return nil, derr
	}
	return r, nil
}

// decode returns the concrete error type so that Decode never returns a
// typed nil inside a non-nil error interface.
func decode(h nats.Header, body []byte) (*Request, *DecodeError) {
	if size(h, body) > MaxEventSize {
		e := invalid("message is larger than %d bytes", MaxEventSize)
		recoverOversized(h, body, e)
		return nil, e
	}
	m, derr := newIncoming(h, body)
	if derr != nil {
		return nil, derr
	}
	if m.encoding == binding.EncodingBinary {
		if sv := m.headers[headerSpecVersion]; sv != cloudevent.CloudEventsVersionV1 {
			e := unsupported("specversion %s is not supported, only 1.0", quoteShort(sv))
			m.recover(e)
			return nil, e
		}
	} else if derr := checkStructuredBody(body); derr != nil {
		recoverStructured(body, m, derr, false)
		return nil, derr
	}

	ev, err := toEvent(m)
	if err != nil {
		derr := invalid("not a valid CloudEvent: %s", oneLine(err.Error()))
		if m.encoding == binding.EncodingStructured {
			recoverStructured(body, m, derr, true)
		} else {
			m.recover(derr)
		}
		return nil, derr
	}
	return fromEvent(m, ev)
}

// maxScan bounds how much of an oversized structured body is scanned for
// its attributes: NATS's default max_payload, so every message a default
// server takes is scanned whole.
const maxScan = 1 << 20

// recoverOversized finds what an oversized message says of its request, so
// that it can be answered: from the headers (binary mode), or from the
// top-level attributes of a structured body, which is scanned once without
// decoding (data included, wherever it is), within its first maxScan bytes.
func recoverOversized(h nats.Header, body []byte, e *DecodeError) {
	if size(h, nil) > MaxEventSize {
		return
	}
	m, derr := newIncoming(h, nil)
	if derr != nil {
		return
	}
	if m.encoding == binding.EncodingBinary {
		m.recover(e)
		return
	}
	attrs := topLevelStrings(body[:min(len(body), maxScan)], "id", "source", "subject", "type", "traceparent", "tracestate")
	e.ID = usableAttribute(attrs["id"])
	e.Source = usableAttribute(attrs["source"])
	e.Subject = usableAttribute(attrs["subject"])
	e.Type = usableAttribute(attrs["type"])
	e.TraceParent, e.TraceState = m.traceContext(attrs["traceparent"], attrs["tracestate"])
}

// topLevelStrings reads the short string members named in names from a
// JSON object, skipping every other member without decoding it. It stops
// at the first thing that is not JSON and returns what it found before.
func topLevelStrings(b []byte, names ...string) map[string]string {
	out := map[string]string{}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return out
	}
	for i = skipSpace(b, i+1); i < len(b) && b[i] == '"'; i = skipSpace(b, i+1) {
		keyEnd := stringEnd(b, i)
		if keyEnd < 0 {
			return out
		}
		colon := skipSpace(b, keyEnd)
		if colon >= len(b) || b[colon] != ':' {
			return out
		}
		start := skipSpace(b, colon+1)
		end := valueEnd(b, start)
		if end < 0 {
			return out
		}
		var key, value string
		if keyEnd-i <= 32 && end-start <= 8*MaxAttributeLength && b[start] == '"' &&
			json.Unmarshal(b[i:keyEnd], &key) == nil && slices.Contains(names, key) &&
			json.Unmarshal(b[start:end], &value) == nil {
			out[key] = value
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ',' {
			return out
		}
	}
	return out
}

// isDelimiter reports a byte that ends a number or a literal.
func isDelimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the JSON string starting at b[i], or
// -1 when it does not end.
func stringEnd(b []byte, i int) int {
	for j := i + 1; ; {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		q := j + k
		escapes := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			escapes++
		}
		if escapes%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
}

// valueEnd returns the index after the JSON value starting at b[i], however
// deeply nested (no recursion), or -1 when it does not end.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := stringEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && !isDelimiter(b[j]) {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// size is what the message costs us to hold: body, header names and values.
func size(h nats.Header, body []byte) int {
	n := len(body)
	for name, values := range h {
		n += len(name)
		for _, v := range values {
			n += len(v)
		}
	}
	return n
}

// checkStructuredBody rejects what the SDK's JSON reader would misread: it
// reads the first object and ignores trailing bytes, and passes invalid UTF-8
// through.
func checkStructuredBody(body []byte) *DecodeError {
	if !utf8.Valid(body) {
		return invalid("event is not valid UTF-8")
	}
	if !json.Valid(body) {
		return invalid("event is not JSON")
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return invalid("event is not a JSON object")
	}
	return nil
}

// toEvent runs the SDK's conversion. The SDK is not written for hostile
// input (a non-string data_base64 makes it slice out of range), so a panic in
// it is turned into an error instead of taking the consumer down.
func toEvent(m *incoming) (ev *cloudevent.Event, err error) {
	defer func() {
		if p := recover(); p != nil {
			ev, err = nil, fmt.Errorf("malformed event (%v)", p)
		}
	}()
	ev, err = binding.ToEvent(context.Background(), m)
	if err == nil && ev == nil {
		err = errors.New("no event in message")
	}
	return ev, err
}

// fromEvent applies cardbridge's rules to a parsed CloudEvent.
func fromEvent(m *incoming, ev *cloudevent.Event) (*Request, *DecodeError) {
	// The SDK trims white space around id, type and subject read from
	// headers, and NATS trims header values, but the SDK's JSON reader keeps
	// it: trimming here makes both modes yield the same idempotency key.
	id, source := strings.TrimSpace(ev.ID()), strings.TrimSpace(ev.Source())
	typ, subject := strings.TrimSpace(ev.Type()), strings.TrimSpace(ev.Subject())
	traceParent, traceState := m.traceContext(stringExtension(ev, "traceparent"), stringExtension(ev, "tracestate"))
	fail := func(e *DecodeError) (*Request, *DecodeError) {
		e.ID, e.Source = usableAttribute(id), usableAttribute(source)
		e.Subject, e.Type = usableAttribute(subject), usableAttribute(typ)
		e.TraceParent, e.TraceState = traceParent, traceState
		return nil, e
	}
	if sv := ev.SpecVersion(); sv != cloudevent.CloudEventsVersionV1 {
		return fail(unsupported("specversion %s is not supported, only 1.0", quoteShort(sv)))
	}
	for _, a := range []struct{ name, value string }{
		{"id", id}, {"source", source}, {"type", typ}, {"subject", subject},
	} {
		if a.value == "" && a.name != "subject" {
			return fail(invalid("required attribute %s is missing", a.name))
		}
		if !utf8.ValidString(a.value) {
			return fail(invalid("attribute %s is not valid UTF-8", a.name))
		}
		// CloudEvents 1.0 forbids control characters in string
		// attributes; they would also break the header of a replay.
		if hasControl(a.value) {
			return fail(invalid("attribute %s contains a control character", a.name))
		}
	}
	if len(id) > MaxAttributeLength || len(source) > MaxAttributeLength {
		return fail(invalid("id and source may be at most %d bytes", MaxAttributeLength))
	}
	if err := ev.Validate(); err != nil {
		return fail(invalid("not a valid CloudEvent: %s", oneLine(err.Error())))
	}
	if typ != TypeCardRequested {
		return fail(unsupported("type %s is not handled, only %s", quoteShort(typ), TypeCardRequested))
	}
	if !isJSONMediaType(ev.DataContentType()) {
		return fail(unsupported("datacontenttype %s is not JSON", quoteShort(mediaType(ev.DataContentType()))))
	}

	data, derr := decodeData(ev.Data())
	if derr != nil {
		return fail(derr)
	}
	switch {
	case subject == "":
		// The contract makes the subject the employee id; producers that
		// only fill the data are common enough to accept.
		subject = data.Employee.ID
	case subject != data.Employee.ID:
		// Which one names the employee? Guessing could put a card in the
		// wrong hands, so refuse.
		return fail(schemaInvalid("subject does not match data.employee.id"))
	}
	return &Request{
		ID:          id,
		Source:      source,
		Subject:     subject,
		Type:        typ,
		Time:        ev.Time(),
		TraceParent: traceParent,
		TraceState:  traceState,
		Data:        data,
	}, nil
}

// decodeData checks the data against the request schema and decodes it.
func decodeData(data []byte) (RequestData, *DecodeError) {
	var out RequestData
	if len(bytes.TrimSpace(data)) == 0 {
		return out, schemaInvalid("event has no data")
	}
	if !utf8.Valid(data) {
		return out, schemaInvalid("data is not valid UTF-8")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return out, schemaInvalid("data is not JSON")
	}
	if path, ok := longNumber(doc, ""); ok {
		// The validator compares numbers as big.Rat, which costs
		// milliseconds for a number of thousands of digits.
		return out, schemaInvalid("data: %s: number has more than %d characters", quoteShort(path), maxNumberLength)
	}
	if err := schemas.ValidateRequestData(doc); err != nil {
		return out, schemaInvalid("data: %s", err.Error())
	}
	// The schema has accepted the shape, so this only fails on numbers the
	// schema allows but int64 cannot hold exactly, such as 1e3.
	if err := json.Unmarshal(data, &out); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return out, schemaInvalid("data: /%s must be a plain integer that fits 64 bits", strings.ReplaceAll(te.Field, ".", "/"))
		}
		return out, schemaInvalid("data cannot be decoded")
	}
	return out, nil
}

// maxNumberLength is far more than any id or amount needs.
const maxNumberLength = 32

// longNumber finds a number in a decoded JSON document written with more than
// maxNumberLength characters, and returns its JSON Pointer.
func longNumber(v any, path string) (string, bool) {
	switch v := v.(type) {
	case json.Number:
		if len(v) > maxNumberLength {
			if path == "" {
				path = "/"
			}
			return path, true
		}
	case map[string]any:
		for k, e := range v {
			if p, ok := longNumber(e, path+"/"+k); ok {
				return p, true
			}
		}
	case []any:
		for i, e := range v {
			if p, ok := longNumber(e, path+"/"+strconv.Itoa(i)); ok {
				return p, true
			}
		}
	}
	return "", false
}

func stringExtension(ev *cloudevent.Event, name string) string {
	s, _ := ev.Extensions()[name].(string)
	return s
}

package event

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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

// maxAttributes bounds the attributes of an event: headers named ce-*,
// content-type, traceparent or tracestate in binary mode, top-level members
// in structured mode. A request has about ten; thousands cost the SDK
// milliseconds.
const maxAttributes = 64

// maxContentType bounds the content-type header (bytes): far more than
// a media type with its charset, and parsing a long one costs milliseconds.
const maxContentType = 256

// maxAttributeValue bounds the value of every attribute but the data
// (bytes): a header value in binary mode, a string member in structured
// mode. The longest a request needs is a tracestate (W3C recommends
// propagating 512 characters); a 64 KB time or traceparent costs the SDK
// milliseconds to read and refuse. A tracestate past it is dropped, like one
// past maxTraceState; any other attribute past it refuses the event.
const maxAttributeValue = 4 << 10

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
	} else if derr, isJSON := checkStructuredBody(body); derr != nil {
		if isJSON {
			recoverStructured(body, m, derr, false)
		}
		return nil, derr
	} else if mem, derr := checkMembers(body); derr != nil {
		// The SDK would refuse the event too, more slowly.
		recoverStructured(body, m, derr, true)
		return nil, derr
	} else {
		// Data the schema cannot accept is refused where decodeData
		// would refuse it, but the SDK reads the event without it: it
		// would read the data three times over, and misread some
		// numbers. A tracestate too long to carry is not read at all.
		var cut []span
		if mem.data.start >= 0 {
			if m.dataErr = scanData(body[mem.data.start:mem.data.end]); m.dataErr != nil {
				cut = append(cut, span{mem.data.start, mem.data.end, "null"})
			}
		}
		if mem.traceState.start >= 0 {
			cut = append(cut, span{mem.traceState.start, mem.traceState.end, `""`})
		}
		m.body = replaceSpans(body, cut)
	}

	ev, err := toEvent(m)
	if err != nil {
		derr := invalid("not a valid CloudEvent: %s", oneLine(capMessage(err.Error())))
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
	for name, raw := range topLevelMembers(b, names...) {
		var value string
		if len(raw) <= 8*MaxAttributeLength && raw[0] == '"' && json.Unmarshal(raw, &value) == nil {
			out[name] = value
		}
	}
	return out
}

// topLevelMembers returns the raw values of the members named in names of a
// JSON object (the last one of a name given twice, as encoding/json
// decodes), skipping every other member without decoding it. It stops at
// the first thing that is not JSON and returns what it found before.
func topLevelMembers(b []byte, names ...string) map[string][]byte {
	out := map[string][]byte{}
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
		if key, ok := memberName(b[i:keyEnd], names); ok {
			out[key] = b[start:end]
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ',' {
			return out
		}
	}
	return out
}

// memberName returns which of names the raw JSON string raw is, decoding it
// only when it has escapes, so that thousands of other names cost no
// allocation. A name is at most 15 characters, each written in at most 6.
func memberName(raw []byte, names []string) (string, bool) {
	if len(raw) > 2+6*15 {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		for _, n := range names {
			if string(raw[1:len(raw)-1]) == n {
				return n, true
			}
		}
		return "", false
	}
	var key string
	if json.Unmarshal(raw, &key) != nil || !slices.Contains(names, key) {
		return "", false
	}
	return key, true
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
// through. isJSON says whether body is JSON all the same.
func checkStructuredBody(body []byte) (derr *DecodeError, isJSON bool) {
	isJSON = json.Valid(body)
	if !utf8.Valid(body) {
		return invalid("event is not valid UTF-8"), isJSON
	}
	if !isJSON {
		return invalid("event is not JSON"), false
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return invalid("event is not a JSON object"), true
	}
	return nil, true
}

// checkMembers refuses, before the SDK reads it, a structured event (a JSON
// object) with more than maxAttributes members, with a number of more than
// maxNumberLength characters, a string of more than maxAttributeValue bytes
// (other than the data and a tracestate), or with an object or an array
// anywhere but in data: the SDK refuses objects and arrays too, but only
// after formatting the whole value into its error, which for deep nesting
// costs a tenth of a second. It also says where the value of the data member
// is in body, when there is exactly one, and where a tracestate too long to
// read is.
func checkMembers(body []byte) (members, *DecodeError) {
	mem := members{data: span{start: -1, end: -1}, traceState: span{start: -1, end: -1}}
	datas := 0
	i := skipSpace(body, 0) // at '{': checkStructuredBody has passed
	for n := 1; ; n++ {
		i = skipSpace(body, i+1)
		if i >= len(body) || body[i] != '"' {
			break // the empty object
		}
		if n > maxAttributes {
			return mem, invalid("event has more than %d attributes", maxAttributes)
		}
		keyEnd := stringEnd(body, i)
		start := skipSpace(body, skipSpace(body, keyEnd)+1)
		end := valueEnd(body, start)
		if end < 0 {
			return mem, nil // not reached: the body is JSON
		}
		name, known := memberName(body[i:keyEnd], []string{"data", "data_base64", "tracestate"})
		c := body[start]
		switch {
		case known && name == "data":
			datas++
			mem.data = span{start: start, end: end}
		case c == '{' || c == '[':
			return mem, invalid("attribute %s is an object or an array", quoteShort(string(body[i+1:keyEnd-1])))
		case (c == '-' || (c >= '0' && c <= '9')) && end-start > maxNumberLength:
			// A CloudEvents integer is 32 bits; the SDK reads 64 KB of
			// digits as a float, slowly.
			return mem, invalid("attribute %s is a number of more than %d characters", quoteShort(string(body[i+1:keyEnd-1])), maxNumberLength)
		case c == '"' && end-start > maxAttributeValue+2:
			switch name {
			case "data_base64": // data, bounded by the event's size and scanned once decoded
			case "tracestate":
				mem.traceState = span{start: start, end: end}
			default:
				return mem, invalid("attribute %s is longer than %d bytes", quoteShort(string(body[i+1:keyEnd-1])), maxAttributeValue)
			}
		}
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ',' {
			break
		}
	}
	if datas != 1 {
		mem.data = span{start: -1, end: -1}
	}
	return mem, nil
}

// members is what checkMembers found of a structured event's members.
type members struct {
	data       span // the value of data (-1 when not exactly one)
	traceState span // a tracestate value too long to read (-1 when none)
}

// span is a part of a body, body[start:end], and what replaces it.
type span struct {
	start, end int
	with       string
}

// replaceSpans returns body with each span replaced by its text; spans are
// disjoint, in any order. Without spans it is body itself.
func replaceSpans(body []byte, spans []span) []byte {
	if len(spans) == 0 {
		return body
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	out := make([]byte, 0, len(body))
	at := 0
	for _, s := range spans {
		out = append(append(out, body[at:s.start]...), s.with...)
		at = s.end
	}
	return append(out, body[at:]...)
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
		return fail(invalid("not a valid CloudEvent: %s", oneLine(capMessage(err.Error()))))
	}
	if typ != TypeCardRequested {
		return fail(unsupported("type %s is not handled, only %s", quoteShort(typ), TypeCardRequested))
	}
	if !isJSONMediaType(ev.DataContentType()) {
		return fail(unsupported("datacontenttype %s is not JSON", quoteShort(mediaType(ev.DataContentType()))))
	}

	if m.dataErr != nil {
		return fail(m.dataErr)
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

// validateRequestData is the schema check of decodeData; tests wrap it to
// see what reaches the validator.
var validateRequestData = schemas.ValidateRequestData

// decodeData checks the data against the request schema and decodes it.
func decodeData(data []byte) (RequestData, *DecodeError) {
	var out RequestData
	if len(bytes.TrimSpace(data)) == 0 {
		return out, schemaInvalid("event has no data")
	}
	if !utf8.Valid(data) {
		return out, schemaInvalid("data is not valid UTF-8")
	}
	// What the schema could never accept but would cost the decoder or
	// the validator dear is refused first, in one cheap pass.
	if derr := scanData(data); derr != nil {
		return out, derr
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return out, schemaInvalid("data is not JSON")
	}
	if err := validateRequestData(doc); err != nil {
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

func stringExtension(ev *cloudevent.Event, name string) string {
	s, _ := ev.Extensions()[name].(string)
	return s
}

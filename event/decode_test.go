package event

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func TestDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{Binary, Structured} {
		t.Run(mode.String(), func(t *testing.T) {
			want := validRequest()
			m := encodeRequest(t, want, mode)
			require.Equal(t, TypeCardRequested, m.Subject)

			got, err := Decode(m.Header, m.Data)
			require.NoError(t, err)
			require.Equal(t, want.ID, got.ID)
			require.Equal(t, want.Source, got.Source)
			require.Equal(t, want.Subject, got.Subject)
			require.Equal(t, want.Type, got.Type)
			require.True(t, want.Time.Equal(got.Time), "time %v != %v", got.Time, want.Time)
			require.Equal(t, want.TraceParent, got.TraceParent)
			require.Equal(t, want.TraceState, got.TraceState)
			require.Equal(t, want.Data, got.Data)
		})
	}
}

func TestDecodeHeaderNamesAnyCase(t *testing.T) {
	t.Parallel()
	h := nats.Header{
		"CE-SPECVERSION": {"1.0"},
		"CE-ID":          {"req-1"},
		"Ce-Source":      {"urn:erp:acme"},
		"ce-Type":        {TypeCardRequested},
		"Ce-Subject":     {"E-42"},
		"Content-Type":   {"Application/JSON; charset=utf-8"},
		"Ce-TraceParent": {testTraceParent},
	}
	got, err := Decode(h, []byte(validData))
	require.NoError(t, err)
	require.Equal(t, "req-1", got.ID)
	require.Equal(t, "urn:erp:acme", got.Source)
	require.Equal(t, testTraceParent, got.TraceParent)

	// Structured mode's content type is matched the same way.
	m := encodeRequest(t, validRequest(), Structured)
	_, err = Decode(nats.Header{"Content-Type": {"Application/CloudEvents+JSON; charset=UTF-8"}}, m.Data)
	require.NoError(t, err)
}

func TestDecodeSubjectFallback(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{Binary, Structured} {
		r := validRequest()
		r.Subject = ""
		m := encodeRequest(t, r, mode)
		got, err := Decode(m.Header, m.Data)
		require.NoError(t, err, mode)
		require.Equal(t, "E-42", got.Subject, mode)
	}
}

func TestDecodeTraceParent(t *testing.T) {
	t.Parallel()
	t.Run("ce extension in binary mode", func(t *testing.T) {
		h := binaryHeader()
		h.Set("ce-traceparent", testTraceParent)
		h.Set("ce-tracestate", "a=b")
		got, err := Decode(h, []byte(validData))
		require.NoError(t, err)
		require.Equal(t, testTraceParent, got.TraceParent)
		require.Equal(t, "a=b", got.TraceState)
	})
	t.Run("plain W3C header", func(t *testing.T) {
		h := binaryHeader()
		h.Set("traceparent", testTraceParent)
		got, err := Decode(h, []byte(validData))
		require.NoError(t, err)
		require.Equal(t, testTraceParent, got.TraceParent)
	})
	t.Run("plain W3C header with structured mode", func(t *testing.T) {
		r := validRequest()
		r.TraceParent = ""
		m := encodeRequest(t, r, Structured)
		m.Header.Set("Traceparent", testTraceParent)
		got, err := Decode(m.Header, m.Data)
		require.NoError(t, err)
		require.Equal(t, testTraceParent, got.TraceParent)
	})
	t.Run("malformed is dropped, request accepted", func(t *testing.T) {
		h := binaryHeader()
		h.Set("ce-traceparent", "00-not-a-trace")
		h.Set("ce-tracestate", "a=b")
		got, err := Decode(h, []byte(validData))
		require.NoError(t, err)
		require.Empty(t, got.TraceParent)
		require.Empty(t, got.TraceState)
	})
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	structuredBody := func(edit func(string) string) []byte {
		m := encodeRequest(t, validRequest(), Structured)
		return []byte(edit(string(m.Data)))
	}
	without := func(h nats.Header, name string) nats.Header { h.Del(name); return h }
	with := func(h nats.Header, name, value string) nats.Header { h.Set(name, value); return h }

	tests := []struct {
		name   string
		header nats.Header
		body   []byte
		reason string
		// wantID is the id the error must still carry, for correlation.
		wantID string
	}{
		{"structured body not JSON", structured(), []byte(`{"specversion":"1.0",`), ReasonInvalidEvent, ""},
		{"structured body JSON but no CloudEvent", structured(), []byte(`{"hello":"world"}`), ReasonInvalidEvent, ""},
		{"structured body a JSON array", structured(), []byte(`[1,2]`), ReasonInvalidEvent, ""},
		{"structured trailing garbage", structured(), structuredBody(func(s string) string { return s + "{}" }), ReasonInvalidEvent, ""},
		{"no content type, no ce headers", nats.Header{}, []byte(validData), ReasonInvalidEvent, ""},
		{"nil header and body", nil, nil, ReasonInvalidEvent, ""},
		{"structured missing id", structured(), structuredBody(func(s string) string { return strings.Replace(s, `"id":"req-0001",`, "", 1) }), ReasonInvalidEvent, ""},
		{"structured missing source", structured(), structuredBody(func(s string) string { return strings.Replace(s, `"source":"urn:erp:acme",`, "", 1) }), ReasonInvalidEvent, "req-0001"},
		{"structured missing type", structured(), structuredBody(func(s string) string {
			return strings.Replace(s, `"type":"employee.card.requested",`, "", 1)
		}), ReasonInvalidEvent, "req-0001"},
		{"structured missing specversion", structured(), structuredBody(func(s string) string { return strings.Replace(s, `"specversion":"1.0",`, "", 1) }), ReasonInvalidEvent, "req-0001"},
		{"structured specversion 0.3", structured(), structuredBody(func(s string) string { return strings.Replace(s, `"specversion":"1.0"`, `"specversion":"0.3"`, 1) }), ReasonUnsupportedEvent, "req-0001"},
		{"structured specversion 2.0", structured(), structuredBody(func(s string) string { return strings.Replace(s, `"specversion":"1.0"`, `"specversion":"2.0"`, 1) }), ReasonUnsupportedEvent, "req-0001"},
		{"structured unknown type", structured(), structuredBody(func(s string) string { return strings.Replace(s, TypeCardRequested, "employee.card.cancelled", 1) }), ReasonUnsupportedEvent, "req-0001"},
		{"structured non-JSON datacontenttype", structured(), structuredBody(func(s string) string {
			return strings.Replace(s, `"datacontenttype":"application/json"`, `"datacontenttype":"application/xml"`, 1)
		}), ReasonUnsupportedEvent, "req-0001"},
		{"structured bad time", structured(), structuredBody(func(s string) string {
			return strings.Replace(s, `"time":"2026-11-25T09:30:00Z"`, `"time":"yesterday"`, 1)
		}), ReasonInvalidEvent, "req-0001"},
		{"structured invalid UTF-8 in data", structured(), structuredBody(func(s string) string { return strings.Replace(s, "Lovelace", "Love\xfflace", 1) }), ReasonInvalidEvent, "req-0001"},
		{"structured data_base64 not a string", structured(), []byte(`{"data_base64":1,"specversion":"1.0","id":"x","source":"s","type":"t"}`), ReasonInvalidEvent, "x"},
		{"structured data failing schema", structured(), structuredBody(func(s string) string { return strings.Replace(s, `"clientId":7`, `"clientId":0`, 1) }), ReasonSchemaInvalid, "req-0001"},
		{"structured unknown data field", structured(), structuredBody(func(s string) string { return strings.Replace(s, `"clientId":7`, `"clientId":7,"spendLimit":100`, 1) }), ReasonSchemaInvalid, "req-0001"},
		{"structured subject contradicts data", structured(), structuredBody(func(s string) string { return strings.Replace(s, `"subject":"E-42"`, `"subject":"E-43"`, 1) }), ReasonSchemaInvalid, "req-0001"},
		{"structured batch", nats.Header{"content-type": {"application/cloudevents-batch+json"}}, []byte(`[]`), ReasonUnsupportedEvent, ""},
		{"oversized", binaryHeader(), []byte(`{"pad":"` + strings.Repeat("x", MaxEventSize) + `"}`), ReasonInvalidEvent, "req-0001"},

		{"binary missing id", without(binaryHeader(), "ce-id"), []byte(validData), ReasonInvalidEvent, ""},
		{"binary missing source", without(binaryHeader(), "ce-source"), []byte(validData), ReasonInvalidEvent, "req-0001"},
		{"binary missing type", without(binaryHeader(), "ce-type"), []byte(validData), ReasonInvalidEvent, "req-0001"},
		{"binary missing specversion", without(binaryHeader(), "ce-specversion"), []byte(validData), ReasonInvalidEvent, ""},
		{"binary specversion 0.3", with(binaryHeader(), "ce-specversion", "0.3"), []byte(validData), ReasonUnsupportedEvent, "req-0001"},
		{"binary unknown type", with(binaryHeader(), "ce-type", "employee.card.cancelled"), []byte(validData), ReasonUnsupportedEvent, "req-0001"},
		{"binary non-JSON datacontenttype", with(binaryHeader(), "content-type", "text/plain"), []byte(validData), ReasonUnsupportedEvent, "req-0001"},
		{"binary data not JSON", binaryHeader(), []byte(`employee=E-42`), ReasonSchemaInvalid, "req-0001"},
		{"binary no data", binaryHeader(), nil, ReasonSchemaInvalid, "req-0001"},
		{"binary invalid UTF-8 in data", binaryHeader(), []byte(strings.Replace(validData, "Ada", "A\xc3\x28a", 1)), ReasonSchemaInvalid, "req-0001"},
		{"binary invalid UTF-8 in header", with(binaryHeader(), "ce-subject", "E-\xff"), []byte(validData), ReasonInvalidEvent, "req-0001"},
		{"binary bad time", with(binaryHeader(), "ce-time", "25/11/2026"), []byte(validData), ReasonInvalidEvent, "req-0001"},
		{"binary conflicting duplicate header", with(binaryHeader(), "CE-ID", "other"), []byte(validData), ReasonInvalidEvent, ""},
		{"binary data failing schema", binaryHeader(), []byte(`{"employee":{"id":"E-42","firstName":" ","lastName":"L"},"clientId":7}`), ReasonSchemaInvalid, "req-0001"},
		{"binary id too long", with(binaryHeader(), "ce-id", strings.Repeat("i", MaxAttributeLength+1)), []byte(validData), ReasonInvalidEvent, ""},
		{"binary number with thousands of digits", binaryHeader(), []byte(`{"employee":{"id":"E-42","firstName":"A","lastName":"L"},"clientId":1` + strings.Repeat("0", 5000) + `}`), ReasonSchemaInvalid, "req-0001"},
		{"binary data is null", binaryHeader(), []byte(`null`), ReasonSchemaInvalid, "req-0001"},
		{"binary clientId beyond int64", binaryHeader(), []byte(`{"employee":{"id":"E-42","firstName":"A","lastName":"L"},"clientId":1e3}`), ReasonSchemaInvalid, "req-0001"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.header, tc.body)
			require.Nil(t, got)
			de := requireDecodeError(t, err, tc.reason)
			require.Equal(t, tc.wantID, de.ID)
			t.Log(de.Error())
		})
	}
}

func TestDecodeErrorCorrelation(t *testing.T) {
	t.Parallel()
	h := with3(binaryHeader(), "ce-traceparent", testTraceParent)
	_, err := Decode(h, []byte(`{"employee":{}}`))
	de := requireDecodeError(t, err, ReasonSchemaInvalid)
	require.True(t, de.Correlatable())
	require.Equal(t, RequestRef{ID: "req-0001", Source: "urn:erp:acme", EmployeeID: "E-42", TraceParent: testTraceParent}, de.Ref())
	require.Equal(t, TypeCardRequested, de.Type)
}

func with3(h nats.Header, name, value string) nats.Header { h.Set(name, value); return h }

// An oversized message is refused before any parsing, but what it says of
// its request is still read (headers, or the start of a structured body), so
// the request can be answered.
func TestDecodeOversizedKeepsTheRequest(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", MaxEventSize)
	for name, tc := range map[string]struct {
		h      nats.Header
		body   string
		wantID string
	}{
		"binary": {nats.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"req-1"}, "Ce-Source": {"urn:erp:acme"}, "Ce-Type": {TypeCardRequested},
			"Content-Type": {"application/json"}}, `{"pad":"` + big + `"}`, "req-1"},
		"structured, attributes first": {nats.Header{"Content-Type": {"application/cloudevents+json"}},
			`{"specversion":"1.0","id":"req-2","source":"urn:erp:acme","type":"employee.card.requested","data":{"a":[1,{"b":"` + big + `"}]}}`, "req-2"},
		"structured, nested members skipped": {nats.Header{"Content-Type": {"application/cloudevents+json"}},
			`{"x":{"id":"no"},"y":[{"source":"no"}],"id":"req-3","source":"urn:erp:acme","data":"` + big + `"}`, "req-3"},
		"structured, attributes after the data": {nats.Header{"Content-Type": {"application/cloudevents+json"}},
			`{"data":{"s":"` + big + `","q":"\"}","n":[[1,2],{"id":"no"}]},"id":"late","source":"urn:erp:acme"}`, "late"},
		"structured, cut": {nats.Header{"Content-Type": {"application/cloudevents+json"}},
			`{"id":"req-4","source":"urn:erp:acme","data":"` + big, "req-4"},
		"not JSON": {nats.Header{"Content-Type": {"application/cloudevents+json"}}, big, ""},
		"structured, id not a string": {nats.Header{"Content-Type": {"application/cloudevents+json"}},
			`{"id":{"deep":["req"]},"source":"urn:erp:acme","data":"` + big + `"}`, ""},
		"structured, deep nesting": {nats.Header{"Content-Type": {"application/cloudevents+json"}},
			`{"data":` + strings.Repeat("[", MaxEventSize) + strings.Repeat("]", MaxEventSize) + `,"id":"req-5","source":"urn:erp:acme"}`, "req-5"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(tc.h, []byte(tc.body))
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			require.Equal(t, ReasonInvalidEvent, de.Reason)
			require.Contains(t, de.Message, "larger than")
			require.Equal(t, tc.wantID, de.Ref().ID)
			if tc.wantID != "" {
				require.Equal(t, "urn:erp:acme", de.Ref().Source)
			}
		})
	}
}

// An attribute value is bounded at maxAttributeValue bytes: a longer one
// refuses the event before the SDK reads it, except a tracestate, which is
// advisory and dropped. A value at the bound is read as before.
func TestAttributeValuesAreBounded(t *testing.T) {
	t.Parallel()
	long := "acme=" + strings.Repeat("x", maxAttributeValue)
	for _, mode := range []Mode{Structured, Binary} {
		r := validRequest()
		r.TraceState = long
		m := encodeRequest(t, r, mode)
		got, err := Decode(m.Header, m.Data)
		require.NoError(t, err, "mode %v: a tracestate too long to carry is dropped, not refused", mode)
		require.Empty(t, got.TraceState)
		require.Equal(t, testTraceParent, got.TraceParent)
		require.Equal(t, r.Data, got.Data)

		r = validRequest()
		r.TraceState = "acme=" + strings.Repeat("x", maxTraceState-len("acme="))
		m = encodeRequest(t, r, mode)
		got, err = Decode(m.Header, m.Data)
		require.NoError(t, err)
		require.Equal(t, r.TraceState, got.TraceState, "mode %v: a tracestate within bounds is carried", mode)
	}

	h := binaryHeader()
	h.Set("ce-comment", strings.Repeat("y", maxAttributeValue))
	_, err := Decode(h, []byte(validData))
	require.NoError(t, err, "an extension of exactly maxAttributeValue bytes is read")
	h.Set("ce-comment", strings.Repeat("y", maxAttributeValue+1))
	_, err = Decode(h, []byte(validData))
	de := requireDecodeError(t, err, ReasonInvalidEvent)
	require.Contains(t, de.Message, "ce-comment is longer than 4096 bytes")
	require.Equal(t, "req-0001", de.ID, "the request is still answered")

	body := `{"specversion":"1.0","id":"req-0001","source":"urn:erp:acme","type":"` + TypeCardRequested +
		`","comment":"` + strings.Repeat("y", maxAttributeValue+1) + `","data":` + validData + `}`
	_, err = Decode(structured(), []byte(body))
	de = requireDecodeError(t, err, ReasonInvalidEvent)
	require.Contains(t, de.Message, `attribute "comment" is longer than 4096 bytes`)
	require.Equal(t, "req-0001", de.ID)
}

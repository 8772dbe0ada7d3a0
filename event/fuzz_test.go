package event

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/schemas"
)

// parseFuzzHeader reads headers written one per line as "name:value", so the
// fuzzer can mutate names, values, case, duplicates and invalid bytes alike.
func parseFuzzHeader(raw []byte) nats.Header {
	h := nats.Header{}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		h.Add(string(name), string(value))
	}
	return h
}

func formatFuzzHeader(h nats.Header) []byte {
	var b bytes.Buffer
	for name, values := range h {
		for _, v := range values {
			b.WriteString(name + ":" + v + "\n")
		}
	}
	return b.Bytes()
}

// FuzzDecode holds Decode to its promise on any input: it does not panic, and
// it either returns a request whose data matches the schema and whose
// outcomes encode, or a *DecodeError with a known reason.
// The corpus in testdata/fuzz/FuzzDecode has valid structured and binary
// requests and broken ones; f.Add adds the encoder's current output and the
// hostile catalogue.
func FuzzDecode(f *testing.F) {
	for _, mode := range []Mode{Binary, Structured} {
		m, err := EncodeRequest(validRequest(), mode)
		require.NoError(f, err)
		f.Add(formatFuzzHeader(m.Header), m.Data)
	}
	// The hostile catalogue (hostile_test.go): huge exponents, deep
	// nesting, long strings, many keys and headers, invalid UTF-8, NUL...
	for _, in := range hostileInputs() {
		f.Add(formatFuzzHeader(in.header), in.body)
	}
	f.Fuzz(func(t *testing.T, rawHeader, body []byte) {
		h := parseFuzzHeader(rawHeader)
		r, err := Decode(h, body)
		if err != nil {
			require.Nil(t, r)
			de, ok := err.(*DecodeError)
			require.True(t, ok, "error is %T", err)
			require.True(t, KnownReason(de.Reason), "reason %q", de.Reason)
			require.NotEmpty(t, de.Message)
			require.NotContains(t, de.Message, "\n")
			for _, s := range []string{de.ID, de.Source, de.Subject, de.Type} {
				require.True(t, utf8.ValidString(s))
				require.LessOrEqual(t, len(s), MaxAttributeLength)
			}
			if de.Correlatable() {
				// The consumer must always be able to answer.
				o := NewFailed(testSource, de.Ref(), de.Failure(), issuedAt)
				require.NoError(t, o.Validate())
				_, err := o.Encode()
				require.NoError(t, err)
			}
			return
		}
		require.NotNil(t, r)
		require.Equal(t, TypeCardRequested, r.Type)
		require.NotEmpty(t, strings.TrimSpace(r.ID))
		require.NotEmpty(t, strings.TrimSpace(r.Source))
		require.Equal(t, r.Data.Employee.ID, r.Subject)
		require.NoError(t, schemas.ValidateRequestData(r.Data))

		o := NewIssued(testSource, r.Ref(), testCard())
		require.NoError(t, o.Validate())
		_, err = o.Encode()
		require.NoError(t, err)

		// What was accepted once is accepted again after re-encoding, in
		// either mode (the publish and replay commands rely on it).
		for _, mode := range []Mode{Binary, Structured} {
			m, err := EncodeRequest(*r, mode)
			require.NoError(t, err, mode)
			again, err := Decode(m.Header, m.Data)
			require.NoError(t, err, mode)
			require.True(t, r.Time.Equal(again.Time))
			again.Time = r.Time
			require.Equal(t, r, again, mode)
		}
	})
}

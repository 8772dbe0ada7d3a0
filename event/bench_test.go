package event

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cardbridge/cardbridge/schemas"
)

func benchmarkDecode(b *testing.B, mode Mode) {
	m := encodeRequest(b, validRequest(), mode)
	b.SetBytes(int64(len(m.Data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(m.Header, m.Data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeStructured(b *testing.B) { benchmarkDecode(b, Structured) }
func BenchmarkDecodeBinary(b *testing.B)     { benchmarkDecode(b, Binary) }

// BenchmarkDecodeRejected measures the cost of refusing garbage, which a
// misbehaving producer can send at full speed.
func BenchmarkDecodeRejected(b *testing.B) {
	m := encodeRequest(b, validRequest(), Structured)
	body := m.Data[:len(m.Data)-1]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(m.Header, body); err == nil {
			b.Fatal("accepted a truncated event")
		}
	}
}

func BenchmarkEncodeIssued(b *testing.B) {
	o := NewIssued(testSource, decodedRequest(b).Ref(), testCard())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := o.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateIssued is what Encode would add if it validated each
// outcome against its schema.
func BenchmarkValidateIssued(b *testing.B) {
	o := NewIssued(testSource, decodedRequest(b).Ref(), testCard())
	b.ReportAllocs()
	for b.Loop() {
		if err := schemas.ValidateIssued(o.Data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeOversized is the cost of refusing a 1 MB structured
// message while still reading its request's id and source.
func BenchmarkDecodeOversized(b *testing.B) {
	h := nats.Header{"Content-Type": {"application/cloudevents+json"}}
	body := []byte(`{"specversion":"1.0","id":"req-1","source":"urn:erp:acme","type":"employee.card.requested","data":{"pad":"` + strings.Repeat("x", 1<<20) + `"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(h, body); err == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkDecodeOversizedNested is the same with 1 MB of nested arrays
// before the attributes: the scan cannot jump over strings.
func BenchmarkDecodeOversizedNested(b *testing.B) {
	h := nats.Header{"Content-Type": {"application/cloudevents+json"}}
	body := []byte(`{"data":` + strings.Repeat("[", 1<<19) + strings.Repeat("]", 1<<19) + `,"specversion":"1.0","id":"req-1","source":"urn:erp:acme"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(h, body); err == nil {
			b.Fatal("accepted")
		}
	}
}

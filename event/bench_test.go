package event

import (
	"testing"

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

package event

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// headerWriter is a binding.BinaryWriter that writes a binary-mode event
// into NATS headers and a body, per the CloudEvents NATS binding.
type headerWriter struct {
	header nats.Header
	data   []byte
}

var _ binding.BinaryWriter = (*headerWriter)(nil)

func newHeaderWriter() *headerWriter {
	return &headerWriter{header: make(nats.Header, 10)}
}

func (w *headerWriter) Start(context.Context) error { return nil }
func (w *headerWriter) End(context.Context) error   { return nil }

func (w *headerWriter) SetAttribute(a spec.Attribute, value any) error {
	name := headerPrefix + a.Name()
	if a.Kind() == spec.DataContentType {
		name = headerContentType
	}
	return w.set(name, value)
}

func (w *headerWriter) SetExtension(name string, value any) error {
	return w.set(headerPrefix+strings.ToLower(name), value)
}

func (w *headerWriter) set(name string, value any) error {
	if value == nil {
		delete(w.header, name)
		return nil
	}
	s, err := types.Format(value)
	if err != nil {
		return fmt.Errorf("header %s: %w", name, err)
	}
	if !headerSafe(s) {
		// A line break would end the header early and let the rest
		// be read as another header.
		return fmt.Errorf("header %s: value contains a control character", name)
	}
	w.header.Set(name, s)
	return nil
}

func (w *headerWriter) SetData(r io.Reader) error {
	if b, ok := r.(*bytes.Buffer); ok {
		w.data = b.Bytes()
		return nil
	}
	b, err := io.ReadAll(r)
	w.data = b
	return err
}

// headerSafe reports whether s can be a NATS header value: no control
// characters.
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// Package secret holds the types that keep credentials out of logs, errors
// and events.
//
// A String is redacted by its type: fmt, slog and encoding/json all print
// "[REDACTED]" instead of its value, so a password or token can be carried in
// a struct that is logged by mistake without leaking. Only Reveal returns the
// plain value, and it should be called at the last moment, where the value
// leaves the process for the party that is entitled to it.
package secret

import (
	"fmt"
	"log/slog"
)

const redacted = "[REDACTED]"

// String is a secret value such as a password, an OAuth token or a client
// secret.
type String struct {
	v string
}

// New wraps a plain value.
func New(v string) String { return String{v: v} }

// Reveal returns the plain value.
func (s String) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s String) IsZero() bool { return s.v == "" }

// String implements fmt.Stringer and never shows the value.
func (s String) String() string { return redacted }

// GoString implements fmt.GoStringer for %#v.
func (s String) GoString() string { return redacted }

// Format implements fmt.Formatter so that every verb (%s, %v, %q, %x, %d...)
// prints the redaction marker.
func (s String) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (s String) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler; a secret is never serialised.
func (s String) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (s String) MarshalText() ([]byte, error) { return []byte(redacted), nil }

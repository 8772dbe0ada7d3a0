package observe

// The process's slog.Logger: tint's coloured text on a terminal (or with
// LOG_FORMAT=text), JSON otherwise.
//
// Secrets are kept out of the output by their type (secret.String implements
// slog.LogValuer); NewLogger adds a second guard for attributes whose key
// names a secret, so a plain string logged under "password" is redacted too.

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/lmittmann/tint"
)

// NewLogger returns a logger writing to w at level. format is "text", "json" or ""
// (text when w is a terminal, JSON otherwise).
func NewLogger(w io.Writer, level slog.Leveler, format string) *slog.Logger {
	tty := IsTerminal(w)
	if format == "" {
		format = "json"
		if tty {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(tint.NewHandler(w, &tint.Options{
			Level:       level,
			NoColor:     !tty,
			ReplaceAttr: redactByKey,
			TimeFormat:  "15:04:05.000",
		}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: redactByKey}))
}

// DiscardLogger is a logger that writes nothing, for tests and tools.
func DiscardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

var secretKeys = []string{"password", "secret", "token", "authorization", "key"}

// redactByKey hides string values logged under a key that names a secret.
// Keys such as "idempotency_key" or "card_token" are identifiers, not
// secrets, and are listed as exceptions.
func redactByKey(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindString {
		return a
	}
	k := strings.ToLower(a.Key)
	switch k {
	case "idempotency_key", "card_token", "cardtoken", "msg", "level", "time":
		return a
	}
	for _, s := range secretKeys {
		if strings.Contains(k, s) {
			return slog.String(a.Key, "[REDACTED]")
		}
	}
	return a
}

// IsTerminal reports whether w is a terminal (a character device).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return fi.Mode()&os.ModeCharDevice != 0
}

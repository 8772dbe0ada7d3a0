package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/store"
)

func TestPrintable(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                      "",
		"r-1 urn:erp:acme é 漢字": "r-1 urn:erp:acme é 漢字",
		`back\slash`:            `back\slash`,
		"r\x1b[2J":              `r\u001b[2J`,
		"a\tb\nc\rd\x00e\x7f":   `a\u0009b\u000ac\u000dd\u0000e\u007f`,
		"csi\u009b31m":          `csi\u009b31m`,
		"bidi\u202egnp.exe":     `bidi\u202egnp.exe`,
		"zero\u200bwidth":       `zero\u200bwidth`,
		"line\u2028sep":         `line\u2028sep`,
		"tag\U000E0041":         `tag\udb40\udc41`,
		"bad\xff\x9bbyte":       `bad\xff\x9bbyte`,
		"replacement\ufffd":     "replacement\ufffd",
	} {
		require.Equal(t, want, printable(in), "%q", in)
	}
	// Its escapes are JSON's: a compact document stays valid and means
	// the same.
	doc, err := json.Marshal(map[string]string{"id": "r\x1b[2J\u009b\u202e\x7f\U000E0041"})
	require.NoError(t, err)
	var back map[string]string
	require.NoError(t, json.Unmarshal([]byte(printable(string(doc))), &back))
	require.Equal(t, "r\x1b[2J\u009b\u202e\x7f\U000E0041", back["id"])
}

// The outcome publish --wait and dev print: indented JSON, escaped where
// JSON itself would leave a control character raw.
func TestPrintOutcomeEscapes(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	id := "r-12J‮"
	require.NoError(t, printOutcome(Env{Stdout: &out}, event.Outcome{
		Type: event.TypeCardFailed, ID: "ev-1", Source: "urn:cardbridge", Subject: "E-[2J", Time: time.Now(),
		Data: event.Failed{RequestID: id, RequestSource: "urn:erp:acme", Reason: "schema_invalid", Message: "bad]0;x"},
	}))
	require.False(t, rawTerminal(out.String()), "%q", out.String())
	require.Contains(t, out.String(), `"requestId": "r-1\u009b2J\u007f\u202e"`)
	var back struct {
		Subject string
		Data    event.Failed
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &back))
	require.Equal(t, id, back.Data.RequestID)
	require.Equal(t, "E-[2J", back.Subject)
}

// rawTerminal reports whether s holds anything a terminal would act on.
func rawTerminal(s string) bool {
	return strings.ContainsAny(s, "\x1b\x07\x00\x7f\u009b\u202e")
}

// TestCommandsPrintStoredValuesEscaped: a request id or a source is
// whatever a publisher wrote; replay (listing, dry run or not) and
// bindings show an escape sequence in one as text, never send it to the
// terminal.
func TestCommandsPrintStoredValuesEscaped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	vars := map[string]string{"DATABASE_URL": testenv.DatabaseURL(t)}
	code, _, stderr := run(t, vars, "migrate", "up")
	require.Equal(t, 0, code, stderr)
	s, err := store.Open(ctx, store.Options{URL: secret.New(vars["DATABASE_URL"])})
	require.NoError(t, err)
	t.Cleanup(s.Close)

	const (
		source = "urn:erp:\u009b31mevil\u202e"
		id     = "r-1\x1b[2J\x1b]0;pwned\x07"
	)
	_, err = s.Complete(ctx, store.Completion{
		Source: source, RequestID: id, PayloadHash: []byte("h"), Outcome: store.OutcomeFailed, Reason: "unbound_source",
		Event: store.OutboxEvent{EventID: "ev-1", Message: event.Message{Subject: "card.failed", Header: map[string][]string{"Ce-Id": {"ev-1"}}, Data: []byte(`{}`)}},
		DeadLetter: &store.DeadLetter{Reason: "unbound_source", Message: "no binding for " + source, Subject: "employee.card.requested",
			Header: map[string][]string{"ce-id": {id}, "ce-source": {source}}, Data: []byte(`{}`), StreamSeq: 1, Deliveries: 1, FirstSeen: time.Now()},
	})
	require.NoError(t, err)
	require.NoError(t, s.AddBinding(ctx, store.Binding{Source: source, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))

	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns.URL())
	_, err = broker.Ensure(ctx, js, broker.DefaultTopology())
	require.NoError(t, err)
	vars["NATS_URL"] = ns.URL()

	wantID, wantSource := `r-1\u001b[2J\u001b]0;pwned\u0007`, `urn:erp:\u009b31mevil\u202e`
	for _, args := range [][]string{
		{"replay", "--reason", "unbound_source", "--dry-run"},
		{"replay", "--reason", "unbound_source"},
		{"bindings", "list"},
		{"bindings", "remove", "--source", source, "--client-id", "1"},
		{"bindings", "remove", "--source", source, "--client-id", "1"}, // no more: the error names it
	} {
		_, stdout, stderr := run(t, vars, args...)
		out := stdout + stderr
		require.False(t, rawTerminal(out), "%v printed raw: %q", args, out)
		require.Contains(t, out, wantSource, args)
		if args[0] == "replay" {
			require.Contains(t, stdout, wantID, args)
		}
	}
}

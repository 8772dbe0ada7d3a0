package decision

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the README's decision table from Decide")

// decisionCases are the rows of the README's table "What happens to a
// message": what happened, in words, the facts Decide sees, and what is
// committed.
var decisionCases = []struct {
	what      string
	facts     Facts
	committed string
}{
	{"card ordered", Facts{Fault: FaultNone}, "inbox + card order + `card.issued` outbox row"},
	{"already processed (same data)", Facts{Fault: FaultNone}, "nothing"},
	{"already processed, different data", Facts{Fault: FaultNone}, "a `duplicate_conflict` dead letter of its own (the first request stands)"},
	{"no inbox row, but old enough to have been answered before the database lost commits, and its outcome is on the outcome stream (see [Failover](#database-failover-and-lost-commits))", Facts{Fault: FaultNone}, "inbox + card order (or dead letter) rebuilt from the event found; nothing published"},
	{"same, the outcome stream cannot be read (for less than a minute; after that the request is ordered unchecked, with a warning), 2nd delivery", Facts{Fault: FaultInfra, Deliveries: 2}, "nothing"},
	{"not a CloudEvent, or not one cardbridge handles", Facts{Fault: FaultRequest, Reason: event.ReasonInvalidEvent}, "inbox + `card.failed` + dead letter"},
	{"data does not match the schema", Facts{Fault: FaultRequest, Reason: event.ReasonSchemaInvalid}, "inbox + `card.failed` + dead letter"},
	{"source not bound to the client", Facts{Fault: FaultRequest, Reason: event.ReasonUnboundSource}, "inbox + `card.failed` + dead letter"},
	{"the bank refused the order (a business rule: 400, 403, 404), every earlier answer known", Facts{Fault: FaultRejected}, "inbox + `card.failed` (+ bank code) + dead letter"},
	{"the bank failed without acting (500, 503, 429), 3rd delivery, budget left", Facts{Fault: FaultBank, Deliveries: 3, Spent: time.Minute}, "the time spent at the bank"},
	{"same, the bank asked for `Retry-After: 60`", Facts{Fault: FaultBank, Deliveries: 3, Spent: time.Minute, RetryAfter: time.Minute}, "the time spent at the bank"},
	{"the bank's answer is unknown (timeout, lost connection, 502/504, 409, 425 (an earlier try under the key still at work), the key reused with another body, an unreadable or incomplete 2xx), budget left", Facts{Fault: FaultBankUnknown, Deliveries: 1}, "the time spent at the bank; that an answer is unknown"},
	{"the budget (`CARDBRIDGE_RETRY_FOR`) is spent and some answer was unknown", Facts{Fault: FaultBank, Deliveries: 40, Spent: DefaultRetryFor, Unknown: true}, "inbox + `card.failed` + dead letter"},
	{"the budget is spent and every answer was a failure", Facts{Fault: FaultBank, Deliveries: 40, Spent: DefaultRetryFor}, "inbox + `card.failed` + dead letter"},
	{"an answer has been unknown for as long as the bank keeps keys (`CARDBRIDGE_BANK_KEY_RETENTION`)", Facts{Fault: FaultBank, Deliveries: 40, Spent: time.Hour, Unknown: true, UnknownFor: 24 * time.Hour}, "inbox + `card.failed` + dead letter"},
	{"the bank refused a try after an earlier try's answer was unknown", Facts{Fault: FaultRejected, Unknown: true}, "inbox + `card.failed` (+ bank code) + dead letter"},
	{"the user's token refused after a fresh one, 1st delivery", Facts{Fault: FaultReauth, Deliveries: 1}, "the time spent; the session is dropped"},
	{"same, a later delivery", Facts{Fault: FaultReauth, Deliveries: 2}, "the time spent; the session is dropped"},
	{"a fault of the deployment (see [Pausing](#when-the-deployment-is-at-fault-pausing))", Facts{Fault: FaultDeployment, Deliveries: 7}, "nothing; the process pauses"},
	{"our database or NATS failed, 2nd delivery", Facts{Fault: FaultInfra, Deliveries: 2}, "nothing"},
	{"same, 12th delivery (a long stall: the delay stops growing at 30s)", Facts{Fault: FaultInfra, Deliveries: 12}, "nothing"},
	{"card ordered, its commit failed", Facts{Fault: FaultUnrecorded}, "nothing yet: the commit is tried again"},
	{"same, three holds later", Facts{Fault: FaultUnrecorded, Holds: maxHolds, Deliveries: 1}, "nothing: the next delivery asks the bank again under the same key"},
	{"shutdown while in flight", Facts{Fault: FaultShutdown}, "nothing"},
	{"the failure cannot be stored (Postgres refuses a value in it), 1st delivery", Facts{Fault: FaultUnstorable, Deliveries: 1}, "nothing"},
	{"same, 3rd delivery", Facts{Fault: FaultUnstorable, Deliveries: 3}, "nothing: terminated, logged and counted (`cardbridge_messages_dropped_total`); the log names its stream sequence"},
}

func TestDecide(t *testing.T) {
	t.Parallel()
	p := Policy{RetryFor: DefaultRetryFor}
	want := []Decision{
		{Action: Ack},
		{Action: Ack},
		{Action: Ack},
		{Action: Ack},
		{Action: Retry, Delay: 2 * time.Second},
		{Action: Term, Fail: event.ReasonInvalidEvent},
		{Action: Term, Fail: event.ReasonSchemaInvalid},
		{Action: Term, Fail: event.ReasonUnboundSource},
		{Action: Term, Fail: event.ReasonBankRejected},
		{Action: Retry, Delay: 4 * time.Second},
		{Action: Retry, Delay: time.Minute},
		{Action: Retry, Delay: time.Second},
		{Action: Term, Fail: event.ReasonBankOutcomeUnknown},
		{Action: Term, Fail: event.ReasonRetriesExhausted},
		{Action: Term, Fail: event.ReasonBankOutcomeUnknown},
		{Action: Term, Fail: event.ReasonBankOutcomeUnknown},
		{Action: HandBack},
		{Action: Retry, Delay: 2 * time.Second},
		{Action: Pause, Delay: PauseHandBack},
		{Action: Retry, Delay: 2 * time.Second},
		{Action: Retry, Delay: MaxInfraDelay},
		{Action: Hold, Delay: time.Second},
		{Action: Retry, Delay: time.Second},
		{Action: HandBack},
		{Action: Retry, Delay: time.Second},
		{Action: Drop},
	}
	require.Len(t, want, len(decisionCases))
	for i, c := range decisionCases {
		require.Equal(t, want[i], p.Decide(c.facts), c.what)
	}

	// The budget is time, not deliveries: the hundredth delivery of a
	// request that has spent little time at the bank is retried.
	require.Equal(t, Retry, p.Decide(Facts{Fault: FaultBank, Deliveries: 100, Spent: time.Hour}).Action)
	require.Equal(t, 5*time.Minute, p.Decide(Facts{Fault: FaultBank, Deliveries: 100}).Delay, "the delay is capped")
	require.Equal(t, 5*time.Minute, p.Decide(Facts{Fault: FaultBank, Deliveries: 1, RetryAfter: time.Hour}).Delay, "so is Retry-After")
	// An unknown answer on the last delivery wins over definite ones before.
	require.Equal(t, event.ReasonBankOutcomeUnknown, p.Decide(Facts{Fault: FaultBankUnknown, Spent: DefaultRetryFor}).Fail)
	// Holds grow, then the message is handed back.
	require.Equal(t, Decision{Action: Hold, Delay: 4 * time.Second}, p.Decide(Facts{Fault: FaultUnrecorded, Holds: 2}))
	// The key's retention is given up a margin early: the next try could
	// reach the bank that much later.
	margined := Policy{RetryFor: DefaultRetryFor, KeyRetention: time.Hour, KeyMargin: 10 * time.Minute}
	require.Equal(t, Retry, margined.Decide(Facts{Fault: FaultBankUnknown, UnknownFor: 49 * time.Minute}).Action)
	require.Equal(t, Decision{Action: Term, Fail: event.ReasonBankOutcomeUnknown}, margined.Decide(Facts{Fault: FaultBank, Unknown: true, UnknownFor: 50 * time.Minute}))
	// A shorter budget gives up sooner.
	short := Policy{RetryFor: time.Second, MaxDelay: 100 * time.Millisecond}
	require.Equal(t, Term, short.Decide(Facts{Fault: FaultBank, Spent: time.Second}).Action)
	require.Equal(t, Decision{Action: Retry, Delay: 100 * time.Millisecond}, short.Decide(Facts{Fault: FaultBank, Deliveries: 5, Spent: time.Millisecond}))
}

// decisionTable renders decisionCases through Decide as the README shows
// them.
func decisionTable() string {
	p := Policy{RetryFor: DefaultRetryFor}
	var b strings.Builder
	b.WriteString("| what happened | committed | decision |\n|---|---|---|\n")
	for _, c := range decisionCases {
		fmt.Fprintf(&b, "| %s | %s | `%s` |\n", c.what, c.committed, p.Decide(c.facts))
	}
	return b.String()
}

// TestREADMEDecisionTable keeps the README's table equal to what Decide
// does; `go test ./consumer/decision -run READMEDecisionTable -update-readme`
// rewrites it.
func TestREADMEDecisionTable(t *testing.T) {
	t.Parallel()
	const begin, end = "<!-- decision table: generated by consumer/decision/decide_test.go -->\n", "<!-- end of decision table -->"
	raw, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	readme := string(raw)
	i, j := strings.Index(readme, begin), strings.Index(readme, end)
	require.True(t, i >= 0 && j > i, "the README has the decision table markers")
	want := decisionTable()
	if *updateREADME {
		readme = readme[:i+len(begin)] + want + readme[j:]
		require.NoError(t, os.WriteFile("../../README.md", []byte(readme), 0o644))
		return
	}
	require.Equal(t, want, readme[i+len(begin):j], "the README's decision table differs from Decide; run go test ./consumer/decision -run READMEDecisionTable -update-readme")
}

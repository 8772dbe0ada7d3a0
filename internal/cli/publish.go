package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/config"
)

func publishCmd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("publish", "publish [flags]\n\nPublish one employee.card.requested CloudEvent to JetStream, as an ERP would.", env)
	natsURL := natsURLFlag(fs, env)
	subject := fs.String("subject", env.getenvOr("CARDBRIDGE_REQUEST_SUBJECT", config.DefaultRequestSubject), "subject to publish on")
	mode := fs.String("mode", "binary", "CloudEvents mode: binary (ce-* headers) or structured (application/cloudevents+json)")
	var r event.Request
	fs.StringVar(&r.ID, "id", "", "CloudEvent id (default: a new UUID); (source, id) is the idempotency key")
	fs.StringVar(&r.Source, "source", "urn:erp:demo", "CloudEvent source: the ERP's identity")
	fs.StringVar(&r.Data.Employee.ID, "employee-id", "", "employee id, also the event subject (required)")
	fs.StringVar(&r.Data.Employee.FirstName, "first-name", "", "employee first name (required)")
	fs.StringVar(&r.Data.Employee.LastName, "last-name", "", "employee last name (required)")
	fs.StringVar(&r.Data.Employee.Email, "email", "", "employee email")
	fs.Int64Var(&r.Data.ClientID, "client-id", 0, "MBanq client id of the business customer (required)")
	fs.StringVar(&r.Data.Reference, "reference", "", "the ERP's own request number")
	fs.StringVar(&r.TraceParent, "traceparent", "", "W3C traceparent to attach")
	wait := fs.Duration("wait", 0, "wait this long for the outcome event and print it (0: do not wait)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if r.Data.Employee.ID == "" || r.Data.Employee.FirstName == "" || r.Data.Employee.LastName == "" || r.Data.ClientID <= 0 {
		return usagef("--employee-id, --first-name, --last-name and a positive --client-id are required")
	}
	m := event.Binary
	switch *mode {
	case "binary":
	case "structured":
		m = event.Structured
	default:
		return usagef("--mode must be binary or structured")
	}
	if r.ID == "" {
		r.ID = uuid.NewString()
	}
	r.Subject = r.Data.Employee.ID
	r.Time = time.Now().UTC()

	msg, err := event.EncodeRequest(r, m)
	if err != nil {
		return err
	}
	msg.Subject = *subject
	nc, js, err := connect(*natsURL, "publish")
	if err != nil {
		return err
	}
	defer nc.Close()
	var outcomes *nats.Subscription
	if *wait > 0 {
		// Subscribe before publishing so the outcome cannot slip past.
		if outcomes, err = nc.SubscribeSync("card.>"); err != nil {
			return err
		}
	}
	ack, err := js.PublishMsg(ctx, msg.NATS())
	if err != nil {
		return fmt.Errorf("publishing: %w", err)
	}
	fmt.Fprintf(env.Stdout, "published %s id=%s source=%s (stream %s, seq %d)\n", event.TypeCardRequested, printable(r.ID), printable(r.Source), printable(ack.Stream), ack.Sequence)
	if outcomes == nil {
		return nil
	}
	out, err := awaitOutcome(ctx, outcomes, event.OutcomeID(r.Source, r.ID), *wait)
	if err != nil {
		return err
	}
	return printOutcome(env, out)
}

// awaitOutcome waits for the outcome event with id on sub.
func awaitOutcome(ctx context.Context, sub *nats.Subscription, id string, timeout time.Duration) (event.Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return event.Outcome{}, fmt.Errorf("waiting for the outcome %s: %w", id, err)
		}
		out, err := event.DecodeOutcome(m.Header, m.Data)
		if err == nil && out.ID == id {
			return out, nil
		}
	}
}

// printOutcome prints an outcome event as indented JSON. JSON escapes C0
// controls but not DEL, C1 controls or format characters, which the
// request's own values (its id, source, employee) may hold: the compact
// document goes through printable, whose escapes are JSON's, before it is
// indented.
func printOutcome(env Env, out event.Outcome) error {
	b, err := json.Marshal(map[string]any{
		"type": out.Type, "id": out.ID, "source": out.Source, "subject": out.Subject,
		"time": out.Time, "data": out.Data,
	})
	if err != nil {
		return err
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, []byte(printable(string(b))), "", "  "); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s\n", indented.Bytes())
	return nil
}

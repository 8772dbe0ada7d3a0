package observe

import (
	"time"

	"github.com/cardbridge/cardbridge/relay"
)

// Relay returns the outbox relay's Observer.
func (t *Telemetry) Relay() relay.Observer { return relayObserver{t} }

type relayObserver struct{ t *Telemetry }

func (o relayObserver) Published(events, acked int, elapsed time.Duration, _ error) {
	m := o.t.m
	m.relayDuration.Observe(seconds(elapsed))
	m.relayEvents.WithLabelValues("published").Add(float64(acked))
	if failed := events - acked; failed > 0 {
		m.relayEvents.WithLabelValues("failed").Add(float64(failed))
	}
}

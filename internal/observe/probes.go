package observe

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Probes are checks of the process's surroundings, run at each scrape.
type Probes struct {
	// Ready runs the checks of /readyz: check name -> ok.
	Ready func(ctx context.Context) map[string]bool
	// Consumer reports the durable consumer's messages not yet delivered
	// and those delivered but not yet acknowledged.
	Consumer func(ctx context.Context) (pending uint64, ackPending int, err error)
}

// WatchProbes exports the probes as cardbridge_ready{check} and the
// consumer's backlog, so that Prometheus alerts on readiness and lag
// without a separate prober.
func (t *Telemetry) WatchProbes(p Probes) error {
	return t.Register(&probeCollector{p: p, log: t.log})
}

var (
	descReady = prometheus.NewDesc("cardbridge_ready",
		"1 when the /readyz check passes (postgres: reachable and migrated; nats: connected; jetstream: the streams answer with a leader; consumer: not paused by a fault of the deployment), 0 when not.", []string{"check"}, nil)
	descPending = prometheus.NewDesc("cardbridge_consumer_pending",
		"Request messages in the stream not yet delivered to any cardbridge process (the consumer's lag).", nil, nil)
	descAckPending = prometheus.NewDesc("cardbridge_consumer_ack_pending",
		"Request messages delivered and not yet acknowledged: being handled, or waiting for a retry.", nil, nil)
)

type probeCollector struct {
	p   Probes
	log *slog.Logger
}

func (c *probeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReady
	ch <- descPending
	ch <- descAckPending
}

func (c *probeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if c.p.Ready != nil {
		checks := c.p.Ready(ctx)
		names := make([]string, 0, len(checks))
		for n := range checks {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			v := 0.0
			if checks[n] {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, v, n)
		}
	}
	if c.p.Consumer != nil {
		pending, ackPending, err := c.p.Consumer(ctx)
		if err != nil {
			// No value rather than a wrong one; cardbridge_ready says why.
			c.log.Warn("reading the consumer's backlog for metrics", "err", err)
			return
		}
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(pending))
		ch <- prometheus.MustNewConstMetric(descAckPending, prometheus.GaugeValue, float64(ackPending))
	}
}

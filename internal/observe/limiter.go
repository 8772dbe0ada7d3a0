package observe

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardbridge/cardbridge/mbanq"
)

// WatchLimiter implements mbanq's optional limiter observer: the state of
// the client's adaptive limiter is read at each scrape.
func (o bankObserver) WatchLimiter(state func() mbanq.LimiterState) {
	o.t.m.limiter.state.Store(&state)
}

// limiterCollector exports the bank client's adaptive limiter; nothing
// until a client is watched.
type limiterCollector struct {
	state atomic.Pointer[func() mbanq.LimiterState]

	rate, limit, inFlight, waiting, pause, cuts *prometheus.Desc
}

func newLimiterCollector() *limiterCollector {
	return &limiterCollector{
		rate: prometheus.NewDesc("cardbridge_mbanq_limiter_rate",
			"Calls per second the adaptive limiter lets start at MBanq; +Inf until the bank first refused a call for load.", nil, nil),
		limit: prometheus.NewDesc("cardbridge_mbanq_limiter_concurrency",
			"Calls the adaptive limiter lets be in flight at MBanq at once.", nil, nil),
		inFlight: prometheus.NewDesc("cardbridge_mbanq_limiter_in_flight",
			"Calls in flight at MBanq now.", nil, nil),
		waiting: prometheus.NewDesc("cardbridge_mbanq_limiter_waiting",
			"Calls waiting for the adaptive limiter to let them start.", nil, nil),
		pause: prometheus.NewDesc("cardbridge_mbanq_limiter_pause_seconds",
			"What is left of a pause MBanq asked for (Retry-After); no call starts meanwhile.", nil, nil),
		cuts: prometheus.NewDesc("cardbridge_mbanq_limiter_cuts_total",
			"Times the adaptive limiter lowered its rate or concurrency (the bank refused calls for load, failed, or slowed down).", nil, nil),
	}
}

func (c *limiterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rate, c.limit, c.inFlight, c.waiting, c.pause, c.cuts} {
		ch <- d
	}
}

func (c *limiterCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.state.Load()
	if f == nil {
		return
	}
	s := (*f)()
	ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, s.Rate)
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(s.Limit))
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(s.InFlight))
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(s.Waiting))
	ch <- prometheus.MustNewConstMetric(c.pause, prometheus.GaugeValue, s.Paused.Seconds())
	ch <- prometheus.MustNewConstMetric(c.cuts, prometheus.CounterValue, float64(s.Cuts))
}

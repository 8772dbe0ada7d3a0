package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/cardbridge/cardbridge/consumer/decision"
	"github.com/cardbridge/cardbridge/mbanq"
)

// A fault of the deployment (FaultDeployment) is no fault of the request:
// failing the backlog for it would turn an operator's typo into thousands
// of card.failed. Instead the process pauses: it stops fetching, hands back
// what it holds, says so on /readyz and in a metric, and probes until the
// fault clears, then resumes by itself.

// PauseState says whether the consumer is paused, and why.
type PauseState struct {
	Paused bool
	// Code is a stable name of the fault (mbanq.Fault* or the
	// decision.Fault* codes); Message says more, for operators.
	Code, Message string
	Since         time.Time
	// probe checks whether the fault cleared; nil when only a request can
	// tell.
	probe func(context.Context) error
}

// gate holds the pause state. Handlers pause it; Run waits on it.
type gate struct {
	mu      sync.Mutex
	state   PauseState
	resumed chan struct{} // closed when a pause ends; nil while running
	// stopFetch stops the current fetch (set by Run).
	stopFetch func()
	// observe is told of every change (Observer.Paused), under the lock so
	// that two changes cannot be told in the wrong order.
	observe func(code string)
	// The last pause, so that a fault that comes back at once is probed
	// less and less often rather than every ProbeInterval.
	lastCode     string
	lastInterval time.Duration
	lastResume   time.Time
}

// pause pauses the gate for code, unless it is paused already. It reports
// whether this call paused it.
func (g *gate) pause(code, message string, probe func(context.Context) error) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state.Paused {
		return false
	}
	g.state = PauseState{Paused: true, Code: code, Message: message, Since: time.Now(), probe: probe}
	g.resumed = make(chan struct{})
	if g.observe != nil {
		g.observe(code)
	}
	if g.stopFetch != nil {
		g.stopFetch()
	}
	return true
}

// resume ends a pause that waited interval before its last probe.
func (g *gate) resume(interval time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.state.Paused {
		return
	}
	g.lastCode, g.lastInterval, g.lastResume = g.state.Code, interval, time.Now()
	g.state = PauseState{}
	close(g.resumed)
	g.resumed = nil
	if g.observe != nil {
		g.observe("")
	}
}

// firstInterval is the wait before the first probe of the pause for code:
// first, or twice the last one when the same fault paused the process
// again soon after it resumed.
func (g *gate) firstInterval(code string, first time.Duration) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if code == g.lastCode && time.Since(g.lastResume) < 2*maxProbe {
		return min(2*g.lastInterval, maxProbe)
	}
	return first
}

func (g *gate) get() PauseState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

func (g *gate) paused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state.Paused
}

// fetching registers how to stop the current fetch; nil when none runs.
// When the gate is paused already, stop is called at once.
func (g *gate) fetching(stop func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopFetch = stop
	if stop != nil && g.state.Paused {
		stop()
	}
}

// Paused returns the consumer's pause state.
func (c *Consumer) Paused() PauseState { return c.gate.get() }

// pause pauses the process for a fault of the deployment met while
// handling a request for clientID. The first handler to meet the fault
// pauses it and logs once; the others, meeting the same fault, hand their
// messages back quietly.
func (c *Consumer) pause(code, message string, clientID int64) {
	if !c.gate.pause(code, message, c.probeFor(code, clientID)) {
		return
	}
	c.log.Error("consumer paused: a fault of the deployment, not of the requests; nothing is failed, messages are handed back and the fault is probed until it clears",
		"fault", code, "detail", message)
}

// Probe intervals: the first probe comes soon, in case the fault was a
// blip; then less often, so a long outage costs the bank little.
const (
	firstProbe = time.Second
	maxProbe   = 30 * time.Second
)

// waitForResume probes the fault of a paused process until it clears (or
// ctx ends), then resumes.
func (c *Consumer) waitForResume(ctx context.Context) {
	interval := c.gate.firstInterval(c.gate.get().Code, c.cfg.ProbeInterval)
	for {
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		st := c.gate.get()
		if !st.Paused {
			return
		}
		err := error(nil)
		if st.probe != nil {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = st.probe(pctx)
			cancel()
		}
		if err == nil {
			c.gate.resume(interval)
			c.log.Info("consumer resumed: the fault of the deployment cleared, or is to be tried again", "fault", st.Code,
				"probed", st.probe != nil, "paused_for", time.Since(st.Since).Round(time.Millisecond))
			return
		}
		c.log.Debug("consumer still paused", "fault", st.Code, "probe", err)
		interval = min(2*interval, maxProbe)
	}
}

// probeFor returns how to check whether the fault named code has cleared.
// Faults of the bank's side are checked with a fresh admin login, which
// needs the tenant, the OAuth client, the admin's credentials and a
// trusted, reachable bank; a missing role by looking for it again; a secret
// key by opening the password it could not open. Others (a permission, a
// refused user creation) cannot be checked without doing the work: it
// returns nil, and the process resumes after the wait and lets the next
// request tell, pausing again if the fault is still there.
func (c *Consumer) probeFor(code string, clientID int64) func(context.Context) error {
	switch code {
	case mbanq.FaultInvalidTenant, mbanq.FaultOAuthClient, mbanq.FaultUnreachable, mbanq.FaultTLS,
		mbanq.FaultRedirect, decision.FaultAdminLogin:
		return c.users.admin.Login
	case decision.FaultSelfServiceRole:
		return func(ctx context.Context) error {
			_, err := c.users.selfServiceRole(ctx)
			return err
		}
	case decision.FaultSecretKey:
		return func(ctx context.Context) error { return c.users.openPassword(ctx, clientID) }
	}
	return nil
}

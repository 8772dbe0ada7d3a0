package app_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// A NATS server that stops answering without closing the connection (a
// host lost, a network that drops every packet; here a toxiproxy timeout
// toxic between cardbridge and NATS) is noticed within seconds, so that
// the client goes to another server of the cluster, rather than after the
// client's default ping interval (two minutes, twice), during which the
// process takes and publishes nothing.
func TestUnansweringNATSServerIsNoticedWithinSeconds(t *testing.T) {
	s := newStack(t, nil)
	u, err := url.Parse(s.ns.URL())
	require.NoError(t, err)
	proxy := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		"nats", "127.0.0.1:0", u.Host)
	require.NoError(t, proxy.Start())
	t.Cleanup(proxy.Stop)
	u.Host = proxy.Listen
	cfg := s.cfg
	cfg.NATSURL = u.String()
	p := s.start(t, cfg)
	s.bind(t, p.svc.Store(), 1)
	s.publish(t, 3)
	s.waitOutcomes(t, 3)
	status, checks := p.readyz(t)
	require.Equal(t, 200, status, "%v", checks)

	// Every byte between cardbridge and NATS is held from now on; no
	// connection is closed.
	for _, stream := range []string{"upstream", "downstream"} {
		_, err = proxy.Toxics.AddToxicJson(strings.NewReader(
			`{"name":"blackhole-` + stream + `","type":"timeout","stream":"` + stream + `","attributes":{"timeout":0}}`))
		require.NoError(t, err)
	}
	cut := time.Now()
	require.Eventually(t, func() bool {
		_, checks := p.readyz(t)
		return checks["nats"] != "ok"
	}, 40*time.Second, 100*time.Millisecond, "the connection to a server that does not answer is given up")
	t.Logf("noticed %s after the server stopped answering", time.Since(cut).Round(100*time.Millisecond))

	for _, stream := range []string{"upstream", "downstream"} {
		require.NoError(t, proxy.Toxics.RemoveToxic(context.Background(), "blackhole-"+stream))
	}
	require.Eventually(t, func() bool {
		status, _ := p.readyz(t)
		return status == 200
	}, 30*time.Second, 100*time.Millisecond, "reconnected once the network heals")
	s.publish(t, 2)
	s.waitOutcomes(t, 5)
}

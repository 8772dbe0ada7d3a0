package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/broker"
)

func TestEnsureRefusesAnInvalidTopologyNamingTheField(t *testing.T) {
	t.Parallel()
	with := func(mod func(*broker.Topology)) broker.Topology {
		top := broker.DefaultTopology()
		mod(&top)
		return top
	}
	for _, tc := range []struct {
		name string
		top  broker.Topology
		want string
	}{
		{"RequestStream", with(func(t *broker.Topology) { t.RequestStream = "" }), "broker: Topology.RequestStream is empty; set it, or start from DefaultTopology()"},
		{"RequestSubject", with(func(t *broker.Topology) { t.RequestSubject = "" }), "broker: Topology.RequestSubject is empty; set it, or start from DefaultTopology()"},
		{"OutcomeStream", with(func(t *broker.Topology) { t.OutcomeStream = "" }), "broker: Topology.OutcomeStream is empty; set it, or start from DefaultTopology()"},
		{"Consumer", with(func(t *broker.Topology) { t.Consumer = "" }), "broker: Topology.Consumer is empty; set it, or start from DefaultTopology()"},
		{"OutcomeSubjects", with(func(t *broker.Topology) { t.OutcomeSubjects = nil }), "broker: Topology.RequestSubjects and OutcomeSubjects must each name a subject; start from DefaultTopology()"},
		{"AckWait", with(func(t *broker.Topology) { t.AckWait = -time.Second }), "broker: Topology.AckWait -1s must not be negative"},
		{"MaxAckPending", with(func(t *broker.Topology) { t.MaxAckPending = -1 }), "broker: Topology.MaxAckPending -1 must not be negative"},
		{"RequestMaxBytes", with(func(t *broker.Topology) { t.RequestMaxBytes = -1 }), "broker: Topology.RequestMaxBytes -1 must not be negative"},
		{"OutcomeMaxAge", with(func(t *broker.Topology) { t.OutcomeMaxAge = -time.Hour }), "broker: Topology.OutcomeMaxAge -1h0m0s must not be negative"},
		{"Replicas", with(func(t *broker.Topology) { t.Replicas = 6 }), "broker: Topology.Replicas 6 must be from 1 to 5, or 0 for what the deployment can give"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The topology is checked before JetStream is asked anything.
			cons, err := broker.Ensure(context.Background(), nil, tc.top)
			require.EqualError(t, err, tc.want)
			require.Nil(t, cons)
		})
	}
}

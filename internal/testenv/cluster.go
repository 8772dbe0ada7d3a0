package testenv

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cardbridge/cardbridge/broker"
)

// NATSCluster is a cluster of embedded JetStream servers, in this process,
// each with a store of its own, joined by routes on the loopback. Servers
// can be killed (Kill) and started again on the same ports and store
// (Restart), for fault tests.
type NATSCluster struct {
	t     testing.TB
	name  string
	mu    sync.Mutex
	nodes []*natsNode
}

type natsNode struct {
	name        string
	dir         string
	clientPort  int
	clusterPort int
	srv         *broker.Embedded // nil while down
}

// StartNATSCluster starts a JetStream cluster of n servers (n >= 2) for
// this test, named n1...nN, and waits until they have elected a meta
// leader that sees them all. The servers are stopped when the test ends.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	if n < 2 {
		t.Fatalf("testenv: a NATS cluster needs 2 servers or more, not %d (use NATS for one)", n)
	}
	c := &NATSCluster{t: t, name: "cb-" + randomHex(4)}
	t.Cleanup(c.stopAll)
	for i := 1; i <= n; i++ {
		node := &natsNode{name: fmt.Sprintf("n%d", i), dir: t.TempDir()}
		c.nodes = append(c.nodes, node)
		if err := c.start(node); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	c.WaitForMetaLeader()
	return c
}

// start starts node on its ports (free ones the first time), with routes
// to every other server of the cluster.
func (c *NATSCluster) start(node *natsNode) error {
	var routes []string
	for _, o := range c.nodes {
		if o != node && o.clusterPort != 0 {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.clusterPort))
		}
	}
	clientPort := node.clientPort
	srv, err := broker.StartEmbeddedWith(node.dir, clientPort, func(o *server.Options) {
		o.ServerName = node.name
		o.Cluster.Name = c.name
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = node.clusterPort
		if node.clusterPort == 0 {
			o.Cluster.Port = server.RANDOM_PORT
		}
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
	})
	if err != nil {
		return fmt.Errorf("starting NATS server %s: %w", node.name, err)
	}
	node.srv = srv
	node.clientPort = srv.Addr().(*net.TCPAddr).Port
	if node.clusterPort == 0 {
		node.clusterPort = srv.ClusterAddr().Port
	}
	return nil
}

// URL lists the client URLs of every server, for nats.Connect: a client
// moves to another server when its own goes.
func (c *NATSCluster) URL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := make([]string, 0, len(c.nodes))
	for _, n := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort))
	}
	return strings.Join(urls, ",")
}

// Names are the servers' names, n1...nN.
func (c *NATSCluster) Names() []string {
	names := make([]string, 0, len(c.nodes))
	for _, n := range c.nodes {
		names = append(names, n.name)
	}
	return names
}

// Server is the running server called name, or nil while it is down.
func (c *NATSCluster) Server(name string) *broker.Embedded {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.node(name); n.srv != nil {
		return n.srv
	}
	return nil
}

func (c *NATSCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("testenv: no NATS server %q in the cluster", name)
	return nil
}

// Kill shuts the server called name down, abruptly for its clients and
// peers (connections closed, no leadership handed over), and waits until
// it is down.
func (c *NATSCluster) Kill(name string) {
	c.t.Helper()
	c.mu.Lock()
	n := c.node(name)
	srv := n.srv
	n.srv = nil
	c.mu.Unlock()
	if srv == nil {
		c.t.Fatalf("testenv: NATS server %s is already down", name)
	}
	srv.Stop()
}

// Restart starts the server called name again, on its ports and store.
func (c *NATSCluster) Restart(name string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(name)
	if n.srv != nil {
		c.t.Fatalf("testenv: NATS server %s is running", name)
	}
	if err := c.start(n); err != nil {
		c.t.Fatalf("testenv: %v", err)
	}
}

// WaitForMetaLeader waits until one running server leads the cluster's
// JetStream metadata and sees every running server as a peer.
func (c *NATSCluster) WaitForMetaLeader() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		running, ok := 0, false
		for _, n := range c.nodes {
			if n.srv != nil {
				running++
			}
		}
		for _, n := range c.nodes {
			if n.srv != nil && n.srv.JetStreamIsLeader() && len(n.srv.JetStreamClusterPeers()) == running {
				ok = true
			}
		}
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testenv: the NATS cluster elected no JetStream meta leader within 30s")
		}
		<-tick.C
	}
}

func (c *NATSCluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.srv != nil {
			n.srv.Stop()
			n.srv = nil
		}
	}
}

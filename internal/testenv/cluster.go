package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// NATSCluster is a cluster of JetStream servers, each a nats-server
// process (built from the module's own nats-server version) with a store
// of its own, joined by routes on the loopback. Kill is a real crash
// (SIGKILL): unlike an in-process Shutdown, which hands every leadership
// over to a peer first, it leaves the cluster to notice and elect, as a
// lost node does. Restart starts the server again on its ports and store.
type NATSCluster struct {
	t     testing.TB
	name  string
	bin   string
	mu    sync.Mutex
	nodes []*natsNode
}

type natsNode struct {
	name                     string
	dir                      string // store, ports file and log
	client, cluster, monitor int    // ports; 0 until first started
	cmd                      *exec.Cmd
	exited                   chan struct{}
	logFile                  *os.File
}

var (
	natsBinOnce sync.Once
	natsBinPath string
	natsBinErr  error
	natsBinOut  []byte
)

// natsServerBinary builds nats-server, at the version go.mod requires,
// once per test process.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	natsBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cardbridge-nats-server-")
		if err != nil {
			natsBinErr = err
			return
		}
		natsBinPath = filepath.Join(dir, "nats-server")
		cmd := exec.Command("go", "build", "-o", natsBinPath, "github.com/nats-io/nats-server/v2")
		natsBinOut, natsBinErr = cmd.CombinedOutput()
	})
	if natsBinErr != nil {
		t.Fatalf("testenv: building nats-server: %v\n%s", natsBinErr, natsBinOut)
	}
	return natsBinPath
}

// StartNATSCluster starts a JetStream cluster of n servers (n >= 2) for
// this test, named n1...nN, and waits until they have elected a meta
// leader that sees them all. The servers are killed when the test ends.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	if n < 2 {
		t.Fatalf("testenv: a NATS cluster needs 2 servers or more, not %d (use NATS for one)", n)
	}
	c := &NATSCluster{t: t, name: "cb-" + randomHex(4), bin: natsServerBinary(t)}
	t.Cleanup(c.killAll)
	// JetStream in a cluster needs routes from the start, so each server
	// is told every other's route port: free ones, found in advance. A
	// port found free can be taken by another process before its server
	// binds it; then the whole cluster starts again on other ports.
	for attempt := 1; ; attempt++ {
		err := c.startAll(n)
		if err == nil {
			break
		}
		c.killAll()
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("testenv: %v", err)
		}
	}
	c.WaitForMetaLeader()
	return c
}

// startAll starts n servers on route ports found free now.
func (c *NATSCluster) startAll(n int) error {
	c.nodes = nil
	for i := 1; i <= n; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, &natsNode{name: fmt.Sprintf("n%d", i), dir: c.t.TempDir(), cluster: port})
	}
	for _, node := range c.nodes {
		if err := c.start(node); err != nil {
			return err
		}
	}
	return nil
}

// start starts node's process, on its ports (free ones for the client
// and monitoring the first time), with routes to every other server of the
// cluster, and waits until it listens.
func (c *NATSCluster) start(node *natsNode) error {
	var routes []string
	for _, o := range c.nodes {
		if o != node && o.cluster != 0 {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.cluster))
		}
	}
	port := func(p int) string {
		if p == 0 {
			return "-1"
		}
		return strconv.Itoa(p)
	}
	ports := filepath.Join(node.dir, "ports")
	_ = os.RemoveAll(ports)
	if err := os.MkdirAll(ports, 0o755); err != nil {
		return err
	}
	args := []string{
		"--server_name", node.name, "-a", "127.0.0.1", "-p", port(node.client), "-m", port(node.monitor),
		"-js", "-sd", filepath.Join(node.dir, "store"),
		"--cluster_name", c.name, "--cluster", "nats://127.0.0.1:" + port(node.cluster),
		"--ports_file_dir", ports,
	}
	if len(routes) > 0 {
		args = append(args, "--routes", strings.Join(routes, ","))
	}
	logFile, err := os.OpenFile(filepath.Join(node.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting nats-server %s: %w", node.name, err)
	}
	node.cmd, node.logFile, node.exited = cmd, logFile, make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(node.exited)

	// The ports file says where it listens, once it does.
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if p, ok := readPorts(ports); ok {
			node.client, node.cluster, node.monitor = p.client, p.cluster, p.monitor
			return nil
		}
		select {
		case <-node.exited:
			return fmt.Errorf("nats-server %s exited at start; its log:\n%s", node.name, tail(filepath.Join(node.dir, "server.log")))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server %s did not listen within 30s; its log:\n%s", node.name, tail(filepath.Join(node.dir, "server.log")))
		}
	}
}

// freePort is a port nothing listens on now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

type listenPorts struct{ client, cluster, monitor int }

func readPorts(dir string) (listenPorts, bool) {
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		return listenPorts{}, false
	}
	b, err := os.ReadFile(filepath.Join(dir, entries[0].Name()))
	if err != nil {
		return listenPorts{}, false
	}
	var p struct{ Nats, Monitoring, Cluster []string }
	if json.Unmarshal(b, &p) != nil || len(p.Nats) == 0 || len(p.Cluster) == 0 || len(p.Monitoring) == 0 {
		return listenPorts{}, false
	}
	portOf := func(u string) int {
		n, _ := strconv.Atoi(u[strings.LastIndex(u, ":")+1:])
		return n
	}
	return listenPorts{client: portOf(p.Nats[0]), cluster: portOf(p.Cluster[0]), monitor: portOf(p.Monitoring[0])}, true
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// URL lists the client URLs of every server, for nats.Connect: a client
// moves to another server when its own goes.
func (c *NATSCluster) URL() string { return c.URLOf(c.Names()...) }

// URLOf lists the client URLs of the named servers.
func (c *NATSCluster) URLOf(names ...string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := make([]string, 0, len(names))
	for _, name := range names {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", c.node(name).client))
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

func (c *NATSCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("testenv: no NATS server %q in the cluster", name)
	return nil
}

// Kill crashes the server called name (SIGKILL) and waits until its
// process is gone.
func (c *NATSCluster) Kill(name string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(name)
	if n.cmd == nil {
		c.t.Fatalf("testenv: NATS server %s is already down", name)
	}
	c.kill(n)
}

func (c *NATSCluster) kill(n *natsNode) {
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.logFile.Close()
	n.cmd = nil
}

// Restart starts the server called name again, on its ports and store.
func (c *NATSCluster) Restart(name string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(name)
	if n.cmd != nil {
		c.t.Fatalf("testenv: NATS server %s is running", name)
	}
	if err := c.start(n); err != nil {
		c.t.Fatalf("testenv: %v", err)
	}
}

// WaitForMetaLeader waits until a running server leads the cluster's
// JetStream metadata and has every other running server as a current
// peer (read from the servers' monitoring endpoint, /jsz).
func (c *NATSCluster) WaitForMetaLeader() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.metaReady() {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testenv: the NATS cluster elected no JetStream meta leader seeing every running server within 60s")
		}
		<-tick.C
	}
}

func (c *NATSCluster) metaReady() bool {
	c.mu.Lock()
	running := map[string]int{} // name -> monitoring port
	for _, n := range c.nodes {
		if n.cmd != nil {
			running[n.name] = n.monitor
		}
	}
	c.mu.Unlock()
	for name, port := range running {
		var jsz struct {
			Meta *struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Name    string `json:"name"`
					Current bool   `json:"current"`
					Offline bool   `json:"offline"`
				} `json:"replicas"`
			} `json:"meta_cluster"`
		}
		if !getJSON(fmt.Sprintf("http://127.0.0.1:%d/jsz", port), &jsz) || jsz.Meta == nil || jsz.Meta.Leader != name {
			continue
		}
		seen := 1
		for _, p := range jsz.Meta.Replicas {
			if _, ok := running[p.Name]; ok && p.Current && !p.Offline {
				seen++
			}
		}
		return seen == len(running)
	}
	return false
}

func getJSON(url string, v any) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
}

func (c *NATSCluster) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.cmd != nil {
			c.kill(n)
		}
	}
}

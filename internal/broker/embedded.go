package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is an in-process NATS server with JetStream.
type Embedded struct {
	*server.Server
}

// StartEmbedded starts a NATS server with JetStream storing under dir. port
// 0 picks a free port; -1 would disable the listener, which the tests do
// not want since they connect over TCP like production.
func StartEmbedded(dir string, port int) (*Embedded, error) {
	return StartEmbeddedWith(dir, port, nil)
}

// StartEmbeddedWith is StartEmbedded with options adjusted by configure
// (users and permissions, say) before the server starts.
func StartEmbeddedWith(dir string, port int, configure func(*server.Options)) (*Embedded, error) {
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	}
	if port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	if configure != nil {
		configure(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("starting embedded NATS: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("starting embedded NATS: not ready after 10s")
	}
	return &Embedded{Server: s}, nil
}

// URL is the address clients connect to.
func (e *Embedded) URL() string { return e.ClientURL() }

// Stop shuts the server down and waits for it.
func (e *Embedded) Stop() {
	e.Shutdown()
	e.WaitForShutdown()
}

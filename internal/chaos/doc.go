// Package chaos holds cardbridge's crash test, TestChaos. It has only
// tests.
//
// It runs cardbridge as in production, with default settings (no raised
// delivery limit, the default AckWait): two `cardbridge run` processes; a
// three-node NATS JetStream cluster, each node a process of its own
// (testenv.StartNATSCluster), with the R3 streams cardbridge creates
// there (asserted); Postgres reached only
// through toxiproxy, in-process; and the sandbox bank over real HTTP
// listeners (one per process, so the test knows whose orders are at the
// bank), answering in 200-500 ms with 2% 5xx and 2% lost answers, and a tenant rate limit of 150 calls a second (429 past it).
// Requests are published at a steady rate throughout, as an ERP would
// (retried under their Nats-Msg-Id until acknowledged). In turn:
//
//   - SIGKILL of a process while card orders of its own are at the bank
//     (asserted: orders in flight before the signal still in flight once
//     the process is gone), and an immediate restart;
//   - SIGTERM of a process with orders at the bank: it must exit 0 within
//     the documented grace (15 s, app.ShutdownGrace) plus 5 s;
//   - SIGKILL of the NATS node leading the ERP stream (then CARDS, in
//     turn), restarted after a pause; a new leader must be elected while it
//     is down;
//   - Postgres stalled (no byte through, connections open): /readyz of
//     every process must answer 503, and a process sent SIGTERM meanwhile
//     must still exit 0 within the grace;
//   - Postgres stopped (connections cut, new ones refused) and started;
//   - the bank gone (connections cut, new ones refused) for over a minute,
//     and back on the same ports with its state.
//
// After each fault it measures, from the fault's end, when the requests
// waiting then were answered (first and last), and the longest time with no
// outcome at all. It asserts:
//
//   - every waiting request answered within the fault's bound after its end
//     (flags chaos.bound-*: SIGKILL 20 s, SIGTERM 20 s, NATS 30 s,
//     Postgres 30 s, bank 45 s: generous, for a shared 2-core machine with
//     the race detector);
//   - with a NATS node down, no time without an outcome longer than 20 s
//     (the election and the relay's resumption);
//   - no request held past its bounds: each answered within 25 s of its
//     publication (chaos.bound-normal), a deadline each fault that began
//     while it waited extends to that fault's end plus its bound;
//   - /readyz 503 within 15 s of a database fault's start;
//   - at the end: every request answered, nothing pending or unacknowledged
//     on the consumer, each process exiting 0 on SIGTERM, exactly one
//     outcome per request on CARDS (read back from the stream) and none
//     besides, one card per issued request at the bank and each card an
//     outcome names existing, one self-service user per client.
//
// The default size is CI's (`go test -race ./...`, about three and a half
// minutes, a minute of it the bank's outage). A long run:
//
//	go test -race -count=1 -run TestChaos ./internal/chaos/ -v -timeout 60m \
//	    -chaos.rounds 5 -chaos.kills 30 -chaos.sigterms 2 -chaos.nats-kills 2 \
//	    -chaos.rate 60 -chaos.requests 20000 -chaos.bank-outage 90s \
//	    -chaos.pg-stall 30s -chaos.pg-stop 15s -chaos.settle 5m
//
// Flags: chaos.rate (requests/s while the faults run), chaos.requests (at
// least this many in all; the rest are published at once after the
// faults), chaos.processes, chaos.rounds (times the sequence of faults
// runs), chaos.kills (in all, spread over the rounds), chaos.sigterms and
// chaos.nats-kills (per round), chaos.nats-pause, chaos.pg-stall,
// chaos.pg-stop, chaos.bank-outage (0 skips a fault), chaos.settle, the
// bounds chaos.bound-normal, -kill, -sigterm, -nats, -nats-gap, -pg, -bank,
// -ready, and chaos.env (NAME=value,... for the processes, to compare a
// setting with the defaults; CI runs the defaults). For example, the
// bank's outage alone, with and without the adaptive limiter:
//
//	go test -race -count=1 -run TestChaos ./internal/chaos/ -v -chaos.kills 0 \
//	    -chaos.sigterms 0 -chaos.nats-kills 0 -chaos.pg-stall 0 -chaos.pg-stop 0 \
//	    [-chaos.env MBANQ_ADAPTIVE_LIMIT=false]
package chaos

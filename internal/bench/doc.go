// Package bench is cardbridge's end-to-end load generator and benchmark,
// the logic behind `cardbridge bench`.
//
// It publishes employee.card.requested events to JetStream, as an ERP
// would, watches card.> for their outcomes, and measures what a user of the
// service sees: each request's latency from publish to outcome, the
// sustained throughput, and whether every request got exactly one outcome.
// It either drives an existing deployment (it then only publishes and
// subscribes) or starts a stack of its own: an embedded NATS server, the
// MBanq sandbox and one or more `cardbridge run` processes, each in its own
// OS process so that their memory and CPU can be told apart, as on a
// user's single box.
//
// Figures from one run are only comparable with figures from the same
// machine; the --baseline measurement (one bare Postgres commit per
// request, on the same server, in the same run) gives the yardstick that
// survives the move to another machine: the ratio.
package bench

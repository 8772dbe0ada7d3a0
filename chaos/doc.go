// Package chaos holds cardbridge's crash test: thousands of requests while
// cardbridge processes are killed and restarted, the bank misbehaves, the
// database connections are cut and the NATS server restarts. It has only
// tests; see chaos_test.go for the flags of a longer run.
package chaos

// Package sandbox is a stand-in for the MBanq API, faithful enough that a
// client pointed at it behaves as against the real bank: same paths,
// headers, bodies, status codes and Fineract error format. It serves
// POST /oauth/token, GET /v1/userdetails, GET /v1/roles, POST/GET/PUT
// /v1/users, GET /v1/clients/{id}, GET /v1/cardproducts[/{id}], POST
// /v1/cards and GET /v1/cards/{id}.
//
// A Server is an http.Handler built from a Seed (tenant, OAuth client, admin
// user, offices, roles, clients, deposit accounts, card products):
//
//	srv := httptest.NewServer(sandbox.New(sandbox.DefaultSeed()))
//
// It enforces what the real API enforces and a client could get wrong: the
// tenantId header, bearer tokens and their expiry, admin-only operations, the
// data scope of self-service users, Fineract's validation of users, and
// Idempotency-Key replays on POST.
//
// Faults can be injected at start (WithFaults) or while running (SetFaults,
// or GET/PUT /_sandbox/faults): latency with jitter, 5xx and 429 answers,
// token lifetimes and forced expiry, lost responses (the resource is
// created, then the connection is dropped before the answer) and garbled
// responses (the resource is created, then answered 200 with a body that
// does not carry it).
//
// Everything under /_sandbox/ (faults, token expiry, a card product's
// active flag, inspection of users, cards and counters) exists only in the sandbox and needs neither tenant
// nor token: never expose a sandbox where the real API is expected.
//
// The Server is safe for concurrent use and keeps no global lock on the hot
// path of ordering a card.
package sandbox

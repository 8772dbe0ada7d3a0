// Package migrations embeds cardbridge's goose SQL migrations in the binary,
// so `cardbridge migrate` and `cardbridge run` always carry the schema they
// were built for.
package migrations

import "embed"

// FS holds the migrations, named NNNNN_subject.sql.
//
//go:embed *.sql
var FS embed.FS

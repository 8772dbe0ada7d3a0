package bench

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

func TestLockSchemaRefusesASecondRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.DatabaseURL(t)
	// A name of this test run's own: another go test may run this test at
	// the same time on the same server.
	schema := "bench_lock_" + rand.Text()
	first, err := lockSchema(ctx, dbURL, schema)
	if err != nil {
		t.Fatal(err)
	}
	if second, err := lockSchema(ctx, dbURL, schema); err == nil {
		second.Release(ctx)
		t.Fatal("a second run got the schema while the first held it")
	} else if !strings.Contains(err.Error(), "--schema") {
		t.Errorf("the refusal should say how to proceed: %v", err)
	}
	other, err := lockSchema(ctx, dbURL, schema+"_other")
	if err != nil {
		t.Fatalf("another schema must stay free: %v", err)
	}
	other.Release(ctx)
	first.Release(ctx)
	again, err := lockSchema(ctx, dbURL, schema)
	if err != nil {
		t.Fatalf("the schema must be free once the first run ended: %v", err)
	}
	again.Release(ctx)
}

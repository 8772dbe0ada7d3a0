package cli

import "testing"

func TestMemoryLimitGrowsWithTheRequestsHeldAbove512(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		inFlight int
		want     int64
	}{
		{1, 100 << 20},
		{256, 100 << 20},
		{512, 100 << 20},
		{1024, 200 << 20},
		{2048, 400 << 20},
		{768, 150 << 20},
	} {
		if got := memoryLimitFor(tc.inFlight); got != tc.want {
			t.Errorf("memoryLimitFor(%d) = %d MiB, want %d MiB", tc.inFlight, got>>20, tc.want>>20)
		}
	}
}

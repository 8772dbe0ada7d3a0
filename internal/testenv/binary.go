package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binOut  []byte
)

// Binary builds the cardbridge command once per test process and returns
// the path of the executable, for tests that run it as a separate process
// (to kill it, or to measure it).
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cardbridge-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "cardbridge")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/cardbridge/cardbridge/cmd/cardbridge")
		binOut, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("testenv: building cardbridge: %v\n%s", binErr, binOut)
	}
	return binPath
}

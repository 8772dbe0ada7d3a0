//go:build !linux

package bench

import "syscall"

// childProcAttr: elsewhere than on Linux the children keep the defaults;
// the bench still stops them on a normal exit and on Ctrl-C.
func childProcAttr() *syscall.SysProcAttr { return nil }

package testenv

import "syscall"

// dieWithParent has a child process killed when the test process dies,
// so that no server outlives a crashed test.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

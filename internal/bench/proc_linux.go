package bench

import "syscall"

// childProcAttr puts a child in a process group of its own, so that a
// Ctrl-C on the terminal reaches only the bench, which then stops its
// children in order, and makes the kernel kill the child should the bench
// die without cleaning up (kill -9, a crash).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

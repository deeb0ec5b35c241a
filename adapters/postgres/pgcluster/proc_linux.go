//go:build linux

package pgcluster

import (
	"syscall"
)

// sysProcAttr returns the attributes for the server child processes.
//
// Pdeathsig makes the kernel send SIGINT (PostgreSQL's "fast shutdown") to
// the child when the thread that forked it dies; startLocked keeps that
// thread alive for the child's lifetime. Setpgid keeps a terminal's Ctrl-C
// (sent to the whole foreground process group) away from the server, so that
// the parent can shut down in its own order and stop the server last.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: cred,
		Pdeathsig:  syscall.SIGINT,
		Setpgid:    true,
	}
}

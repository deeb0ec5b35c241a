//go:build unix && !linux

package pgcluster

import (
	"syscall"
)

// sysProcAttr returns the attributes for the server child processes. Only
// Linux has a parent-death signal; elsewhere the server survives a crashed
// parent (a later Start on the same Dir reports it as already running).
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true,
	}
}

package kubod

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel send SIGTERM to the child when the OS thread
// that forked it exits. Start forks from a goroutine locked to its thread for
// the child's whole lifetime (golang/go#27505), so in practice the child dies
// with this process.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

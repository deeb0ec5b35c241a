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

// setProcAttr is setDeathSignal for the daemon, which it also puts in a
// process group of its own, as the managed PostgreSQL is: a terminal's Ctrl-C
// goes to the foreground process group, and must reach only anchorage, which
// stops its workers before it stops Kubo. In anchorage's group the daemon got
// the interrupt too and exited under pins still in flight ("kubo daemon
// exited unexpectedly").
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
}

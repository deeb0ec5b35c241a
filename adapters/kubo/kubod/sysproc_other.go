//go:build !linux

package kubod

import "os/exec"

// setDeathSignal is Linux-only (Pdeathsig); elsewhere a daemon outlives a
// crashed parent until stopped.
func setDeathSignal(cmd *exec.Cmd) {}

// setProcAttr is Linux-only (Pdeathsig, a process group of its own).
func setProcAttr(cmd *exec.Cmd) {}

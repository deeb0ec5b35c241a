//go:build !linux

package kubod

import "os/exec"

// setDeathSignal is Linux-only (Pdeathsig); elsewhere a daemon outlives a
// crashed parent until stopped.
func setDeathSignal(cmd *exec.Cmd) {}

//go:build !linux

package kubod

import "os/exec"

// setProcAttr is Linux-only (Pdeathsig, a process group of its own);
// elsewhere a daemon outlives a crashed parent until stopped.
func setProcAttr(cmd *exec.Cmd) {}

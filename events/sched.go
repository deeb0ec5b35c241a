package events

// SchedTermStarted is recorded by a scheduler when it becomes the leader. Term is its lease's revision, which
// only grows. Every placement decision carries its term; once a term has started, decisions of older terms that
// appear later in the log are ignored by every reader, so a deposed leader cannot place. Subject sched.term.
type SchedTermStarted struct {
	Term        uint64 `json:"term"`
	SchedulerID string `json:"scheduler_id"`
}

func (SchedTermStarted) EventType() Type   { return "sched.term_started" }
func (SchedTermStarted) EventVersion() int { return 1 }

// MaintenanceSet is recorded when an operator pauses (On) or resumes placement. The API keeps accepting pins
// meanwhile; they stay queued. Subject sched.maintenance.
type MaintenanceSet struct {
	On     bool   `json:"on"`
	Reason string `json:"reason,omitempty"`
}

func (MaintenanceSet) EventType() Type   { return "sched.maintenance_set" }
func (MaintenanceSet) EventVersion() int { return 1 }

func init() {
	register[SchedTermStarted]()
	register[MaintenanceSet]()
}

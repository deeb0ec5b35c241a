package domain

import (
	"sync"
	"time"
)

// CreatedClock hands out pin creation times: millisecond precision (what JavaScript clients round-trip),
// strictly increasing per org, bumping by 1 ms on collision. The spec's pagination needs created to be unique
// within an org, or items on a page boundary are skipped.
type CreatedClock struct {
	now   func() time.Time
	mu    sync.Mutex
	last  map[string]time.Time
	floor time.Time
}

// SetFloor makes every time handed out later than t. A node sets it at start to the time of the log's last
// event, so a clock that went backwards across a restart cannot hand out a creation time below one an earlier
// process already acknowledged.
func (c *CreatedClock) SetFloor(t time.Time) {
	t = t.UTC().Truncate(time.Millisecond)
	c.mu.Lock()
	if t.After(c.floor) {
		c.floor = t
	}
	c.mu.Unlock()
}

// NewCreatedClock returns a clock reading now.
func NewCreatedClock(now func() time.Time) *CreatedClock {
	return &CreatedClock{now: now, last: map[string]time.Time{}}
}

// Next returns the next creation time for org.
func (c *CreatedClock) Next(org string) time.Time {
	t := c.now().UTC().Truncate(time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.After(c.floor) {
		t = c.floor.Add(time.Millisecond)
	}
	if last, ok := c.last[org]; ok && !t.After(last) {
		t = last.Add(time.Millisecond)
	}
	c.last[org] = t
	return t
}

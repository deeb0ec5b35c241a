package postgres

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/projections"
)

// TestFoldKeepsTheNewerPlacementsObservation: within one batch, a late report about an older placement of the
// same pin on the same node (re-placed since) must not displace the report about the current placement, which
// the apply would then drop for not matching the row's placed_seq.
func TestFoldKeepsTheNewerPlacementsObservation(t *testing.T) {
	k := placementKey{pin: pinKey{org: uuid.New(), id: uuid.New()}, node: "n1"}
	pinned, failed := int16(projections.StatusPinned), int16(projections.StatusFailed)

	f := newPlacementFold()
	f.observed(k, pinned, nil, 10, 12) // the current placement (decided at 10) is pinned
	f.observed(k, failed, nil, 5, 13)  // a late failure of the placement decided at 5
	require.Equal(t, uint64(10), f.observes[k].placedSeq)
	require.Equal(t, pinned, f.observes[k].status)

	// A newer placement's report does replace an older one's.
	f = newPlacementFold()
	f.observed(k, failed, nil, 5, 12)
	f.observed(k, pinned, nil, 10, 13)
	require.Equal(t, uint64(10), f.observes[k].placedSeq)
	require.Equal(t, pinned, f.observes[k].status)
	require.Len(t, f.obsOrder, 1)
}

// Package projections is everything that consumes the event log: the runner that feeds projectors in stream
// order from their checkpoints, the watermarks that give API reads their read-your-writes guarantee, the
// in-memory folds (token registry) and the read-model types the API serves.
package projections

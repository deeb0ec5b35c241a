package natsjs

// SetDenseSpan sets how far apart a subject's first and last events must be for Load to follow the chain of
// expected-sequence headers instead of reading forward, until the returned function restores it. Tests using it
// must not run in parallel.
func SetDenseSpan(n uint64) (restore func()) {
	old := denseSpan
	denseSpan = n
	return func() { denseSpan = old }
}

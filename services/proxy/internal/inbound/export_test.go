package inbound

// SetChainCache turns the client chain cache on or off for the snapshots
// built from then on (on by default): for benchmarks that compare the two.
func SetChainCache(on bool) { noChainCache.Store(!on) }

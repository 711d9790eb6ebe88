package model

// OutboundFingerprint exposes the tls-outbound fingerprint to the external
// tests.
var OutboundFingerprint = fingerprint

// OutboundCacheLen is the number of entries of an OutboundCache, collected
// or not yet.
func OutboundCacheLen(c *OutboundCache) int { return c.len() }

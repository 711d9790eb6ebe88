package model

// OutboundFingerprint exposes the tls-outbound fingerprint to the external
// tests.
var OutboundFingerprint = fingerprint

// Package audit is Keyway's audit trail: one [Record] per write made through
// the policy and secrets APIs (who, what, when, from where), appended to the
// JetStream stream keyway-audit, which keeps records within an age and a
// size limit.
//
// A write is recorded twice: an "attempt" record before the store write,
// whose acknowledgement by the stream the write waits for ([Writer.Attempt]:
// no acknowledged record, no write), and an "ok" or "failed" record after it
// ([Writer.Outcome]), which is retried in the background when the stream
// does not take it. A write is thus never stored without a record of who
// asked for it, even if the process stops between the write and its
// outcome.
//
// Records never carry key material: resources and secrets appear as the
// SHA-256 digest of what was stored (for secrets, of their public parts).
package audit

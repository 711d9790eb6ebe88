// Package translate is the pure step of a proxy node's configuration
// pipeline: from the stored objects (the validated models of the
// keyway-config bucket's values, kept in a [Store] by key) to the inputs of
// the builders of the next step, package publish: the input of each
// Service's Upstream ([Store.Upstream]: the Service and the TLS context of
// the tls-outbound binding that targets it), the routes ([Store.Routes]),
// and the Listeners with the hosts of their tls-inbound bindings merged in
// ([Store.Listeners]). References to the secrets service are left as
// names; [SecretKeys] lists them, and the Store indexes which keys name each
// ([Store.Users]).
//
// Nothing here does I/O, reads a clock or logs: the same Store always
// translates to the same inputs, which the golden tests in testdata show.
// The Store also says what a change invalidates ([Dirty]), so that the next
// step rebuilds only that.
package translate

// Package manifest reads keywayctl's input files into keyway.policy.v1
// resources, remembering where each field was written.
//
// A manifest is a YAML stream (one or more documents separated by "---") or
// a JSON file. Each document is one resource in the Kubernetes shape
// (apiVersion, kind, metadata, spec); kind selects the member of the
// Resource oneof. MuleSoft Flex Gateway's Local Mode resources
// (gateway.mulesoft.com/v1alpha1 ApiInstance, Service and PolicyBinding)
// become the Keyway resources they mean, each with a [Note] saying what it
// became; what Keyway would not do as Flex does is an [Error] at its field
// (flex.go). A PEM field whose block is commented out with '#', as Flex's
// samples print them, is refused at the line of the file.
//
// The reader converts each document's YAML tree to JSON and decodes it with
// protojson, so the accepted fields are exactly those of the proto. While it
// walks the tree it records the line and column of every field path
// ("spec.config.ciphers[1]"), so that a field violation the policy service
// reports for "resources[2].policyBinding.spec.config.ciphers[1]" points back
// at the file, line and column the user wrote ([Manifest.Locate]).
package manifest

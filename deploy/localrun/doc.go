// Package localrun runs Keyway's deployment manifests (deploy/kubernetes,
// rendered with kustomize) as local processes, so that a manifest that
// could not start in a cluster fails on one machine first: each workload
// replica is a process of the binary its image names, with its container's
// command, arguments and environment.
//
// What only a cluster provides is mapped, never written into the manifests:
// container ports become free 127.0.0.1 ports; a Service name and port
// becomes a kube-proxy stand-in on loopback that forwards to the selected
// pods; a StatefulSet pod's name under its headless Service becomes that
// pod's port; Secret volumes and secretKeyRef values hold material the
// launcher makes with its own CAs (deploy/README.md's Secret table);
// ConfigMap files get the same rewriting as the arguments; Vault's
// Kubernetes service registration is commented out. Vault is a real raft
// server that the launcher initialises, unseals and sets up (KV v2, PKI, the
// secrets service's policy and AppRole) as an operator does once.
//
// [Start] returns a [Cluster] whose pods can be killed, stopped and
// started again ([Pod.Kill], [Pod.Stop], [Pod.Start]), for failure drills.
// `make prod-local` (deploy/cmd/prod-local) and TestManifestsServeThroughMTLS
// in `make test` use it. The package lives in the deploy module, outside the
// Go workspace, so that the Kubernetes libraries stay out of the services'
// builds.
package localrun

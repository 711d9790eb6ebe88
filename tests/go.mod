module keyway.dev/tests

go 1.26.0

replace (
	keyway.dev/common => ../services/common
	keyway.dev/devstack => ../services/devstack
	keyway.dev/gen => ../gen
	keyway.dev/keywayctl => ../cmd/keywayctl
	keyway.dev/policy => ../services/policy
	keyway.dev/proxy => ../services/proxy
)

require (
	keyway.dev/common v0.0.0
	keyway.dev/devstack v0.0.0
)

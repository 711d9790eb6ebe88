module keyway.dev/tests

go 1.26

replace (
	keyway.dev/gen => ../gen
	keyway.dev/common => ../services/common
	keyway.dev/policy => ../services/policy
	keyway.dev/proxy => ../services/proxy
	keyway.dev/devstack => ../services/devstack
	keyway.dev/keywayctl => ../cmd/keywayctl
)

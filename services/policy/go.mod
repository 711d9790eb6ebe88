module keyway.dev/policy

go 1.26

replace (
	keyway.dev/gen => ../../gen
	keyway.dev/common => ../common
)

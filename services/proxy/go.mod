module keyway.dev/proxy

go 1.26

replace (
	keyway.dev/gen => ../../gen
	keyway.dev/common => ../common
)

module keyway.dev/keywayctl

go 1.26

replace (
	keyway.dev/gen => ../../gen
	keyway.dev/common => ../../services/common
)

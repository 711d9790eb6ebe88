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
	connectrpc.com/connect v1.21.1
	github.com/nats-io/nats.go v1.55.0
	google.golang.org/protobuf v1.36.12
	keyway.dev/common v0.0.0
	keyway.dev/devstack v0.0.0
	keyway.dev/gen v0.0.0
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/grpc v1.85.0 // indirect
)

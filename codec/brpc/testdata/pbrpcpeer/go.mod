// This module is kept apart from the product's go.mod so that the product carries no test peer. It runs real
// baidu-golang/pbrpc clients and servers to record the frames the codec's tests decode, and checks that pbrpc
// reads what the codec writes (error replies, padded correlation ids). Run it with: go run .
module github.com/meltemi-mesh/meltemi/codec/brpc/testdata/pbrpcpeer

go 1.26

require (
	github.com/baidu-golang/pbrpc v1.4.0
	google.golang.org/protobuf v1.26.0
)

require (
	github.com/golang/snappy v0.0.3 // indirect
	github.com/jhunters/link v0.0.0-20221207123848-6322292415b2 // indirect
	github.com/jhunters/timewheel v0.0.0-20210716021958-85ae0cfe1074 // indirect
	github.com/jolestar/go-commons-pool/v2 v2.1.1 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

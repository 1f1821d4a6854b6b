module github.com/meltemi-mesh/meltemi/test/interop/brpc

go 1.26.8

replace github.com/meltemi-mesh/meltemi => ../../..

require (
	github.com/baidu-golang/pbrpc v1.4.0
	github.com/meltemi-mesh/meltemi v0.0.0-00010101000000-000000000000
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/golang/snappy v0.0.3 // indirect
	github.com/jhunters/link v0.0.0-20221207123848-6322292415b2 // indirect
	github.com/jhunters/timewheel v0.0.0-20210716021958-85ae0cfe1074 // indirect
	github.com/jolestar/go-commons-pool/v2 v2.1.1 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

// Package crds holds the CustomResourceDefinitions of the kinds Meltemi defines (Aeraki's
// metaprotocol.aeraki.io, redis.aeraki.io and dubbo.aeraki.io groups), generated from the Go types
// under api/ by `make generate`, so that installers and tests apply exactly what the types say.
package crds

import "embed"

// FS holds one YAML file per CustomResourceDefinition, named <group>_<plural>.yaml.
//
//go:embed *.yaml
var FS embed.FS

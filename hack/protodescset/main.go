// Command protodescset writes the descriptors of the Envoy, xDS and well-known protobuf files that
// Meltemi's .proto files import, as one FileDescriptorSet, so that protoc can compile our files
// without Envoy's .proto sources: no registry serves those, but go-control-plane's generated Go
// registers every file's descriptor, and those descriptors carry the go_package options that point
// the generated imports at go-control-plane's Go packages.
//
// Usage: go run ./hack/protodescset -o FILE
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// Each blank import registers the descriptors of one package that our .proto files import
	// (and, transitively, everything those files import). Add a line here when a .proto under
	// api/ starts importing a new Envoy package.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	_ "google.golang.org/protobuf/types/known/anypb"
	_ "google.golang.org/protobuf/types/known/durationpb"
	_ "google.golang.org/protobuf/types/known/wrapperspb"
)

func main() {
	out := flag.String("o", "", "file to write the FileDescriptorSet to")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "protodescset: -o FILE is required")
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "protodescset:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	set := &descriptorpb.FileDescriptorSet{File: registeredFiles()}
	// Deterministic so that the same module versions always give the same bytes.
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		return fmt.Errorf("marshal descriptor set: %w", err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

// registeredFiles returns every file in the global registry, each after its imports and otherwise
// sorted by path: protoc does not need that order, but other readers of a descriptor set expect it
// and a fixed order keeps the output stable.
func registeredFiles() []*descriptorpb.FileDescriptorProto {
	var paths []string
	byPath := map[string]protoreflect.FileDescriptor{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		paths = append(paths, fd.Path())
		byPath[fd.Path()] = fd
		return true
	})
	sort.Strings(paths)

	var files []*descriptorpb.FileDescriptorProto
	done := map[string]bool{}
	var visit func(fd protoreflect.FileDescriptor)
	visit = func(fd protoreflect.FileDescriptor) {
		if done[fd.Path()] {
			return
		}
		done[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			visit(imports.Get(i).FileDescriptor)
		}
		files = append(files, protodesc.ToFileDescriptorProto(fd))
	}
	for _, p := range paths {
		visit(byPath[p])
	}
	return files
}

// Package greet is the sample Dubbo service of this example, with the dubbo-go code that serves it and calls
// it: the classic "dubbo" protocol with Hessian 2 serialisation and no registry, the setup an existing Dubbo
// deployment most often has. The provider and consumer commands and the demo are thin wrappers around it.
//
// It uses dubbo-go v3.3.1 and works around a few of that version's surprises; each is explained where it is
// handled, so that the code can be copied into a real service.
package greet

import (
	"context"
	"strings"
)

// Interface is the Dubbo interface name. The mesh's ServiceEntry names the service by this name in lower case
// (org.apache.dubbo.samples.greetservice), and its MetaRouter matches calls on it.
const Interface = "org.apache.dubbo.samples.GreetService"

// MethodSayHello is the method's name on the wire. Java peers spell methods in lower camel case; dubbo-go
// providers answer to either case of the first letter, so Java and Go consumers both reach SayHello.
const MethodSayHello = "sayHello"

// GreetService is the provider's implementation. dubbo-go finds its methods by reflection: the type and its
// methods must be exported, and each method takes a context first and returns an error last.
type GreetService struct {
	// Version labels every answer, so a caller can see which provider served it.
	Version string
}

// SayHello answers "VERSION: hello NAME".
func (s *GreetService) SayHello(_ context.Context, name string) (string, error) {
	return s.Version + ": hello " + name, nil
}

// VersionOf returns the version label of an answer of SayHello, or "" if it carries none.
func VersionOf(answer string) string {
	version, _, ok := strings.Cut(answer, ": ")
	if !ok {
		return ""
	}
	return version
}

// envoy-validate checks Envoy bootstrap configurations (YAML or JSON) against Envoy's own API, as
// far as that can be done without the Envoy binary (not packaged for Debian): every file is decoded
// strictly (an unknown field or enum value is an error) into envoy.config.bootstrap.v3.Bootstrap
// with go-control-plane's generated types — Envoy's API protos — every typed_config (Any) is
// unpacked into its registered type, every message is checked with its protoc-gen-validate rules
// (the constraints Envoy enforces when it loads a configuration), and a field Envoy marks as
// deprecated is an error too. What it cannot see is what only a running Envoy checks (references
// between resources, e.g. a route naming a cluster that does not exist): the suites check those.
//
// Usage: envoy-validate FILE…   (prints "ok FILE" per file; exit 1 with the reasons otherwise)
package main

import (
	"errors"
	"fmt"
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	// The extensions a configuration may name in a typed_config: importing them registers their types.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// validator is what protoc-gen-validate generates on every message.
type validator interface{ ValidateAll() error }

// check walks m: deprecated fields and every Any inside, unpacked. With rules, m's validation
// rules are checked too (they cover its embedded messages, but not what an Any holds).
func check(m protoreflect.Message, path string, rules bool) error {
	var errs []error
	if v, ok := m.Interface().(validator); ok && rules {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: typed_config %s: %w", path, a.GetTypeUrl(), err)
		}
		return check(inner.ProtoReflect(), path+"("+string(inner.ProtoReflect().Descriptor().FullName())+")", true)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			errs = append(errs, fmt.Errorf("%s: deprecated in Envoy's API", p))
		}
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			for i := 0; i < v.List().Len(); i++ {
				errs = append(errs, check(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), false))
			}
		case fd.IsMap() && fd.MapValue().Kind() == protoreflect.MessageKind:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				errs = append(errs, check(mv.Message(), fmt.Sprintf("%s[%v]", p, k.Interface()), false))
				return true
			})
		case fd.Kind() == protoreflect.MessageKind:
			errs = append(errs, check(v.Message(), p, false))
		}
		return true
	})
	return errors.Join(errs...)
}

func validate(file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("not YAML: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		return fmt.Errorf("not an Envoy bootstrap: %w", err)
	}
	if proto.Size(&b) == 0 {
		return errors.New("empty configuration")
	}
	return check(b.ProtoReflect(), "bootstrap", true)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: envoy-validate FILE…")
		os.Exit(2)
	}
	failed := false
	for _, f := range os.Args[1:] {
		if err := validate(f); err != nil {
			fmt.Printf("invalid %s:\n%v\n", f, err)
			failed = true
			continue
		}
		fmt.Printf("ok %s\n", f)
	}
	if failed {
		os.Exit(1)
	}
}

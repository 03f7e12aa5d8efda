// k8s-validate checks rendered Kubernetes manifests (the output of `kustomize build`) offline, with
// no cluster and no network: every object is decoded strictly into the Kubernetes API's own Go types
// (k8s.io/api through k8s.io/apimachinery's strict JSON decoder — an unknown or duplicated field, a
// wrong type or an unregistered kind is an error), then held to the project's rules for the
// manifests under deploy/k8s (deploy/k8s/README.md):
//
//   - every container (init containers too) has an image pinned by tag or digest (never `latest`),
//     CPU and memory requests and a memory limit, and a securityContext that is non-root (here or
//     on the pod), read-only root filesystem, no privilege escalation, not privileged, capabilities
//     drop ALL, and a seccomp profile (RuntimeDefault or Localhost, here or on the pod) — Pod
//     Security "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards);
//   - every long-running container (Deployment, StatefulSet, DaemonSet) has a readiness and a
//     liveness probe, and a probe's named or numbered port is one the container declares;
//   - references resolve among the rendered objects: volume mounts name a volume of the pod;
//     ConfigMaps and Secrets named by volumes, envFrom and env valueFrom exist (a key reference
//     names a key they hold), unless marked optional; a Service's selector matches a pod template
//     and its named target ports are ports of the matching containers; a HorizontalPodAutoscaler
//     scales an existing workload on CPU; a PodDisruptionBudget selects a pod template; no two
//     objects share kind, namespace and name.
//
// What it cannot see is what only an API server checks (admission, quotas, field validation beyond
// the types, e.g. a label value's syntax): those need a cluster.
//
// Usage: k8s-validate FILE…   (a multi-document YAML stream each; "-" reads standard input; prints
// "ok FILE: N objects (…)" per file; exit 1 with the reasons otherwise, 2 on a usage error)
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	serializerjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// scheme holds the API groups the manifests may use; any other kind is refused.
var scheme = runtime.NewScheme()

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme, autoscalingv2.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
}

// object is one decoded manifest with where it came from.
type object struct {
	id  string // Kind/namespace/name
	obj runtime.Object
}

// workload is a pod template and what it belongs to.
type workload struct {
	id          string
	kind, name  string
	namespace   string
	longRunning bool
	template    *corev1.PodTemplateSpec
}

func namespaceOf(m metav1.Object) string {
	if m.GetNamespace() == "" {
		return "default"
	}
	return m.GetNamespace()
}

// decode splits a YAML stream into documents and decodes each strictly into its registered type.
func decode(raw []byte) ([]object, []error) {
	strict := serializerjson.NewSerializerWithOptions(serializerjson.DefaultMetaFactory, scheme, scheme, serializerjson.SerializerOptions{Strict: true})
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var objs []object
	var errs []error
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return objs, append(errs, fmt.Errorf("document %d: %w", i, err))
		}
		if len(bytes.TrimSpace(doc)) == 0 || strings.TrimSpace(string(doc)) == "---" {
			continue
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: not YAML: %w", i, err))
			continue
		}
		if string(js) == "null" {
			continue
		}
		obj, gvk, err := strict.Decode(js, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i, err))
			continue
		}
		m, ok := obj.(metav1.Object)
		if !ok || m.GetName() == "" {
			errs = append(errs, fmt.Errorf("document %d (%s): no metadata.name", i, gvk.Kind))
			continue
		}
		objs = append(objs, object{id: fmt.Sprintf("%s/%s/%s", gvk.Kind, namespaceOf(m), m.GetName()), obj: obj})
	}
	return objs, errs
}

// index is what the reference checks look things up in.
type index struct {
	configMaps map[string]map[string]bool // namespace/name → keys
	secrets    map[string]map[string]bool
	workloads  []workload
}

func buildIndex(objs []object) index {
	ix := index{configMaps: map[string]map[string]bool{}, secrets: map[string]map[string]bool{}}
	keys := func(maps ...map[string]string) map[string]bool {
		k := map[string]bool{}
		for _, m := range maps {
			for key := range m {
				k[key] = true
			}
		}
		return k
	}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.ConfigMap:
			k := keys(v.Data)
			for key := range v.BinaryData {
				k[key] = true
			}
			ix.configMaps[namespaceOf(v)+"/"+v.Name] = k
		case *corev1.Secret:
			k := keys(v.StringData)
			for key := range v.Data {
				k[key] = true
			}
			ix.secrets[namespaceOf(v)+"/"+v.Name] = k
		case *appsv1.Deployment:
			ix.workloads = append(ix.workloads, workload{o.id, "Deployment", v.Name, namespaceOf(v), true, &v.Spec.Template})
		case *appsv1.StatefulSet:
			ix.workloads = append(ix.workloads, workload{o.id, "StatefulSet", v.Name, namespaceOf(v), true, &v.Spec.Template})
		case *appsv1.DaemonSet:
			ix.workloads = append(ix.workloads, workload{o.id, "DaemonSet", v.Name, namespaceOf(v), true, &v.Spec.Template})
		case *batchv1.Job:
			ix.workloads = append(ix.workloads, workload{o.id, "Job", v.Name, namespaceOf(v), false, &v.Spec.Template})
		case *batchv1.CronJob:
			ix.workloads = append(ix.workloads, workload{o.id, "CronJob", v.Name, namespaceOf(v), false, &v.Spec.JobTemplate.Spec.Template})
		}
	}
	return ix
}

// imagePinned: a tag other than latest, or a digest (the tag follows the last "/").
func imagePinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	last := image[strings.LastIndex(image, "/")+1:]
	i := strings.LastIndex(last, ":")
	return i > 0 && i < len(last)-1 && last[i+1:] != "latest"
}

// seccompConfined: a RuntimeDefault or Localhost profile (Pod Security "restricted").
func seccompConfined(p *corev1.SeccompProfile) bool {
	return p != nil && (p.Type == corev1.SeccompProfileTypeRuntimeDefault || p.Type == corev1.SeccompProfileTypeLocalhost)
}

func isTrue(b *bool) bool  { return b != nil && *b }
func isFalse(b *bool) bool { return b != nil && !*b }

// portDeclared: a probe's port is a containerPort of c (by name or number).
func portDeclared(c *corev1.Container, p intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return true
		}
	}
	return false
}

func checkProbe(c *corev1.Container, which string, p *corev1.Probe) error {
	if p == nil {
		return fmt.Errorf("container %s: no %s probe", c.Name, which)
	}
	switch {
	case p.HTTPGet != nil:
		if !portDeclared(c, p.HTTPGet.Port) {
			return fmt.Errorf("container %s: %s probe port %s is not a port of the container", c.Name, which, p.HTTPGet.Port.String())
		}
	case p.TCPSocket != nil:
		if !portDeclared(c, p.TCPSocket.Port) {
			return fmt.Errorf("container %s: %s probe port %s is not a port of the container", c.Name, which, p.TCPSocket.Port.String())
		}
	case p.GRPC == nil && p.Exec == nil:
		return fmt.Errorf("container %s: %s probe has no handler", c.Name, which)
	}
	return nil
}

func (ix index) checkRef(kind, ns, name, key string, optional *bool) error {
	if isTrue(optional) {
		return nil
	}
	table := ix.configMaps
	if kind == "Secret" {
		table = ix.secrets
	}
	keys, ok := table[ns+"/"+name]
	if !ok {
		return fmt.Errorf("%s %s is not among the rendered objects", kind, name)
	}
	if key != "" && !keys[key] {
		return fmt.Errorf("%s %s has no key %q", kind, name, key)
	}
	return nil
}

// checkWorkload applies the container and reference rules to one pod template.
func (ix index) checkWorkload(w workload) []error {
	var errs []error
	spec := w.template.Spec
	podNonRoot := spec.SecurityContext != nil && isTrue(spec.SecurityContext.RunAsNonRoot)
	podSeccomp := spec.SecurityContext != nil && seccompConfined(spec.SecurityContext.SeccompProfile)
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
		if v.ConfigMap != nil {
			errs = append(errs, ix.checkRef("ConfigMap", w.namespace, v.ConfigMap.Name, "", v.ConfigMap.Optional))
		}
		if v.Secret != nil {
			errs = append(errs, ix.checkRef("Secret", w.namespace, v.Secret.SecretName, "", v.Secret.Optional))
		}
	}
	type entry struct {
		c    *corev1.Container
		init bool
	}
	var all []entry
	for i := range spec.InitContainers {
		all = append(all, entry{&spec.InitContainers[i], true})
	}
	for i := range spec.Containers {
		all = append(all, entry{&spec.Containers[i], false})
	}
	for _, e := range all {
		c := e.c
		if !imagePinned(c.Image) {
			errs = append(errs, fmt.Errorf("container %s: image %q is not pinned by a tag (other than latest) or a digest", c.Name, c.Image))
		}
		req := c.Resources.Requests
		if _, ok := req[corev1.ResourceCPU]; !ok {
			errs = append(errs, fmt.Errorf("container %s: no CPU request", c.Name))
		}
		if _, ok := req[corev1.ResourceMemory]; !ok {
			errs = append(errs, fmt.Errorf("container %s: no memory request", c.Name))
		}
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			errs = append(errs, fmt.Errorf("container %s: no memory limit", c.Name))
		}
		sc := c.SecurityContext
		if sc == nil {
			errs = append(errs, fmt.Errorf("container %s: no securityContext", c.Name))
		} else {
			if !podNonRoot && !isTrue(sc.RunAsNonRoot) {
				errs = append(errs, fmt.Errorf("container %s: runAsNonRoot is not true (container or pod)", c.Name))
			}
			if isFalse(sc.RunAsNonRoot) {
				errs = append(errs, fmt.Errorf("container %s: runAsNonRoot: false", c.Name))
			}
			if !isTrue(sc.ReadOnlyRootFilesystem) {
				errs = append(errs, fmt.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name))
			}
			if !isFalse(sc.AllowPrivilegeEscalation) {
				errs = append(errs, fmt.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name))
			}
			if isTrue(sc.Privileged) {
				errs = append(errs, fmt.Errorf("container %s: privileged", c.Name))
			}
			dropsAll := false
			if sc.Capabilities != nil {
				for _, d := range sc.Capabilities.Drop {
					dropsAll = dropsAll || d == "ALL"
				}
			}
			if !dropsAll {
				errs = append(errs, fmt.Errorf("container %s: capabilities do not drop ALL", c.Name))
			}
			if !podSeccomp && !seccompConfined(sc.SeccompProfile) {
				errs = append(errs, fmt.Errorf("container %s: no seccompProfile RuntimeDefault or Localhost (container or pod)", c.Name))
			}
		}
		if w.longRunning && !e.init {
			errs = append(errs, checkProbe(c, "readiness", c.ReadinessProbe), checkProbe(c, "liveness", c.LivenessProbe))
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				errs = append(errs, fmt.Errorf("container %s: volume mount %s names no volume of the pod", c.Name, m.Name))
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				errs = append(errs, ix.checkRef("ConfigMap", w.namespace, ef.ConfigMapRef.Name, "", ef.ConfigMapRef.Optional))
			}
			if ef.SecretRef != nil {
				errs = append(errs, ix.checkRef("Secret", w.namespace, ef.SecretRef.Name, "", ef.SecretRef.Optional))
			}
		}
		for _, ev := range c.Env {
			if ev.ValueFrom == nil {
				continue
			}
			if r := ev.ValueFrom.ConfigMapKeyRef; r != nil {
				errs = append(errs, ix.checkRef("ConfigMap", w.namespace, r.Name, r.Key, r.Optional))
			}
			if r := ev.ValueFrom.SecretKeyRef; r != nil {
				errs = append(errs, ix.checkRef("Secret", w.namespace, r.Name, r.Key, r.Optional))
			}
		}
	}
	return prefix(w.id, errs)
}

// selecting: the workloads of ns whose pod template labels the selector matches.
func (ix index) selecting(ns string, sel labels.Selector) []workload {
	var out []workload
	for _, w := range ix.workloads {
		if w.namespace == ns && !sel.Empty() && sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func (ix index) checkService(s *corev1.Service) []error {
	if s.Spec.Type == corev1.ServiceTypeExternalName || len(s.Spec.Selector) == 0 {
		return nil
	}
	matched := ix.selecting(namespaceOf(s), labels.SelectorFromSet(s.Spec.Selector))
	if len(matched) == 0 {
		return []error{fmt.Errorf("selector %v matches no pod template", s.Spec.Selector)}
	}
	var errs []error
	for _, p := range s.Spec.Ports {
		if p.TargetPort.Type != intstr.String {
			continue
		}
		for _, w := range matched {
			found := false
			for i := range w.template.Spec.Containers {
				found = found || portDeclared(&w.template.Spec.Containers[i], p.TargetPort)
			}
			if !found {
				errs = append(errs, fmt.Errorf("port %s: target port %q is no container port of %s", p.Name, p.TargetPort.StrVal, w.id))
			}
		}
	}
	return errs
}

func (ix index) checkHPA(h *autoscalingv2.HorizontalPodAutoscaler) []error {
	var errs []error
	ref := h.Spec.ScaleTargetRef
	found := false
	for _, w := range ix.workloads {
		found = found || (w.kind == ref.Kind && w.name == ref.Name && w.namespace == namespaceOf(h))
	}
	if !found {
		errs = append(errs, fmt.Errorf("scaleTargetRef %s/%s is not among the rendered workloads", ref.Kind, ref.Name))
	}
	cpu := false
	for _, m := range h.Spec.Metrics {
		cpu = cpu || (m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU)
	}
	if !cpu {
		errs = append(errs, errors.New("no CPU resource metric"))
	}
	if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		errs = append(errs, fmt.Errorf("minReplicas %d > maxReplicas %d", *h.Spec.MinReplicas, h.Spec.MaxReplicas))
	}
	return errs
}

func (ix index) checkPDB(p *policyv1.PodDisruptionBudget) []error {
	if p.Spec.Selector == nil {
		return []error{errors.New("no selector")}
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
	if err != nil {
		return []error{err}
	}
	if len(ix.selecting(namespaceOf(p), sel)) == 0 {
		return []error{fmt.Errorf("selector %s matches no pod template", sel)}
	}
	return nil
}

func prefix(id string, errs []error) []error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, fmt.Errorf("%s: %w", id, e))
		}
	}
	return out
}

// validate checks one rendered stream; it returns the count per kind and every problem found.
func validate(raw []byte) (map[string]int, error) {
	objs, errs := decode(raw)
	if len(objs) == 0 && len(errs) == 0 {
		return nil, errors.New("no objects")
	}
	ix := buildIndex(objs)
	seen := map[string]bool{}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[strings.SplitN(o.id, "/", 2)[0]]++
		if seen[o.id] {
			errs = append(errs, fmt.Errorf("%s: defined twice", o.id))
		}
		seen[o.id] = true
		switch v := o.obj.(type) {
		case *corev1.Service:
			errs = append(errs, prefix(o.id, ix.checkService(v))...)
		case *autoscalingv2.HorizontalPodAutoscaler:
			errs = append(errs, prefix(o.id, ix.checkHPA(v))...)
		case *policyv1.PodDisruptionBudget:
			errs = append(errs, prefix(o.id, ix.checkPDB(v))...)
		}
	}
	for _, w := range ix.workloads {
		errs = append(errs, ix.checkWorkload(w)...)
	}
	return kinds, errors.Join(errs...)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8s-validate FILE…   (\"-\" = standard input)")
		os.Exit(2)
	}
	failed := false
	for _, f := range os.Args[1:] {
		var raw []byte
		var err error
		if f == "-" {
			raw, err = io.ReadAll(os.Stdin)
		} else {
			raw, err = os.ReadFile(f)
		}
		if err == nil {
			var kinds map[string]int
			kinds, err = validate(raw)
			if err == nil {
				names := make([]string, 0, len(kinds))
				total := 0
				for k, n := range kinds {
					names = append(names, fmt.Sprintf("%s×%d", k, n))
					total += n
				}
				sort.Strings(names)
				fmt.Printf("ok %s: %d objects (%s)\n", f, total, strings.Join(names, ", "))
				continue
			}
		}
		fmt.Printf("invalid %s:\n%v\n", f, err)
		failed = true
	}
	if failed {
		os.Exit(1)
	}
}

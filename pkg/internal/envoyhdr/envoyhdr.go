// Package envoyhdr holds the facts about Envoy's header handling that both
// Envoy adapters (ext_proc and ext_authz) rely on.
package envoyhdr

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

// Kept reports whether a request header (lower case) is left to Envoy when
// the upstream request's headers are rebuilt: Envoy refuses to remove
// pseudo-headers and host, and it frames the body itself (content-length,
// transfer-encoding). A client's x-envoy-* headers are removed like any
// other: Envoy strips only the ones it knows, and only from requests it
// takes for external. The sidecar's mutation rules set allow_envoy for
// that; ext_authz may remove them anyway.
func Kept(name string) bool {
	switch name {
	case "host", "content-length", "transfer-encoding":
		return true
	}
	return strings.HasPrefix(name, ":")
}

// Status maps an HTTP status onto Envoy's enum, whose validation refuses
// undefined values: those fall back to their class.
func Status(code int) typev3.StatusCode {
	if _, ok := typev3.StatusCode_name[int32(code)]; ok && code >= 200 {
		return typev3.StatusCode(code)
	}
	switch {
	case code >= 200 && code < 300:
		return typev3.StatusCode_OK
	case code >= 400 && code < 500:
		return typev3.StatusCode_BadRequest
	}
	return typev3.StatusCode_InternalServerError
}

// Set is a header to set as Envoy's ext_proc reads it: the value in
// raw_value only (ext_proc ignores value there).
func Set(name, value string, appendValue bool) *corev3.HeaderValueOption {
	o := option(name, appendValue)
	o.hv.RawValue = []byte(value)
	return &o.opt
}

// SetValue is a header to set as ext_authz reads it: the value in value.
func SetValue(name, value string, appendValue bool) *corev3.HeaderValueOption {
	o := option(name, appendValue)
	o.hv.Value = value
	return &o.opt
}

// headerOption is a mutation entry with its header and flag, allocated
// together: a reply sets several headers per request.
type headerOption struct {
	opt corev3.HeaderValueOption
	hv  corev3.HeaderValue
	add wrapperspb.BoolValue
}

// option has append explicit, as Envoy's ext_proc reads it (it ignores
// append_action, and ext_authz honours it only in recent versions);
// append_action is kept consistent for versions that may read it when
// append is unset.
func option(name string, appendValue bool) *headerOption {
	o := &headerOption{}
	o.hv.Key = name
	o.add.Value = appendValue
	o.opt.Header = &o.hv
	//lint:ignore SA1019 deprecated in the API, yet the field Envoy's ext_proc reads
	o.opt.Append = &o.add
	o.opt.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	if appendValue {
		o.opt.AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	}
	return o
}

// Has reports whether h holds a field called name, in any letter case.
func Has(h gateway.Headers, name string) bool {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

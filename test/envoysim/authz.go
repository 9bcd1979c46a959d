package envoysim

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
)

// authzNamespace is where ext_authz dynamic metadata lands.
const authzNamespace = "envoy.filters.http.ext_authz"

// authorize is the ext_authz filter (doc §7): one Check per request; OK
// applies ok_response, anything else is a denial, and a transport failure
// is an error that failure_mode_allow decides.
func (rq *request) authorize() *localReply {
	cfg := rq.p.cfg.extAuthz
	h := rq.reqHeaders
	get := func(k string) string { v, _ := h.Get(k); return v }
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id: get("x-request-id"), Method: get(":method"), Path: get(":path"), Host: get(":authority"),
		Scheme: get(":scheme"), Protocol: "HTTP/1.1", Size: rq.r.ContentLength,
	}
	if cfg.GetEncodeRawHeaders() {
		httpReq.HeaderMap = h.headerMap()
	} else {
		httpReq.Headers = map[string]string{}
		for _, x := range h {
			v := strings.ToValidUTF8(x.Value, "!")
			if old, ok := httpReq.Headers[x.Key]; ok {
				v = old + "," + v
			}
			httpReq.Headers[x.Key] = v
		}
	}
	timeout := 200 * time.Millisecond
	if t := cfg.GetGrpcService().GetTimeout(); t != nil {
		timeout = t.AsDuration()
	}
	// The route's check_settings.context_extensions ride along. Envoy
	// merges them from the virtual host and the route; the simulator takes
	// the most specific per-route config only.
	var ext map[string]string
	if rq.route != nil {
		ext = rq.route.extAuthz.GetCheckSettings().GetContextExtensions()
	}
	ctx, cancel := context.WithTimeout(rq.ctx, timeout)
	defer cancel()
	resp, err := rq.p.authClient.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request:           &authv3.AttributeContext_Request{Http: httpReq},
		ContextExtensions: ext,
	}})
	if err == nil && resp.GetErrorResponse() != nil {
		err = context.DeadlineExceeded // an error response counts as an authz error
	}
	if err != nil {
		rq.p.count("ext_authz_error")
		if cfg.GetFailureModeAllow() {
			rq.p.count("ext_authz_failure_mode_allowed")
			if cfg.GetFailureModeAllowHeaderAdd() {
				rq.reqHeaders.set("x-envoy-auth-failure-mode-allowed", "true")
			}
			return nil
		}
		st := http.StatusForbidden
		if c := cfg.GetStatusOnError().GetCode(); c != 0 {
			st = int(c)
		}
		return &localReply{status: st, details: "ext_authz_error"}
	}
	if resp.GetDynamicMetadata() != nil {
		rq.rec.setMetadata(authzNamespace, resp.GetDynamicMetadata())
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		rq.p.count("ext_authz_denied")
		d := resp.GetDeniedResponse()
		lr := &localReply{status: http.StatusForbidden, details: "ext_authz_denied", body: []byte(d.GetBody())}
		if c := d.GetStatus().GetCode(); c != 0 {
			lr.status = int(c)
		}
		applyAuthzHeaders(&lr.header, d.GetHeaders(), true)
		return lr
	}
	// ext_authz.cc onComplete: sets (and appends) first, then removes,
	// then the query parameters.
	ok := resp.GetOkResponse()
	applyAuthzHeaders(&rq.reqHeaders, ok.GetHeaders(), false)
	for _, k := range ok.GetHeadersToRemove() {
		k = strings.ToLower(k)
		if k == "host" || strings.HasPrefix(k, ":") {
			continue
		}
		rq.reqHeaders.del(k)
	}
	if len(ok.GetQueryParametersToSet()) > 0 || len(ok.GetQueryParametersToRemove()) > 0 {
		p, _ := rq.reqHeaders.Get(":path")
		rq.reqHeaders.set(":path", rewriteQuery(p, ok))
	}
	return nil
}

// rewriteQuery is Envoy's QueryParamsMulti round trip for an OK answer:
// the query parsed undecoded into a map sorted by key (absl::btree_map),
// query_parameters_to_set overwriting every value of a key, then
// query_parameters_to_remove, and the path rebuilt as key=value pairs in
// key order, with no "?" when none is left.
func rewriteQuery(path string, ok *authv3.OkHttpResponse) string {
	base, query, _ := strings.Cut(path, "?")
	params := map[string][]string{}
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(kv, "=")
		params[k] = append(params[k], v)
	}
	for _, q := range ok.GetQueryParametersToSet() {
		params[q.GetKey()] = []string{q.GetValue()}
	}
	for _, k := range ok.GetQueryParametersToRemove() {
		delete(params, k)
	}
	keys := slices.Sorted(maps.Keys(params))
	delim := "?"
	for _, k := range keys {
		for _, v := range params[k] {
			base += delim + k + "=" + v
			delim = "&"
		}
	}
	return base
}

// applyAuthzHeaders applies ext_authz header mutations, which read value,
// not raw_value, the way Envoy's ext_authz does (ext_authz_grpc_impl.cc
// getAppendAction, then the filter):
//   - the deprecated append (BoolValue), when present, wins: true is
//     APPEND_IF_EXISTS_OR_ADD, applied to the request with appendCopy (the
//     value joins the first existing entry after a comma, "; " for cookie)
//     and to a local reply as a separate entry; false is
//     OVERWRITE_IF_EXISTS_OR_ADD;
//   - otherwise append_action, whose default is APPEND_IF_EXISTS_OR_ADD:
//     a separate entry (addCopy); ADD_IF_ABSENT, OVERWRITE_IF_EXISTS and
//     OVERWRITE_IF_EXISTS_OR_ADD as named.
func applyAuthzHeaders(h *Headers, opts []*corev3.HeaderValueOption, localReply bool) {
	for _, o := range opts {
		k := strings.ToLower(o.GetHeader().GetKey())
		v := o.GetHeader().GetValue()
		if k == "" {
			continue
		}
		action, joins := o.GetAppendAction(), false
		if a := appendFlag(o); a != nil {
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			if a.GetValue() {
				action, joins = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD, !localReply
			}
		}
		switch action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			if joins {
				h.appendCopy(k, v)
			} else {
				*h = append(*h, Header{k, v})
			}
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !h.has(k) {
				*h = append(*h, Header{k, v})
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if h.has(k) {
				h.set(k, v)
			}
		default: // OVERWRITE_IF_EXISTS_OR_ADD
			h.set(k, v)
		}
	}
}

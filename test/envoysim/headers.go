package envoysim

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Header is one header field as Envoy's header map holds it: a lower-case
// key, and one entry per value.
type Header struct{ Key, Value string }

// Headers is an ordered header map.
type Headers []Header

// Get returns the first value of key.
func (h Headers) Get(key string) (string, bool) {
	for _, f := range h {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Values returns every value of key, in order.
func (h Headers) Values(key string) []string {
	var out []string
	for _, f := range h {
		if f.Key == key {
			out = append(out, f.Value)
		}
	}
	return out
}

func (h Headers) has(key string) bool { _, ok := h.Get(key); return ok }

func (h *Headers) del(key string) {
	*h = slices.DeleteFunc(*h, func(f Header) bool { return f.Key == key })
}

// set replaces every value of key with v, keeping the first position.
func (h *Headers) set(key, v string) {
	for i, f := range *h {
		if f.Key == key {
			(*h)[i].Value = v
			rest := (*h)[i+1:]
			*h = append((*h)[:i+1], slices.DeleteFunc(slices.Clone(rest), func(f Header) bool { return f.Key == key })...)
			return
		}
	}
	*h = append(*h, Header{key, v})
}

// appendCopy is Envoy's HeaderMap::appendCopy: the value joins the first
// entry of key after a delimiter ("; " for cookie, "," otherwise), or is
// added when there is none.
func (h *Headers) appendCopy(key, v string) {
	for i, f := range *h {
		if f.Key != key {
			continue
		}
		if v != "" {
			if f.Value != "" {
				delim := ","
				if key == "cookie" {
					delim = "; "
				}
				v = delim + v
			}
			(*h)[i].Value += v
		}
		return
	}
	*h = append(*h, Header{key, v})
}

func (h Headers) size() int {
	n := 0
	for _, f := range h {
		n += len(f.Key) + len(f.Value)
	}
	return n
}

// fromHTTP turns net/http headers into Envoy's form: lower-case keys, one
// entry per value. Go's map loses the wire order, so keys are sorted.
func fromHTTP(hh http.Header) Headers {
	keys := make([]string, 0, len(hh))
	for k := range hh {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out Headers
	for _, k := range keys {
		for _, v := range hh[k] {
			out = append(out, Header{strings.ToLower(k), v})
		}
	}
	return out
}

// toHTTP writes the non-pseudo headers into hh.
func (h Headers) toHTTP(hh http.Header) {
	for _, f := range h {
		if !strings.HasPrefix(f.Key, ":") {
			hh[http.CanonicalHeaderKey(f.Key)] = append(hh[http.CanonicalHeaderKey(f.Key)], f.Value)
		}
	}
}

// headerMap is the wire form: raw_value only, value empty (doc §3.1).
func (h Headers) headerMap() *corev3.HeaderMap {
	m := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h))}
	for _, f := range h {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: f.Key, RawValue: []byte(f.Value)})
	}
	return m
}

// Envoy's limits on a header map (connection manager defaults).
const (
	maxHeadersCount = 100
	maxHeadersBytes = 60 << 10
)

// checkResult is the rule checker's verdict.
type checkResult int

const (
	checkOK checkResult = iota
	checkIgnore
	checkFail
)

type operation int

const (
	opSet operation = iota
	opAppend
	opRemove
)

// rules is Envoy's HeaderMutationRules checker (doc §4.2).
type rules struct {
	cfg      *mutationrulesv3.HeaderMutationRules
	allow    *regexp.Regexp
	disallow *regexp.Regexp
}

func newRules(cfg *mutationrulesv3.HeaderMutationRules) (*rules, error) {
	r := &rules{cfg: cfg}
	var err error
	if e := cfg.GetAllowExpression().GetRegex(); e != "" {
		if r.allow, err = regexp.Compile("^(?:" + e + ")$"); err != nil {
			return nil, fmt.Errorf("allow_expression: %w", err)
		}
	}
	if e := cfg.GetDisallowExpression().GetRegex(); e != "" {
		if r.disallow, err = regexp.Compile("^(?:" + e + ")$"); err != nil {
			return nil, fmt.Errorf("disallow_expression: %w", err)
		}
	}
	return r, nil
}

// refuse is what a refused mutation becomes.
func (r *rules) refuse() checkResult {
	if r.cfg.GetDisallowIsError().GetValue() {
		return checkFail
	}
	return checkIgnore
}

func (r *rules) check(op operation, key, value string) checkResult {
	if op == opRemove && (key == "host" || strings.HasPrefix(key, ":")) {
		return r.refuse()
	}
	switch {
	case r.disallow != nil && r.disallow.MatchString(key):
		return r.refuse()
	case r.allow != nil && r.allow.MatchString(key):
	case r.cfg.GetDisallowAll().GetValue():
		return r.refuse()
	case (key == "host" || key == ":authority" || key == ":method" || key == ":scheme") && !r.cfg.GetAllowAllRouting().GetValue():
		return r.refuse()
	case strings.HasPrefix(key, ":") && (op == opAppend || r.cfg.GetDisallowSystem().GetValue()):
		return r.refuse()
	case strings.HasPrefix(key, "x-envoy") && !r.cfg.GetAllowEnvoy().GetValue():
		return r.refuse()
	}
	if op == opRemove {
		return checkOK
	}
	// Values are checked too.
	switch key {
	case ":status":
		if n, err := strconv.Atoi(value); err != nil || n < 200 {
			return r.refuse()
		}
	case "host", ":authority":
		if value == "" || strings.ContainsAny(value, "/ ?#@") {
			return r.refuse()
		}
	case ":scheme":
		if value != "http" && value != "https" {
			return r.refuse()
		}
	}
	return checkOK
}

// validName: an HTTP token, lower case (pseudo-headers start with ':').
func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if i == 0 && c == ':' {
			continue
		}
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/;<=>?@[\\]{}:", c) >= 0 {
			return false
		}
	}
	return true
}

func validValue(v string) bool {
	return !strings.ContainsAny(v, "\r\n\x00")
}

// mutation is how one header mutation is applied.
type mutation struct {
	rules *rules
	// stripCL: the body mode strips content-length, so setting it is
	// skipped silently.
	stripCL bool
	// honourAppendAction reads append_action when append is unset (a
	// switch for Envoy versions that may do so; Envoy's ext_proc ignores it).
	honourAppendAction bool
	// routingAllowed: :method may change (CONTINUE_AND_REPLACE).
	routingAllowed bool
}

// mutationOutcome is what applying a mutation did besides changing the map.
type mutationOutcome struct {
	rejected   int      // refused and ignored (rejected_header_mutations)
	violations []string // accepted by Envoy but a processor bug (strict mode)
}

// apply applies m to h the way Envoy's mutation_utils does: size checks,
// removes in order, sets in order, result check. An error fails the request.
func (mu mutation) apply(h *Headers, m *extprocv3.HeaderMutation) (mutationOutcome, error) {
	var out mutationOutcome
	if m == nil {
		return out, nil
	}
	if len(m.GetRemoveHeaders()) > maxHeadersCount || len(m.GetSetHeaders()) > maxHeadersCount {
		return out, fmt.Errorf("header mutation: more than %d entries", maxHeadersCount)
	}
	for _, k := range m.GetRemoveHeaders() {
		k = strings.ToLower(k)
		if !validName(k) {
			return out, fmt.Errorf("header mutation: invalid header name to remove %q", k)
		}
		switch mu.rules.check(opRemove, k, "") {
		case checkOK:
			h.del(k)
		case checkIgnore:
			out.rejected++
			out.violations = append(out.violations, fmt.Sprintf("remove %q dropped by the mutation rules", k))
		case checkFail:
			return out, fmt.Errorf("header mutation: remove %q refused", k)
		}
	}
	for _, o := range m.GetSetHeaders() {
		hv := o.GetHeader()
		if hv == nil {
			continue
		}
		k := strings.ToLower(hv.GetKey())
		if k == "content-length" && mu.stripCL {
			out.violations = append(out.violations, "content-length set where the body mode strips it (skipped)")
			continue
		}
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return out, fmt.Errorf("header mutation: %q sets both value and raw_value", k)
		}
		if hv.GetValue() != "" {
			out.violations = append(out.violations, fmt.Sprintf("%q set through value, not raw_value: Envoy sets it empty", k))
		}
		v := string(hv.GetRawValue())
		if !validName(k) || !validValue(v) {
			return out, fmt.Errorf("header mutation: invalid header %q", k)
		}
		appendValue := appendFlag(o).GetValue()
		if action := o.GetAppendAction(); appendFlag(o) == nil && action != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			out.violations = append(out.violations, fmt.Sprintf("%q has append_action %v without append: Envoy ignores it", k, action))
			if mu.honourAppendAction && (action == corev3.HeaderValueOption_ADD_IF_ABSENT && h.has(k) ||
				action == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS && !h.has(k)) {
				continue
			}
		}
		op := opSet
		if appendValue && h.has(k) {
			op = opAppend
		}
		res := mu.rules.check(op, k, v)
		if k == ":method" && mu.routingAllowed && res != checkOK && !mu.rules.cfg.GetDisallowAll().GetValue() {
			res = checkOK
		}
		switch res {
		case checkIgnore:
			out.rejected++
			out.violations = append(out.violations, fmt.Sprintf("set %q dropped by the mutation rules", k))
			continue
		case checkFail:
			return out, fmt.Errorf("header mutation: set %q refused", k)
		}
		if appendValue {
			*h = append(*h, Header{k, v})
		} else {
			h.set(k, v)
		}
	}
	if len(*h) > maxHeadersCount || h.size() > maxHeadersBytes {
		return out, fmt.Errorf("header mutation: result over %d headers or %d bytes", maxHeadersCount, maxHeadersBytes)
	}
	return out, nil
}

// matchString evaluates an Envoy StringMatcher.
func matchString(m *matcherv3.StringMatcher, s string) bool {
	cmp := s
	if m.GetIgnoreCase() {
		cmp = strings.ToLower(s)
	}
	low := func(p string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(p)
		}
		return p
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return cmp == low(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(cmp, low(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(cmp, low(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(cmp, low(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		return err == nil && re.MatchString(s)
	}
	return false
}

func matchAny(l *matcherv3.ListStringMatcher, s string) bool {
	for _, m := range l.GetPatterns() {
		if matchString(m, s) {
			return true
		}
	}
	return false
}

// appendFlag is HeaderValueOption.append: deprecated in the API, yet the
// field Envoy's ext_proc (and older ext_authz) reads.
func appendFlag(o *corev3.HeaderValueOption) *wrapperspb.BoolValue {
	//lint:ignore SA1019 see above
	return o.GetAppend()
}

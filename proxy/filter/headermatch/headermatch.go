// Package headermatch evaluates Envoy HeaderMatchers on a request's metadata, the way filters configured by
// Aeraki's APIs read them: a RouteMatch whose header matchers name metadata keys (interface, method, a Dubbo
// attachment, ...), evaluated as Envoy's HeaderUtility::matchHeaders does, since that is what Aeraki's
// filters run. The proxy's router has its own, simpler matchers, compiled from proxy.Config.
package headermatch

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meltemi-mesh/meltemi/codec"
)

type matchKind uint8

const (
	matchPresent matchKind = iota
	matchExact
	matchPrefix
	matchSuffix
	matchContains
	matchRegex
	matchRange
)

// Matcher is one compiled HeaderMatcher.
type Matcher struct {
	key        string
	kind       matchKind
	value      string
	re         *regexp.Regexp // matchRegex
	start, end int64          // matchRange: [start, end)
	// invert negates the result for a present key; present_match false is folded in as an inverted
	// matchPresent.
	invert bool
	// missingAsEmpty reads an absent key as the empty string (treat_missing_header_as_empty).
	missingAsEmpty bool
}

// Matches reports whether md satisfies m.
func (m *Matcher) Matches(md *codec.Metadata) bool {
	v, ok := md.Get(m.key)
	if !ok {
		if !m.missingAsEmpty {
			// In Envoy an absent key satisfies only a matcher that asks for absence: invert_match turns
			// "equals x" into "present and not x", never into "absent or not x".
			return m.kind == matchPresent && m.invert
		}
		v = ""
	}
	var hit bool
	switch m.kind {
	case matchPresent:
		hit = true
	case matchExact:
		hit = v == m.value
	case matchPrefix:
		hit = strings.HasPrefix(v, m.value)
	case matchSuffix:
		hit = strings.HasSuffix(v, m.value)
	case matchContains:
		hit = strings.Contains(v, m.value)
	case matchRegex:
		hit = m.re.MatchString(v)
	case matchRange:
		n, err := strconv.ParseInt(v, 10, 64)
		hit = err == nil && n >= m.start && n < m.end
	}
	return hit != m.invert
}

// Compile compiles a header matcher in every form Envoy accepts but the custom one. Errors start with
// the field at fault, relative to the matcher.
func Compile(h *routev3.HeaderMatcher) (Matcher, error) {
	m := Matcher{key: h.GetName(), invert: h.GetInvertMatch(), missingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	if m.key == "" {
		return m, errors.New("name: required")
	}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		// No value form: the key must be present, as in Envoy.
		m.kind = matchPresent
	case *routev3.HeaderMatcher_PresentMatch:
		m.kind = matchPresent
		if !s.PresentMatch {
			m.invert = !m.invert
		}
	case *routev3.HeaderMatcher_ExactMatch:
		// Envoy reads the deprecated exact_match "" as "present with any value".
		m.kind, m.value = matchExact, s.ExactMatch
		if s.ExactMatch == "" {
			m.kind = matchPresent
		}
	case *routev3.HeaderMatcher_PrefixMatch:
		m.kind, m.value = matchPrefix, s.PrefixMatch
	case *routev3.HeaderMatcher_SuffixMatch:
		m.kind, m.value = matchSuffix, s.SuffixMatch
	case *routev3.HeaderMatcher_ContainsMatch:
		m.kind, m.value = matchContains, s.ContainsMatch
	case *routev3.HeaderMatcher_SafeRegexMatch:
		m.kind = matchRegex
		if m.re, err = compileRegex(s.SafeRegexMatch.GetRegex()); err != nil {
			return m, fmt.Errorf("safeRegexMatch.regex: %w", err)
		}
	case *routev3.HeaderMatcher_RangeMatch:
		m.kind, m.start, m.end = matchRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_StringMatch:
		if err := compileString(&m, s.StringMatch); err != nil {
			return m, err
		}
	default:
		return m, fmt.Errorf("headerMatchSpecifier: %T is not supported", s)
	}
	return m, nil
}

// compileString fills m from a StringMatcher; errors start with "stringMatch". Case-insensitive forms become
// regexes, as in the proxy's router; Envoy ignores ignore_case for safe_regex, and so does this.
func compileString(m *Matcher, sm *matcherv3.StringMatcher) error {
	var err error
	fold := sm.GetIgnoreCase()
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		m.kind, m.value = matchExact, p.Exact
		if fold {
			m.re, err = compileRegex("(?is)" + regexp.QuoteMeta(p.Exact))
		}
	case *matcherv3.StringMatcher_Prefix:
		m.kind, m.value = matchPrefix, p.Prefix
		if fold {
			m.re, err = compileRegex("(?is)" + regexp.QuoteMeta(p.Prefix) + ".*")
		}
	case *matcherv3.StringMatcher_Suffix:
		m.kind, m.value = matchSuffix, p.Suffix
		if fold {
			m.re, err = compileRegex("(?is).*" + regexp.QuoteMeta(p.Suffix))
		}
	case *matcherv3.StringMatcher_Contains:
		m.kind, m.value = matchContains, p.Contains
		if fold {
			m.re, err = compileRegex("(?is).*" + regexp.QuoteMeta(p.Contains) + ".*")
		}
	case *matcherv3.StringMatcher_SafeRegex:
		m.kind = matchRegex
		if m.re, err = compileRegex(p.SafeRegex.GetRegex()); err != nil {
			return fmt.Errorf("stringMatch.safeRegex.regex: %w", err)
		}
	case *matcherv3.StringMatcher_Custom:
		return errors.New("stringMatch.custom: not supported")
	default:
		return errors.New("stringMatch: one of exact, prefix, suffix, contains and safeRegex is required")
	}
	if m.re != nil {
		m.kind = matchRegex
	}
	return err
}

// compileRegex compiles an RE2 regex that must match the whole value, as Envoy's safe_regex does.
func compileRegex(re string) (*regexp.Regexp, error) {
	// Compiled alone first, so that an error quotes the user's regex rather than the anchored one.
	if _, err := regexp.Compile(re); err != nil {
		return nil, fmt.Errorf("bad regex %q: %w", re, err)
	}
	return regexp.Compile("^(?:" + re + ")$")
}

// All is the matchers of one RouteMatch: a request matches when every one holds, so an empty All matches
// every request.
type All []Matcher

// CompileAll compiles the matchers of a RouteMatch. An error names the matcher at fault,
// "metadata[i].<field>: ...", relative to the RouteMatch; every faulty matcher is reported.
func CompileAll(hs []*routev3.HeaderMatcher) (All, error) {
	var out All
	var errs []error
	for i, h := range hs {
		m, err := Compile(h)
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata[%d].%w", i, err))
			continue
		}
		out = append(out, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Matches reports whether md satisfies every matcher of a.
func (a All) Matches(md *codec.Metadata) bool {
	for i := range a {
		if !a[i].Matches(md) {
			return false
		}
	}
	return true
}

package model

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Severity says whether a problem stops something from being served.
type Severity int

const (
	// SeverityError: the object, or the part of it named by the field, is not served.
	SeverityError Severity = iota
	// SeverityWarning: served, but probably not as the author meant.
	SeverityWarning
)

// String is "error" or "warning".
func (s Severity) String() string {
	if s == SeverityWarning {
		return "warning"
	}
	return "error"
}

// Problem is one thing wrong with the config, as a value that the validate command prints and the
// controller logs and counts. Origin and Key locate it; either may be partly unknown (a document
// that is not YAML has no key).
type Problem struct {
	Origin
	Key
	// Field is the path of the field at fault, e.g. spec.ports[1].name; empty for the whole object.
	Field string
	// Message says what is wrong, and for a warning what happens instead.
	Message  string
	Severity Severity
	// Reason says, for problems that leave an object without effect because of other objects, which
	// case it is (ReasonConflicted, ReasonNoHost), so that status conditions can say so; empty for
	// the others.
	Reason Reason
}

// Reason classifies a problem about how an object relates to others.
type Reason string

// The reasons Build gives.
const (
	// ReasonConflicted: another object claims the same thing (a host's MetaRouter, a protocol's
	// ApplicationProtocol) and wins.
	ReasonConflicted Reason = "Conflicted"
	// ReasonNoHost: the object applies to a host that no service of the mesh serves with a
	// meta-protocol port.
	ReasonNoHost Reason = "NoHost"
)

// String formats the problem as "file: kind namespace/name: field: message", the form validate
// prints, with "warning: " before the message of a warning. Parts not known are left out; an
// object with no readable name is shown by its document's position instead, and an object whose
// origin already names it (a cluster object's, "kube:Kind namespace/name") is not named twice.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(": ")
	}
	switch {
	case p.Origin.names(p.Key):
	case p.Name != "":
		b.WriteString(p.Key.String())
		b.WriteString(": ")
	case p.Kind != "" && p.Document > 0:
		fmt.Fprintf(&b, "%s (document %d): ", p.Kind, p.Document)
	case p.Document > 0:
		fmt.Fprintf(&b, "document %d: ", p.Document)
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	if p.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Error lets a problem be returned or wrapped as an error.
func (p Problem) Error() string { return p.String() }

// HasErrors reports whether any problem is an error.
func HasErrors(problems []Problem) bool {
	return slices.ContainsFunc(problems, func(p Problem) bool { return p.Severity == SeverityError })
}

// Count returns the number of errors and of warnings.
func Count(problems []Problem) (errors, warnings int) {
	for _, p := range problems {
		if p.Severity == SeverityError {
			errors++
		} else {
			warnings++
		}
	}
	return errors, warnings
}

// SortProblems orders problems by file and document, keeping the order of those from one document,
// which follows the fields of the object.
func SortProblems(problems []Problem) {
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return cmp.Or(a.Origin.Compare(b.Origin), a.Key.Compare(b.Key))
	})
}

// reporter collects the problems of one object.
type reporter struct {
	meta *Meta
	out  []Problem
}

func (r *reporter) errorf(field, format string, args ...any) {
	r.add(SeverityError, field, fmt.Sprintf(format, args...))
}

func (r *reporter) warnf(field, format string, args ...any) {
	r.add(SeverityWarning, field, fmt.Sprintf(format, args...))
}

// because reports the last problem added as one of a reason.
func (r *reporter) because(reason Reason) {
	r.out[len(r.out)-1].Reason = reason
}

func (r *reporter) add(sev Severity, field, msg string) {
	if r.meta.FieldOf != nil {
		field = r.meta.FieldOf(field)
	}
	r.out = append(r.out, Problem{Origin: r.meta.Origin, Key: r.meta.Key(), Field: field, Message: msg, Severity: sev})
}

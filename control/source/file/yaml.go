package file

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// document is one YAML document of a file and the line it starts on.
type document struct {
	line int
	text []byte
}

// splitDocuments cuts a file at its "---" (and "...") lines, remembering where each part starts so
// that messages can give lines of the file rather than of the part.
func splitDocuments(data []byte) []document {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark some editors write
	var docs []document
	cur := document{line: 1}
	line := 0
	for len(data) > 0 {
		line++
		end := bytes.IndexByte(data, '\n')
		var l []byte
		if end < 0 {
			l, data = data, nil
		} else {
			l, data = data[:end+1], data[end+1:]
		}
		if isSeparator(l) {
			docs = append(docs, cur)
			cur = document{line: line + 1}
			continue
		}
		cur.text = append(cur.text, l...)
	}
	return append(docs, cur)
}

func isSeparator(line []byte) bool {
	s := strings.TrimRight(string(line), "\r\n")
	for _, marker := range []string{"---", "..."} {
		if rest, ok := strings.CutPrefix(s, marker); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			return true
		}
	}
	return false
}

// blank reports whether a document holds nothing but spaces and comments.
func blank(text []byte) bool {
	for l := range bytes.Lines(text) {
		t := bytes.TrimSpace(l)
		if len(t) > 0 && t[0] != '#' {
			return false
		}
	}
	return true
}

// parsedDoc is what one document of a file decoded to.
type parsedDoc struct {
	origin model.Origin
	obj    model.Object // nil unless the document is a good object of a kind the model holds
	key    model.Key    // as far as it could be read
	// bad is true when the document has errors; it is then the object named by key, if any, that
	// turned bad.
	bad      bool
	problems []model.Problem
}

// identified reports whether a bad document still told which object it is.
func (d *parsedDoc) identified() bool { return d.key.Kind != "" && d.key.Name != "" }

// parseFile decodes every document of a file.
func parseFile(path string, data []byte) []parsedDoc {
	var out []parsedDoc
	n := 0
	for _, doc := range splitDocuments(data) {
		if blank(doc.text) {
			continue
		}
		n++
		origin := model.Origin{File: path, Document: n, Line: doc.line}
		js, err := yaml.YAMLToJSONStrict(doc.text)
		if err != nil {
			out = append(out, parsedDoc{origin: origin, bad: true, problems: []model.Problem{{
				Origin: origin, Message: yamlMessage(err.Error(), doc.line),
			}}})
			continue
		}
		if bytes.Equal(js, []byte("null")) {
			continue
		}
		obj, key, problems := model.Decode(origin, js)
		out = append(out, parsedDoc{origin: origin, obj: obj, key: key, bad: model.HasErrors(problems), problems: problems})
	}
	return out
}

var (
	yamlLine   = regexp.MustCompile(`line (\d+)`)
	lineBreaks = regexp.MustCompile(`\s*\n\s*`)
)

// yamlMessage shortens a YAML parser's message and makes its line numbers count from the top of the
// file rather than of the document.
func yamlMessage(msg string, firstLine int) string {
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimSpace(strings.TrimPrefix(msg, "unmarshal errors:"))
	msg = lineBreaks.ReplaceAllString(msg, "; ")
	return "invalid YAML: " + yamlLine.ReplaceAllStringFunc(msg, func(s string) string {
		n, err := strconv.Atoi(strings.TrimPrefix(s, "line "))
		if err != nil {
			return s
		}
		return "line " + strconv.Itoa(n+firstLine-1)
	})
}

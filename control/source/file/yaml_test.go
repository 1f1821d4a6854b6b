package file

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		lines []int    // first line of each non-blank document
		texts []string // their text, trimmed
	}{
		{"one document", "a: 1\nb: 2\n", []int{1}, []string{"a: 1\nb: 2"}},
		{"leading separator", "---\na: 1\n", []int{2}, []string{"a: 1"}},
		{"separators with comments and end markers", "a: 1\n--- # two\nb: 2\n...\n---\nc: 3", []int{1, 3, 6},
			[]string{"a: 1", "b: 2", "c: 3"}},
		{"blank and comment-only documents", "# head\n---\n\n---\na: 1\n---\n# tail\n", []int{5}, []string{"a: 1"}},
		{"a dash line inside a value is not a separator", "a: |\n  ---x\nb: 2\n", []int{1}, []string{"a: |\n  ---x\nb: 2"}},
		{"CRLF line ends", "a: 1\r\n---\r\nb: 2\r\n", []int{1, 3}, []string{"a: 1", "b: 2"}},
		{"byte order mark", "\xef\xbb\xbfa: 1\n", []int{1}, []string{"a: 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lines []int
			var texts []string
			for _, d := range splitDocuments([]byte(tt.in)) {
				if blank(d.text) {
					continue
				}
				lines = append(lines, d.line)
				texts = append(texts, strings.TrimSpace(string(d.text)))
			}
			if !reflect.DeepEqual(lines, tt.lines) || !reflect.DeepEqual(texts, tt.texts) {
				t.Errorf("got lines %v texts %q, want %v %q", lines, texts, tt.lines, tt.texts)
			}
		})
	}
}

func TestYAMLErrorsCountLinesOfTheFile(t *testing.T) {
	data := "apiVersion: v1\nkind: A\n---\napiVersion: v1\nkind: B\nspec: [unclosed\n"
	docs := parseFile("f.yaml", []byte(data))
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2", len(docs))
	}
	bad := docs[1]
	if !bad.bad || bad.origin.Document != 2 || bad.origin.Line != 4 {
		t.Fatalf("second document: %+v", bad)
	}
	if msg := bad.problems[0].Message; !strings.HasPrefix(msg, "invalid YAML: line ") || !strings.Contains(msg, "line 6") {
		t.Errorf("message %q should name a line of the file (6), not of the document", msg)
	}
}

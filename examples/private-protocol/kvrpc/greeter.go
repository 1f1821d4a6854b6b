package kvrpc

import "maps"

// NewGreeter returns the example's service: Greet answers "hello <body>", Echo returns the body and the
// call's headers (the method aside). Every reply carries the server's version in the "version" header, so a
// caller sees which server answered.
func NewGreeter(version string) *Server {
	s := NewServer()
	s.Handle("Greet", func(_ map[string]string, body []byte) (map[string]string, []byte, error) {
		return map[string]string{"version": version}, append([]byte("hello "), body...), nil
	})
	s.Handle("Echo", func(headers map[string]string, body []byte) (map[string]string, []byte, error) {
		out := maps.Clone(headers)
		delete(out, HeaderMethod)
		out["version"] = version
		return out, body, nil
	})
	return s
}

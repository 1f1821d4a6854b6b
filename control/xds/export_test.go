package xds

import "time"

// OnConverged has f called each time a proxy has ACKed the whole config of a model change.
func OnConverged(s *Server, f func(nodeID string, modelVersion uint64, took time.Duration)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.converged = f
}

// OnTranslate has f called before each translation.
func OnTranslate(s *Server, f func()) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	s.translated = f
}

package store

// KeyRevision returns the revision the view holds key ("listener.edge") at,
// and false when the view does not hold it (never written, or deleted).
func (s *Store) KeyRevision(key string) (uint64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byKey[key]
	return e.revision, ok
}

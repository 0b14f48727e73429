package raftstore

// RelayWaiting returns how many heartbeat callers of a credential wait for
// the relay's next call (tests wait for a batch to form).
func (s *Store) RelayWaiting(token string) int {
	if s.relay == nil {
		return 0
	}
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	if g := s.relay.groups[token]; g != nil {
		return len(g.waiting)
	}
	return 0
}

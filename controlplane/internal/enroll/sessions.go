package enroll

import (
	"context"
	"sync"
	"time"
)

// Session is a pending enrollment between Begin and Finish.
type Session struct {
	// SecretHash is SHA-256 of the credential secret; the secret itself is
	// not kept, so a leaked store does not let anyone answer a challenge.
	SecretHash [32]byte
	Facts      Facts
	ExpiresAt  time.Time
}

// SessionStore keeps pending sessions. Take must remove the session it
// returns, atomically, so a challenge can be answered at most once; with
// several control-plane replicas it is backed by the shared database.
type SessionStore interface {
	Put(ctx context.Context, id string, s *Session) error
	// Take returns and deletes the session, or ErrSessionUnknown.
	Take(ctx context.Context, id string) (*Session, error)
}

var _ SessionStore = (*MemorySessions)(nil)

// MemorySessions is a SessionStore in process memory for a single control
// plane node. It holds at most Max sessions (default 10000) and drops
// expired ones as new ones arrive.
type MemorySessions struct {
	Max int
	Now func() time.Time

	mu       sync.Mutex
	sessions map[string]*Session
}

func (m *MemorySessions) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Put stores s under id.
func (m *MemorySessions) Put(_ context.Context, id string, s *Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions == nil {
		m.sessions = make(map[string]*Session)
	}
	max := m.Max
	if max <= 0 {
		max = 10000
	}
	if len(m.sessions) >= max {
		now := m.now()
		for k, v := range m.sessions {
			if !now.Before(v.ExpiresAt) {
				delete(m.sessions, k)
			}
		}
		if len(m.sessions) >= max {
			return ErrTooManySessions
		}
	}
	m.sessions[id] = s
	return nil
}

// Take returns and deletes the session id.
func (m *MemorySessions) Take(_ context.Context, id string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return nil, ErrSessionUnknown
	}
	delete(m.sessions, id)
	return s, nil
}

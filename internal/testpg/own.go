package testpg

import (
	"errors"
	"testing"
)

// Server is a PostgreSQL server of one test's own, which the test may stop
// and start again on the same data: for tests of what a database restart
// does to its clients. Tests that only need a database use Start.
type Server struct {
	t testing.TB
	s *server
}

// Own starts a new server for t, stopped and removed when t ends. A missing
// PostgreSQL is a skip outside CI and a failure in CI, as for Start.
// TG_TEST_DATABASE_URL does not apply: the test must control the server.
func Own(t testing.TB) *Server {
	t.Helper()
	s, err := startServer()
	if errors.Is(err, errMissing) {
		unavailable(t, err.Error())
		return nil
	}
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	t.Cleanup(s.stop)
	return &Server{t: t, s: s}
}

// Database creates a new, empty database on the server and returns its DSN.
func (p *Server) Database() string {
	p.t.Helper()
	dsn, err := createDatabase(p.t, p.s.admin, p.s.dsn)
	if err != nil {
		p.t.Fatalf("testpg: %v", err)
	}
	return dsn
}

// Stop shuts the server down (fast shutdown: sessions aborted, a
// checkpoint) and keeps its data.
func (p *Server) Stop() {
	p.t.Helper()
	p.s.halt()
}

// Start runs the server again on its data and waits until it answers.
func (p *Server) Start() {
	p.t.Helper()
	if err := p.s.run(); err != nil {
		p.t.Fatalf("testpg: restart: %v", err)
	}
}

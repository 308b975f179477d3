package trainer

import (
	"database/sql"
	"errors"
	"log/slog"
	"time"
)

// Config configures the trainer.
type Config struct {
	// DB is the control plane's database; Backend is "sqlite" or
	// "postgres". The trainer keeps its own tables there (trainer_*).
	DB      *sql.DB
	Backend string
	Host    Host
	// Models are the base models clients may fine-tune, by name.
	Models map[string]Factory
	// Workers run futures in this process (default 1; 0 after defaults
	// only if negative: a replica that serves the API and runs nothing).
	Workers int
	// ResultTTL is how long a finished future's result is kept (default
	// 1 h); its id is answered "expired" for a week after.
	ResultTTL time.Duration
	// Lease is how long a worker holds a future without renewing it
	// (default 30 s): a future whose worker died runs again after it.
	Lease time.Duration
	// MaxBodyBytes bounds a request body (default 32 MiB).
	MaxBodyBytes int64
	// MaxExamples bounds the examples in one request (default 65536).
	MaxExamples int
	Logger      *slog.Logger
	Now         func() time.Time
}

func (c *Config) setDefaults() {
	if c.Workers == 0 {
		c.Workers = 1
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = time.Hour
	}
	if c.Lease == 0 {
		c.Lease = 30 * time.Second
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 32 << 20
	}
	if c.MaxExamples == 0 {
		c.MaxExamples = 65536
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a configuration the trainer cannot run with.
func (c *Config) Validate() error {
	switch {
	case c.DB == nil:
		return errors.New("trainer: a database is required")
	case c.Host == nil:
		return errors.New("trainer: a host (the control plane) is required")
	case len(c.Models) == 0:
		return errors.New("trainer: no base models")
	case c.ResultTTL < time.Second || c.Lease < time.Second:
		return errors.New("trainer: result TTL and lease must be at least 1s")
	}
	return nil
}

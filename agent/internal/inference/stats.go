package inference

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds, in seconds, of the latency
// histogram: 50 µs to 10 s, about three per decade, so a 0.5 ms model and
// a 2 s one are both resolved.
var LatencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// ModelKey identifies a loaded model in the statistics.
type ModelKey struct {
	Name, Version, Backend string
}

// Stats records inferences per model. Observe is lock-free apart from the
// first call for a model; Snapshot and the Prometheus collector read the
// counters without stopping inferences.
type Stats struct {
	mu     sync.RWMutex
	models map[ModelKey]*modelStats
	loaded map[ModelKey]bool
}

type modelStats struct {
	count, errors atomic.Uint64
	sumNanos      atomic.Uint64
	buckets       []atomic.Uint64 // len(LatencyBuckets)+1, the last is +Inf
}

// NewStats returns empty statistics.
func NewStats() *Stats {
	return &Stats{models: map[ModelKey]*modelStats{}, loaded: map[ModelKey]bool{}}
}

func (s *Stats) model(k ModelKey) *modelStats {
	s.mu.RLock()
	m := s.models[k]
	s.mu.RUnlock()
	if m != nil {
		return m
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m = s.models[k]; m == nil {
		m = &modelStats{buckets: make([]atomic.Uint64, len(LatencyBuckets)+1)}
		s.models[k] = m
	}
	return m
}

// Observe records one inference of model k that took d; failed marks an
// error (counted in both the total and the errors).
func (s *Stats) Observe(k ModelKey, d time.Duration, failed bool) {
	m := s.model(k)
	m.count.Add(1)
	if failed {
		m.errors.Add(1)
	}
	m.sumNanos.Add(uint64(max(d, 0)))
	sec := d.Seconds()
	i, _ := slices.BinarySearch(LatencyBuckets, sec)
	m.buckets[i].Add(1)
}

// SetLoaded marks model k as loaded (serving) or not. Counters of a model
// that is unloaded are kept, as Prometheus counters must be.
func (s *Stats) SetLoaded(k ModelKey, loaded bool) {
	s.model(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if loaded {
		s.loaded[k] = true
	} else {
		delete(s.loaded, k)
	}
}

// ModelSnapshot is one model's statistics at a moment.
type ModelSnapshot struct {
	ModelKey
	Loaded  bool
	Count   uint64
	Errors  uint64
	Sum     time.Duration
	Buckets []uint64 // cumulative counts per LatencyBuckets bound, then +Inf
}

// Quantile estimates the q-quantile of the latency from the histogram
// (linear inside the bucket, as Prometheus' histogram_quantile does); 0
// without observations.
func (m ModelSnapshot) Quantile(q float64) time.Duration {
	if len(m.Buckets) == 0 {
		return 0
	}
	total := m.Buckets[len(m.Buckets)-1]
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	for i, c := range m.Buckets {
		if float64(c) < rank {
			continue
		}
		if i == len(LatencyBuckets) { // +Inf: the highest finite bound
			return seconds(LatencyBuckets[i-1])
		}
		lo, below := 0.0, uint64(0)
		if i > 0 {
			lo, below = LatencyBuckets[i-1], m.Buckets[i-1]
		}
		in := c - below
		if in == 0 {
			return seconds(LatencyBuckets[i])
		}
		return seconds(lo + (LatencyBuckets[i]-lo)*(rank-float64(below))/float64(in))
	}
	return seconds(LatencyBuckets[len(LatencyBuckets)-1])
}

func seconds(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }

// Snapshot returns every model's statistics, sorted by name and version.
func (s *Stats) Snapshot() []ModelSnapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]ModelSnapshot, 0, len(s.models))
	for k, m := range s.models {
		snap := ModelSnapshot{ModelKey: k, Loaded: s.loaded[k], Count: m.count.Load(), Errors: m.errors.Load(),
			Sum: time.Duration(m.sumNanos.Load()), Buckets: make([]uint64, len(m.buckets))}
		var cum uint64
		for i := range m.buckets {
			cum += m.buckets[i].Load()
			snap.Buckets[i] = cum
		}
		out = append(out, snap)
	}
	slices.SortFunc(out, func(a, b ModelSnapshot) int {
		if a.Name != b.Name {
			return cmpString(a.Name, b.Name)
		}
		if a.Version != b.Version {
			return cmpString(a.Version, b.Version)
		}
		return cmpString(a.Backend, b.Backend)
	})
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

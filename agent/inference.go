package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tensorguard/tensorguardflow/agent/internal/inferapi"
	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/agent/internal/install"
	"github.com/tensorguard/tensorguardflow/agent/internal/plancache"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
)

// backends returns the inference backends install.runtime allows, most
// preferred first: TensorRT (where the agent was built with it and a GPU
// answers; its plans cached under the TPM), then ONNX Runtime.
func (a *Agent) backends(r *resources) []inference.Backend {
	cfg := a.cfg.Load()
	ort := &inference.ONNXRuntime{
		Library: cfg.Install.ONNXRuntimeLibrary,
		Options: onnxruntime.Options{IntraOpThreads: cfg.Install.ONNXRuntimeThreads},
	}
	trt := &inference.TensorRT{
		Logger: a.log.With("subsystem", "tensorrt"),
		OpenCache: func() (*plancache.Cache, error) {
			if r.tpm == nil {
				return nil, errors.New("no TPM to seal the plan cache's key")
			}
			return plancache.Open(cfg.PlanCacheDir(), r.tpm, plancache.Options{
				MaxBytes: cfg.Install.PlanCacheBytes, Logger: a.log.With("subsystem", "plancache")})
		},
	}
	switch cfg.Install.Runtime {
	case RuntimeAuto:
		return []inference.Backend{trt, ort}
	case RuntimeONNX:
		return []inference.Backend{ort}
	case RuntimeTensorRT:
		return []inference.Backend{trt}
	}
	return nil
}

// servingSource adapts the installer to the inference API.
type servingSource struct{ in *install.Installer }

func (s servingSource) WithServing(fn func(inferapi.Served) error) error {
	err := s.in.WithServing(func(slot install.Slot, m install.Model) error {
		return fn(inferapi.Served{Name: slot.Name, Version: slot.Version, Model: m})
	})
	if errors.Is(err, install.ErrNoModel) {
		return inferapi.ErrNoModel
	}
	return err
}

// listeners opens the inference API's and the metrics endpoint's
// listeners, so Run can say READY only once they accept connections. The
// caller closes them (Serve does).
type listeners struct {
	api     []net.Listener
	metrics net.Listener
}

func (l *listeners) close() {
	for _, x := range l.api {
		x.Close()
	}
	if l.metrics != nil {
		l.metrics.Close()
	}
}

func (a *Agent) openListeners() (*listeners, error) {
	cfg := a.cfg.Load()
	l := &listeners{}
	if path := cfg.SocketPath(); path != "" {
		u, err := inferapi.ListenUnix(path, cfg.Inference.SocketGroup)
		if err != nil {
			return nil, err
		}
		l.api = append(l.api, u)
	}
	if cfg.Inference.Listen != "" {
		t, err := inferapi.ListenLoopback(cfg.Inference.Listen)
		if err != nil {
			l.close()
			return nil, err
		}
		l.api = append(l.api, t)
	}
	if cfg.Metrics.Listen != "" {
		m, err := inferapi.ListenLoopback(cfg.Metrics.Listen)
		if err != nil {
			l.close()
			return nil, err
		}
		l.metrics = m
	}
	return l, nil
}

// serveInference runs the inference API until ctx ends.
func (a *Agent) serveInference(ctx context.Context, ls []net.Listener, in *install.Installer) error {
	cfg := a.cfg.Load()
	h := inferapi.NewHandler(inferapi.Config{
		Source:        servingSource{in},
		Stats:         a.stats,
		MaxBodyBytes:  cfg.Inference.MaxBodyBytes,
		ServerVersion: Version,
		Logger:        a.log.With("subsystem", "inference-api"),
	})
	return inferapi.Serve(ctx, h, 5*time.Second, ls...)
}

// serveMetrics serves Prometheus metrics on loopback until ctx ends: the
// inference statistics, thermal zones, and the Go runtime's and process's
// collectors.
func (a *Agent) serveMetrics(ctx context.Context, l net.Listener) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.stats.Collector(a.opts.thermalRoot),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return inferapi.Serve(ctx, mux, 5*time.Second, l)
}

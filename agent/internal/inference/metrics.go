package inference

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names the agent exports.
var (
	descInferences = prometheus.NewDesc("tg_inference_requests_total",
		"Inferences run, by model.", []string{"model", "version", "backend"}, nil)
	descErrors = prometheus.NewDesc("tg_inference_errors_total",
		"Inferences that failed (bad input or a backend error), by model.", []string{"model", "version", "backend"}, nil)
	descLatency = prometheus.NewDesc("tg_inference_duration_seconds",
		"Time spent in the backend per inference.", []string{"model", "version", "backend"}, nil)
	descLoaded = prometheus.NewDesc("tg_model_loaded",
		"1 for the model serving now, 0 for one served before.", []string{"model", "version", "backend"}, nil)
	descTemp = prometheus.NewDesc("tg_device_temperature_celsius",
		"Thermal zone temperatures.", []string{"zone", "type"}, nil)
)

// Collector exports s, and the thermal zones under thermalRoot ("" for
// none), as Prometheus metrics. The values are read at each scrape.
func (s *Stats) Collector(thermalRoot string) prometheus.Collector {
	return &collector{s: s, thermal: thermalRoot}
}

type collector struct {
	s       *Stats
	thermal string
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInferences, descErrors, descLatency, descLoaded, descTemp} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.s.Snapshot() {
		labels := []string{m.Name, m.Version, m.Backend}
		ch <- prometheus.MustNewConstMetric(descInferences, prometheus.CounterValue, float64(m.Count), labels...)
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(m.Errors), labels...)
		buckets := make(map[float64]uint64, len(LatencyBuckets))
		for i, ub := range LatencyBuckets {
			buckets[ub] = m.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(descLatency, m.Count, m.Sum.Seconds(), buckets, labels...)
		loaded := 0.0
		if m.Loaded {
			loaded = 1
		}
		ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, loaded, labels...)
	}
	if c.thermal == "" {
		return
	}
	for _, z := range ReadThermal(c.thermal) {
		ch <- prometheus.MustNewConstMetric(descTemp, prometheus.GaugeValue, z.Celsius, z.Name, z.Type)
	}
}

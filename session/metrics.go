package session

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the manager's Prometheus metrics.
type Metrics struct {
	prompts        *prometheus.CounterVec
	turns          *prometheus.CounterVec
	events         *prometheus.CounterVec
	activeSessions prometheus.Gauge
	sandboxStart   *prometheus.HistogramVec
	turnSeconds    prometheus.Histogram
	decisions      *prometheus.CounterVec
	leaseLost      prometheus.Counter
	storeOutages   prometheus.Counter
	bufferedEvents prometheus.Gauge
}

// NewMetrics makes the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		prompts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_prompts_total", Help: "Prompts submitted, by result.",
		}, []string{"result"}),
		turns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_turns_total", Help: "Turns ended, by outcome (success, error, failed).",
		}, []string{"outcome"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_relay_events_total", Help: "Relay events logged, by kind.",
		}, []string{"kind"}),
		activeSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nightona_sessions_driven", Help: "Sessions this replica is driving.",
		}),
		sandboxStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nightona_sandbox_start_seconds", Help: "Time to create or wake a sandbox until its relay answers.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"provider", "how"}),
		turnSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nightona_turn_seconds", Help: "Time from sending a prompt to the end of its turn.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 12),
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_permission_decisions_total", Help: "Permission requests answered by people, by behavior.",
		}, []string{"behavior"}),
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nightona_session_leases_lost_total", Help: "Sessions this replica stopped driving because another took them over.",
		}),
		storeOutages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nightona_store_outages_total", Help: "Times a session started buffering events because the store was away.",
		}),
		bufferedEvents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nightona_buffered_events", Help: "Relay events held in memory until the store answers again.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.prompts, m.turns, m.events, m.activeSessions, m.sandboxStart, m.turnSeconds, m.decisions, m.leaseLost, m.storeOutages, m.bufferedEvents)
	}
	return m
}

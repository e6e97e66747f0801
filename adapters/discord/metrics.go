package discord

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests   *prometheus.CounterVec
	limited    *prometheus.CounterVec
	waited     prometheus.Histogram
	reconnects prometheus.Counter
	events     *prometheus.CounterVec
	writes     *prometheus.CounterVec
}

// newMetrics makes the adapter's metrics and registers them with reg (nil: kept but not
// exported).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_discord_requests_total", Help: "Discord REST requests, by method, route and status (0: no answer).",
		}, []string{"method", "route", "status"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_discord_rate_limited_total", Help: "429 answers from Discord, by scope (user, global, shared).",
		}, []string{"scope"}),
		waited: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nightona_discord_rate_wait_seconds", Help: "Time REST calls waited for a rate-limit budget.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30},
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nightona_discord_gateway_reconnects_total", Help: "Gateway connections lost and made again.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_discord_gateway_events_total", Help: "Gateway dispatches received, by event.",
		}, []string{"event"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_discord_thread_writes_total", Help: "Messages the bot posted, edited or deleted to show sessions.",
		}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.limited, m.waited, m.reconnects, m.events, m.writes)
	}
	return m
}

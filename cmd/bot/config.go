package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// config is the bot's configuration, read from environment variables (see the README for
// each one). Only run reads the environment; everything else is handed its part.
type config struct {
	Addr           string
	PublicURL      string
	DataDir        string
	Secret         []byte
	SecretRandom   bool
	Admins         []string
	DevCommand     string
	RedisURL       string
	RedisPrefix    string
	Sandbox        string
	AnthropicKey   string
	AnthropicURL   string
	Claude         string
	RelayBinary    string
	Template       string
	PermissionMode string
	MaxPromptBytes int
	DrainTimeout   time.Duration
	LeaseTTL       time.Duration
	IdleTimeout    time.Duration
	Retention      time.Duration
	ReplicaID      string
	Detach         bool
	PoolSize       int
	PoolMaxAge     time.Duration
	LogLevel       slog.Level
	LogFormat      string
	DaytonaKey     string
	DaytonaURL     string
	DaytonaTarget  string
	Snapshot       string
	Workspace      string
	LinkTTL        time.Duration
	StartTimeout   time.Duration
}

// loadConfig reads the configuration through getenv and checks it. Every problem is reported,
// not just the first.
func loadConfig(getenv func(string) string) (*config, error) {
	c := &config{
		Addr:           or(getenv("NIGHTONA_ADDR"), "127.0.0.1:8080"),
		PublicURL:      strings.TrimRight(getenv("NIGHTONA_PUBLIC_URL"), "/"),
		DataDir:        or(getenv("NIGHTONA_DATA_DIR"), ".nightona"),
		RedisURL:       getenv("REDIS_URL"),
		RedisPrefix:    or(getenv("NIGHTONA_REDIS_PREFIX"), "nightona:"),
		AnthropicKey:   getenv("ANTHROPIC_API_KEY"),
		AnthropicURL:   getenv("ANTHROPIC_BASE_URL"),
		Claude:         getenv("NIGHTONA_CLAUDE"),
		RelayBinary:    getenv("NIGHTONA_RELAY_BIN"),
		Template:       getenv("NIGHTONA_TEMPLATE"),
		PermissionMode: or(getenv("NIGHTONA_PERMISSION_MODE"), "acceptEdits"),
		LogFormat:      or(getenv("NIGHTONA_LOG_FORMAT"), "text"),
		DaytonaKey:     getenv("DAYTONA_API_KEY"),
		DaytonaURL:     or(getenv("DAYTONA_API_URL"), "https://app.daytona.io/api"),
		DaytonaTarget:  getenv("DAYTONA_TARGET"),
		Snapshot:       getenv("DAYTONA_SNAPSHOT"),
		Workspace:      getenv("DAYTONA_WORKSPACE"),
		DevCommand:     or(getenv("NIGHTONA_DEV_COMMAND"), "npm run dev"), // the starter template's
	}
	if c.DevCommand == "off" {
		c.DevCommand = ""
	}
	var errs []error
	if s := getenv("NIGHTONA_SECRET"); s != "" {
		if len(s) < 32 {
			errs = append(errs, errors.New("NIGHTONA_SECRET must be at least 32 characters"))
		}
		c.Secret = []byte(s)
	} else {
		c.Secret = make([]byte, 32)
		if _, err := rand.Read(c.Secret); err != nil {
			errs = append(errs, fmt.Errorf("make a secret: %w", err))
		}
		c.SecretRandom = true
	}
	for _, a := range strings.Split(getenv("NIGHTONA_ADMINS"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			if !strings.Contains(a, ":") {
				errs = append(errs, fmt.Errorf("NIGHTONA_ADMINS: %q should be platform:user, like slack:U123 or discord:456", a))
			}
			c.Admins = append(c.Admins, a)
		}
	}
	c.Sandbox = getenv("NIGHTONA_SANDBOX")
	if c.Sandbox == "" {
		c.Sandbox = "local"
		if c.DaytonaKey != "" {
			c.Sandbox = "daytona"
		}
	}
	switch c.Sandbox {
	case "local":
	case "daytona":
		if c.DaytonaKey == "" {
			errs = append(errs, errors.New("NIGHTONA_SANDBOX=daytona needs DAYTONA_API_KEY (create one in Daytona's dashboard under API Keys)"))
		}
		if c.AnthropicKey == "" {
			errs = append(errs, errors.New("NIGHTONA_SANDBOX=daytona needs ANTHROPIC_API_KEY: the offline scripted model runs inside the bot, where a cloud sandbox cannot reach it"))
		}
		if u, err := url.Parse(c.DaytonaURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("DAYTONA_API_URL must be an http(s) URL, not %q", c.DaytonaURL))
		}
	default:
		errs = append(errs, fmt.Errorf("NIGHTONA_SANDBOX must be local or daytona, not %q", c.Sandbox))
	}
	switch c.PermissionMode {
	case "default", "acceptEdits", "plan", "bypassPermissions":
	default:
		errs = append(errs, fmt.Errorf("NIGHTONA_PERMISSION_MODE must be default, acceptEdits, plan or bypassPermissions, not %q", c.PermissionMode))
	}
	if v := getenv("NIGHTONA_POOL_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			errs = append(errs, fmt.Errorf("NIGHTONA_POOL_SIZE must be a number of sandboxes from 0 to 100, not %q", v))
		}
		c.PoolSize = n
	}
	c.MaxPromptBytes = 32 << 10
	if v := getenv("NIGHTONA_MAX_PROMPT_BYTES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("NIGHTONA_MAX_PROMPT_BYTES must be a positive number of bytes, not %q", v))
		}
		c.MaxPromptBytes = n
	}
	durations := []struct {
		name string
		dst  *time.Duration
		def  time.Duration
		off  bool // "off" is allowed, meaning never
	}{
		{"NIGHTONA_DRAIN_TIMEOUT", &c.DrainTimeout, 30 * time.Second, false},
		{"NIGHTONA_LEASE_TTL", &c.LeaseTTL, 15 * time.Second, false},
		{"NIGHTONA_IDLE_TIMEOUT", &c.IdleTimeout, 30 * time.Minute, true},
		{"NIGHTONA_CLOSED_RETENTION", &c.Retention, 7 * 24 * time.Hour, false},
		{"NIGHTONA_POOL_MAX_AGE", &c.PoolMaxAge, time.Hour, false},
		{"NIGHTONA_LINK_TTL", &c.LinkTTL, 7 * 24 * time.Hour, false},
		{"NIGHTONA_START_TIMEOUT", &c.StartTimeout, 3 * time.Minute, false},
	}
	for _, d := range durations {
		*d.dst = d.def
		v := getenv(d.name)
		switch {
		case v == "":
		case v == "off" && d.off:
			*d.dst = -1
		default:
			n, err := time.ParseDuration(v)
			if err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("%s must be a duration like 30s or 2h%s, not %q", d.name, map[bool]string{true: " (or off)"}[d.off], v))
			}
			*d.dst = n
		}
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, errors.New("NIGHTONA_LEASE_TTL must be at least 1s"))
	}
	c.ReplicaID = getenv("NIGHTONA_REPLICA_ID")
	if c.ReplicaID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.ReplicaID = fmt.Sprintf("%s-%d-%x", host, os.Getpid(), b)
	}
	// Local sandboxes outlive the bot when sessions do (an outside Redis): a restarted bot, or
	// another replica, then carries their turns on.
	c.Detach = c.RedisURL != ""
	switch v := getenv("NIGHTONA_LOCAL_DETACH"); v {
	case "":
	case "1", "true", "yes":
		c.Detach = true
	case "0", "false", "no":
		c.Detach = false
	default:
		errs = append(errs, fmt.Errorf("NIGHTONA_LOCAL_DETACH must be true or false, not %q", v))
	}
	if err := c.LogLevel.UnmarshalText([]byte(or(getenv("NIGHTONA_LOG_LEVEL"), "info"))); err != nil {
		errs = append(errs, fmt.Errorf("NIGHTONA_LOG_LEVEL must be debug, info, warn or error"))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("NIGHTONA_LOG_FORMAT must be text or json, not %q", c.LogFormat))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	return c, nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

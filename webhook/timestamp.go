package webhook

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// checkTimestamp refuses a request whose signed timestamp (Unix seconds) is further than
// tolerance from now: a captured request cannot be replayed later.
func checkTimestamp(ts string, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("bad timestamp")
	}
	if off := now.Sub(time.Unix(sec, 0)); off > tolerance || off < -tolerance {
		return fmt.Errorf("stale timestamp (%s off)", off.Round(time.Second))
	}
	return nil
}

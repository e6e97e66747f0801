package session

import (
	"slices"
	"time"
)

// State is where a session is in its life.
type State string

// States.
//
//	new       the record exists; no sandbox yet
//	starting  a sandbox is being created or woken
//	idle      the sandbox is up and no turn is running
//	running   Claude Code is working on a turn
//	stopped   the sandbox is stopped (idle timeout, shutdown, or its relay died); the next
//	          prompt wakes it
//	failed    the sandbox could not be started; the next prompt tries again
//	closed    destroyed; the record expires and the thread starts afresh
const (
	StateNew      State = "new"
	StateStarting State = "starting"
	StateIdle     State = "idle"
	StateRunning  State = "running"
	StateStopped  State = "stopped"
	StateFailed   State = "failed"
	StateClosed   State = "closed"
)

// from lists, for each state, the states a session may enter it from. Moving to the state a
// session is already in changes nothing and is not recorded.
var from = map[State][]State{
	StateStarting: {StateNew, StateStopped, StateFailed, StateIdle},
	StateIdle:     {StateStarting, StateRunning},
	StateRunning:  {StateIdle},
	StateStopped:  {StateStarting, StateIdle, StateRunning},
	StateFailed:   {StateNew, StateStarting, StateStopped},
	StateClosed:   {StateNew, StateStarting, StateIdle, StateRunning, StateStopped, StateFailed},
}

// AllowedFrom returns the states a session may move to to from.
func AllowedFrom(to State) []State { return slices.Clone(from[to]) }

// Active reports whether a session in state s has a sandbox that is up or coming up, and so
// needs a replica to drive it.
func (s State) Active() bool {
	return s == StateStarting || s == StateIdle || s == StateRunning
}

// Transition is one recorded change of state.
type Transition struct {
	From  State     `json:"from"`
	To    State     `json:"to"`
	Cause string    `json:"cause"`
	At    time.Time `json:"at"`
}

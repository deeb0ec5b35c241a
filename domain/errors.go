// Package domain is anchorage's write model: it validates commands, folds an aggregate's events into its state
// and decides which events a command produces. It does no I/O of its own; it reaches the event log and the
// clock through the ports in ports.go.
package domain

import (
	"errors"
	"fmt"
)

// Error kinds. Every error a command returns wraps one of them (or is an internal failure).
var (
	ErrInvalid          = errors.New("invalid")
	ErrUnauthorized     = errors.New("unauthorized")
	ErrForbidden        = errors.New("forbidden")
	ErrNotFound         = errors.New("not found")
	ErrConflict         = errors.New("conflict")
	ErrInsufficientFund = errors.New("insufficient funds")
	ErrUnavailable      = errors.New("unavailable")
)

// Error is an error safe to show to the caller: Reason is a stable UPPER_SNAKE machine code and Msg says what
// to fix.
type Error struct {
	Kind   error
	Reason string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

// Errorf builds an *Error with the default reason of its kind.
func Errorf(kind error, format string, a ...any) error {
	return &Error{Kind: kind, Reason: defaultReason(kind), Msg: fmt.Sprintf(format, a...)}
}

// ReasonErrorf builds an *Error with a specific reason code.
func ReasonErrorf(kind error, reason, format string, a ...any) error {
	return &Error{Kind: kind, Reason: reason, Msg: fmt.Sprintf(format, a...)}
}

func defaultReason(kind error) string {
	switch kind {
	case ErrInvalid:
		return "BAD_REQUEST"
	case ErrUnauthorized:
		return "UNAUTHORIZED"
	case ErrForbidden:
		return "FORBIDDEN"
	case ErrNotFound:
		return "NOT_FOUND"
	case ErrConflict:
		return "CONCURRENT_MODIFICATION"
	case ErrInsufficientFund:
		return "INSUFFICIENT_FUNDS"
	case ErrUnavailable:
		return "SERVICE_UNAVAILABLE"
	}
	return "INTERNAL_SERVER_ERROR"
}

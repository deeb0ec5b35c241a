package kubo

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/ipfs/kubo/client/rpc"
)

// rpcError is what client/rpc returns for an error the daemon reports (HTTP 500 with a JSON Message).
type rpcError = rpc.Error

// NotPinnedMessage is the message of the error Kubo returns from pin/rm for a CID that is not pinned, or only
// indirectly.
const NotPinnedMessage = "not pinned or pinned indirectly"

// IsNotPinned reports whether err is the daemon saying that a CID is not (directly or recursively) pinned.
func IsNotPinned(err error) bool {
	return rpcMessageContains(err, NotPinnedMessage)
}

// IsTimeout reports whether err is a deadline expiring: the caller's ctx deadline (the usual case, e.g. a
// pin of content no reachable peer provides), a network timeout, or the daemon reporting its own deadline.
// A cancelled ctx is not a timeout.
func IsTimeout(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// The daemon's own deadline, or one reported through a stream trailer (plain text by then).
	return strings.Contains(err.Error(), context.DeadlineExceeded.Error())
}

// IsUnavailable reports whether err means the daemon could not be reached or went away mid-request
// (connection refused, reset or closed, unreachable host, failed dial): the operation did not fail on its
// merits and should be retried later, not recorded as failed. A dial that timed out is both unavailable and
// a timeout; test IsUnavailable first.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	for _, errno := range []syscall.Errno{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE,
		syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.EHOSTDOWN, syscall.ENETDOWN,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	// The daemon closed the connection before answering, or in the middle of a streamed answer (it was
	// killed or crashed mid-request).
	var ue *url.Error
	if (errors.As(err, &ue) && errors.Is(ue.Err, io.EOF)) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	// The daemon is shutting down (SIGTERM, `ipfs shutdown`): requests in flight and those that arrive
	// before its API closes fail with the errors of its closing subsystems.
	var re *rpcError
	if errors.As(err, &re) {
		for _, s := range shutdownMessages {
			if strings.Contains(re.Message, s) {
				return true
			}
		}
	}
	return false
}

// shutdownMessages are what a stopping daemon answers: a pin waiting on bitswap fails with "promise channel
// was closed", later requests with "pinner closed" (both measured with Kubo v0.43.0); the others come from
// the repo, datastore and request contexts being closed. A "context canceled" from the daemon (not from the
// caller's ctx, which client/rpc reports as a transport error) means the daemon cancelled the request.
var shutdownMessages = []string{
	"promise channel was closed",
	"pinner closed",
	"datastore closed",
	"repo is closed",
	"shutting down",
	"context canceled",
}

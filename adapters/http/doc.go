// Package httpapi is anchorage's HTTP front end: the IPFS Pinning Services API v1.0.0 served at the root (so
// users configure http://host:port as the endpoint and Kubo's `ipfs pin remote` works), anchorage's own API
// under /v1/, and the operational endpoints /healthz, /readyz and /metrics.
//
// Writes go to a PinCommander (the domain service, which appends events); reads come from a
// projections.PinReader. After a write the handler waits, bounded by Config.ReadYourWritesTimeout, until the
// pins projection has applied the write's stream sequence, so that a client that GETs right after a 202 sees
// its write (pinning-api.md §10.4). If the projection stalls the write is still durable: POST answers 202 with
// the PinStatus built from the event (status queued), DELETE answers 202, and the timeout is logged and
// counted in anchorage_http_read_your_writes_timeouts_total.
//
// Decisions where the spec is silent (pinning-api.md §10), as implemented here:
//
//   - GET /pins without a status parameter lists only pinned objects, unless cid or name is given, in which case
//     every status matches. status=any is an extension meaning all four statuses. status and cid accept both the
//     comma-separated form and repeated parameters.
//   - created is emitted in UTC with exactly three fractional digits (2006-01-02T15:04:05.000Z). before and after
//     are exclusive and accept any RFC 3339 form (0 to 9 fractional digits, Z or a numeric offset, and a space
//     where an unencoded '+' arrived).
//   - origins are hints: entries of the wrong type or that do not parse as multiaddrs are skipped, at most 20
//     are kept, and they never fail a request.
//   - meta: at most 64 keys, key ≤ 128 bytes, value ≤ 1024 bytes, whole object ≤ 16 KiB, values are strings.
//   - Errors are the spec's Failure JSON. 409 is used only for INSUFFICIENT_FUNDS (an org over its quota); an
//     optimistic-concurrency conflict that survived the retries is 412 CONCURRENT_MODIFICATION.
//   - Pins of another org look exactly like missing ones (404). A requestid that is not an anchorage id (a UUID)
//     is 404 without touching anything.
//   - Scopes: reads need pins:read, writes need pins:write (403 FORBIDDEN otherwise).
package httpapi

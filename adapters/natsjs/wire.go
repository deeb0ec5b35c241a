package natsjs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/anchorage-pin/anchorage/events"
)

// The wire read: a long read of the stream (a rebuild, a raw replay, a node's replay) pulls its consumer's
// messages over a NATS connection of its own and parses the client protocol itself, instead of through the NATS
// client's subscription.
//
// Why: the NATS client builds a message for every delivery, copies its subject, reply and body into fresh
// allocations and parses every header into a map (the stored events carry five or six). Reading a million
// events that way cost the reading process 5.2-6.8 µs of CPU per event, about as much as the server spends
// sending it; with both processes on two cores the read ran at 140-180k events/s. The wire read copies each
// message once into a shared slab, reads its position from the ack subject and leaves the headers unparsed
// until someone asks for them: 1.7 µs per event, and the same read ran at 310k events/s.
//
// It is an optimisation only: it pulls from the very consumer the ordered read created, checks that the
// consumer's sequence has no gap, and at the first thing it does not expect (an unsupported connection, a
// protocol error, a status other than a heartbeat or an expired pull, a gap, a stall) it stops, and the ordered
// consumer reads on from the message after the last one it took.

// Wire modes of an EventLog (tests choose; the default takes the wire for reads of wireMinPending or more).
const (
	wireAuto = iota
	wireAlways
	wireNever
)

// wireMinPending is how many messages a read must have pending before it takes the wire: a smaller read is
// over before a connection of its own would pay off.
const wireMinPending = 2000

const (
	wirePull     = 4096             // messages per pull request; two are outstanding
	wireExpires  = 30 * time.Second // a pull request's life on the server
	wireStall    = 30 * time.Second // no byte for this long ends the wire read
	wireSlabSize = 1 << 20          // bodies and headers are copied into slabs of this size
	// wireSubjectSize is room for a batch's subjects per message: anchorage's are up to 111 bytes
	// (place.<node>.<org>.<request>); a longer one only makes the buffer grow.
	wireSubjectSize = 112
)

// errWireUnsupported: the log's connection is of a kind the wire read does not speak (TLS, nkeys, JWTs,
// websockets, a custom dialer, ...); the ordered consumer reads instead.
var errWireUnsupported = errors.New("connection not supported by the wire read")

// errLogClosed ends a wire read whose log's connection closed under it.
var errLogClosed = errors.New("natsjs: read: the event log's connection closed")

// wireError is a failure of the wire read itself: the ordered consumer can go on where it stopped.
type wireError struct{ err error }

func (e *wireError) Error() string { return "natsjs: wire read: " + e.err.Error() }
func (e *wireError) Unwrap() error { return e.err }

func wireFailed(format string, args ...any) error {
	return &wireError{fmt.Errorf(format, args...)}
}

// wireEndpoint is how to open a connection like the log's own: the dial and the credentials to present.
type wireEndpoint struct {
	dial              func(ctx context.Context) (net.Conn, error)
	user, pass, token string
	inbox             string
}

// wireEndpoint returns how to reach the log's server the way its connection does, or errWireUnsupported.
func (l *EventLog) wireEndpoint() (wireEndpoint, error) {
	o := l.nc.Opts
	if o.Secure || o.TLSConfig != nil || o.TLSCertCB != nil || o.RootCAsCB != nil || o.TLSHandshakeFirst ||
		o.UserJWT != nil || o.Nkey != "" || o.SignatureCB != nil || o.TokenHandler != nil ||
		o.CustomDialer != nil || o.ProxyPath != "" || o.Compression {
		return wireEndpoint{}, errWireUnsupported
	}
	e := wireEndpoint{user: o.User, pass: o.Password, token: o.Token, inbox: l.nc.NewInbox()}
	if o.UserInfo != nil {
		e.user, e.pass = o.UserInfo()
	}
	if o.InProcessServer != nil {
		p := o.InProcessServer
		e.dial = func(context.Context) (net.Conn, error) { return p.InProcessConn() }
		return e, nil
	}
	// The URL of the server the connection is on: its scheme and any credentials in it.
	cu, err := url.Parse(l.nc.ConnectedUrl())
	if err != nil || (cu.Scheme != "nats" && cu.Scheme != "tcp") {
		return wireEndpoint{}, errWireUnsupported
	}
	for _, s := range append([]string{o.Url}, o.Servers...) {
		if u, err := url.Parse(s); err == nil && u.User != nil {
			return wireEndpoint{}, errWireUnsupported // credentials in a URL: leave them to the client
		}
	}
	addr := l.nc.ConnectedAddr()
	if addr == "" {
		return wireEndpoint{}, errWireUnsupported
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	e.dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	return e, nil
}

// wireConn is one connection of the wire read.
type wireConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

// wireInfo is what the wire read needs of the server's INFO.
type wireInfo struct {
	Headers     bool `json:"headers"`
	TLSRequired bool `json:"tls_required"`
	MaxPayload  int  `json:"max_payload"`
}

// openWire connects and says hello: INFO, CONNECT, PING, and waits for the PONG.
func openWire(ctx context.Context, e wireEndpoint) (*wireConn, error) {
	c, err := e.dial(ctx)
	if err != nil {
		return nil, wireFailed("dial: %v", err)
	}
	w := &wireConn{c: c, r: bufio.NewReaderSize(c, 1<<20), w: bufio.NewWriterSize(c, 4096)}
	fail := func(err error) (*wireConn, error) {
		c.Close()
		var we *wireError
		if !errors.As(err, &we) {
			err = &wireError{err}
		}
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := w.r.ReadSlice('\n')
	if err != nil {
		return fail(fmt.Errorf("read INFO: %w", err))
	}
	arg, ok := bytes.CutPrefix(line, []byte("INFO "))
	if !ok {
		return fail(fmt.Errorf("expected INFO, got %q", trimLine(line)))
	}
	var info wireInfo
	if err := json.Unmarshal(arg, &info); err != nil {
		return fail(fmt.Errorf("INFO: %w", err))
	}
	if info.TLSRequired || !info.Headers {
		return fail(errWireUnsupported)
	}
	connect, err := json.Marshal(struct {
		Verbose      bool   `json:"verbose"`
		Pedantic     bool   `json:"pedantic"`
		User         string `json:"user,omitempty"`
		Pass         string `json:"pass,omitempty"`
		Token        string `json:"auth_token,omitempty"`
		Name         string `json:"name"`
		Lang         string `json:"lang"`
		Version      string `json:"version"`
		Protocol     int    `json:"protocol"`
		Headers      bool   `json:"headers"`
		NoResponders bool   `json:"no_responders"`
	}{User: e.user, Pass: e.pass, Token: e.token, Name: "anchorage-wire-read", Lang: "go", Version: "1",
		Protocol: 1, Headers: true, NoResponders: true})
	if err != nil {
		return fail(err)
	}
	w.w.WriteString("CONNECT ")
	w.w.Write(connect)
	w.w.WriteString("\r\nPING\r\n")
	if err := w.w.Flush(); err != nil {
		return fail(fmt.Errorf("CONNECT: %w", err))
	}
	for {
		line, err := w.r.ReadSlice('\n')
		if err != nil {
			return fail(fmt.Errorf("await PONG: %w", err))
		}
		switch {
		case bytes.HasPrefix(line, []byte("PONG")):
			_ = c.SetDeadline(time.Time{})
			return w, nil
		case bytes.HasPrefix(line, []byte("-ERR")):
			return fail(fmt.Errorf("server: %s", trimLine(line)))
		case bytes.HasPrefix(line, []byte("INFO")), bytes.HasPrefix(line, []byte("+OK")):
		case bytes.HasPrefix(line, []byte("PING")):
			w.w.WriteString("PONG\r\n")
		default:
			return fail(fmt.Errorf("unexpected %q before PONG", trimLine(line)))
		}
	}
}

func trimLine(b []byte) string {
	b = bytes.TrimRight(b, "\r\n")
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// readWire reads consumer's messages up to until over a connection of its own and hands them to fn in batches
// of at most maxBatch, as readRawUntil does. It returns the stream sequence of the last message it took from
// the consumer, handed to fn or not (past until, or not matching local). Its own failures are *wireError; fn's
// error and ctx's are returned as they are.
func (l *EventLog) readWire(ctx context.Context, e wireEndpoint, consumer string, from, until uint64, local []string, maxBatch int, fn func([]RawMsg) error) (uint64, error) {
	last := from - 1
	w, err := openWire(ctx, e)
	if err != nil {
		return last, err
	}
	type result struct {
		last uint64
		err  error
	}
	batches := make(chan []RawMsg, 4)
	stop := make(chan struct{})
	done := make(chan result, 1)
	go func() {
		last, err := w.pull(e.inbox, consumer, from, until, local, maxBatch, l.wireDropAfter, l.nc.IsClosed, batches, stop)
		close(batches)
		done <- result{last, err}
	}()
	var once sync.Once
	shut := func() { once.Do(func() { close(stop); w.c.Close() }) }
	defer shut()
	for {
		select {
		case b, ok := <-batches:
			if !ok {
				r := <-done
				return r.last, r.err
			}
			if err := fn(b); err != nil {
				shut()
				for range batches {
				}
				r := <-done
				return r.last, err
			}
		case <-ctx.Done():
			shut()
			for range batches {
			}
			r := <-done
			return r.last, ctx.Err()
		}
	}
}

// pull runs the wire read's protocol: it subscribes to inbox, keeps two pull requests outstanding on the
// consumer, and cuts what arrives into batches. It returns the stream sequence of the last message taken.
//
// The read belongs to the log's connection: when that closes, the read ends with errLogClosed.
func (w *wireConn) pull(inbox, consumer string, from, until uint64, local []string, maxBatch int, dropAfter uint64, logClosed func() bool, batches chan<- []RawMsg, stop <-chan struct{}) (uint64, error) {
	last := from - 1
	next := "$JS.API.CONSUMER.MSG.NEXT." + events.StreamName + "." + consumer
	body := fmt.Sprintf(`{"batch":%d,"expires":%d}`, wirePull, wireExpires.Nanoseconds())
	request := fmt.Appendf(nil, "PUB %s %s %d\r\n%s\r\n", next, inbox, len(body), body)
	w.w.WriteString("SUB " + inbox + " 1\r\n")
	w.w.Write(request)
	w.w.Write(request)
	if err := w.w.Flush(); err != nil {
		return last, wireFailed("pull: %v", err)
	}

	var (
		b     = newWireBatch(maxBatch)
		cseq  uint64 // the consumer's sequence of the last delivery
		since int    // deliveries since the last pull request
		taken uint64 // messages taken (for dropAfter, a test's fault)
		lines int
	)
	hand := func() bool {
		if len(b.msgs) == 0 {
			return true
		}
		select {
		case batches <- b.seal():
			b = newWireBatch(maxBatch)
			return true
		case <-stop:
			return false
		}
	}
	// fail ends the wire read with err after handing over the messages taken (each one whole), so that the
	// ordered consumer goes on from the one after the last taken.
	fail := func(err error) (uint64, error) {
		if !hand() {
			return last, nil // fn failed or ctx ended: the caller has its error
		}
		return last, err
	}
	for {
		if lines++; lines%256 == 1 {
			if logClosed() {
				return last, errLogClosed
			}
			_ = w.c.SetReadDeadline(time.Now().Add(wireStall)) // a stall ends the wire read
		}
		line, err := w.r.ReadSlice('\n')
		if err != nil {
			select {
			case <-stop:
				return last, nil // fn failed or ctx ended: the caller has its error
			default:
			}
			return fail(wireFailed("read: %v", err))
		}
		var hdrLen, total int
		var subject, reply []byte
		switch {
		case bytes.HasPrefix(line, []byte("HMSG ")):
			subject, reply, hdrLen, total, err = parseMsgArgs(line[5:], true)
		case bytes.HasPrefix(line, []byte("MSG ")):
			subject, reply, _, total, err = parseMsgArgs(line[4:], false)
		case bytes.HasPrefix(line, []byte("PING")):
			w.w.WriteString("PONG\r\n")
			if err := w.w.Flush(); err != nil {
				return fail(wireFailed("PONG: %v", err))
			}
			continue
		case bytes.HasPrefix(line, []byte("PONG")), bytes.HasPrefix(line, []byte("+OK")), bytes.HasPrefix(line, []byte("INFO")):
			continue
		case bytes.HasPrefix(line, []byte("-ERR")):
			return fail(wireFailed("server: %s", trimLine(line)))
		default:
			return fail(wireFailed("unexpected %q", trimLine(line)))
		}
		if err != nil {
			return fail(wireFailed("%v in %q", err, trimLine(line)))
		}
		// The line's slices point into the reader's buffer: take what is needed before reading on.
		payload := b.take(total + 2)
		if len(reply) == 0 {
			// A status: 100 idle heartbeat, 408 an expired pull request; anything else ends the wire read.
			if _, err := io.ReadFull(w.r, payload); err != nil {
				return fail(wireFailed("read status: %v", err))
			}
			b.untake(total + 2)
			code := statusCode(payload[:hdrLen])
			switch code {
			case "100":
			case "408":
				w.w.Write(request)
				if err := w.w.Flush(); err != nil {
					return fail(wireFailed("pull: %v", err))
				}
			default:
				return fail(wireFailed("status %s: %s", code, trimLine(payload[:hdrLen])))
			}
			continue
		}
		sseq, dseq, pending, ok := ackSubjectPositions(reply)
		if !ok {
			return fail(wireFailed("unexpected reply subject %q", reply))
		}
		subj := b.subject(subject)
		if _, err := io.ReadFull(w.r, payload); err != nil {
			return fail(wireFailed("read message %d: %v", sseq, err))
		}
		if payload[total] != '\r' || payload[total+1] != '\n' {
			return fail(wireFailed("message %d: no CRLF after its %d bytes", sseq, total))
		}
		if dseq != cseq+1 || sseq <= last {
			return fail(wireFailed("consumer sequence %d (stream %d) after %d (stream %d)", dseq, sseq, cseq, last))
		}
		cseq, last = dseq, sseq
		taken++
		if sseq <= until && (local == nil || events.MatchesAny(local, b.pendingSubject(subj))) {
			var hdr []byte
			if hdrLen > 0 {
				hdr = payload[:hdrLen]
			}
			b.add(sseq, subj, hdr, payload[hdrLen:total])
		} else {
			b.untake(total + 2)
			b.unsubject(subj)
		}
		end := pending == 0 || sseq >= until
		if len(b.msgs) == maxBatch || (end && len(b.msgs) > 0) {
			if !hand() {
				return last, nil
			}
		}
		if end {
			return last, nil
		}
		if dropAfter > 0 && taken == dropAfter {
			w.c.Close() // a test's fault: the connection drops here
		}
		if since++; since == wirePull {
			since = 0
			w.w.Write(request)
			if err := w.w.Flush(); err != nil {
				return fail(wireFailed("pull: %v", err))
			}
		}
	}
}

// parseMsgArgs splits the arguments of MSG (subject sid [reply] size) or HMSG (subject sid [reply] hdr size).
func parseMsgArgs(args []byte, hmsg bool) (subject, reply []byte, hdrLen, total int, err error) {
	var f [5][]byte
	n := 0
	for i := 0; i < len(args); {
		for i < len(args) && (args[i] == ' ' || args[i] == '\t' || args[i] == '\r' || args[i] == '\n') {
			i++
		}
		j := i
		for j < len(args) && args[j] != ' ' && args[j] != '\t' && args[j] != '\r' && args[j] != '\n' {
			j++
		}
		if j > i {
			if n == len(f) {
				return nil, nil, 0, 0, errors.New("too many arguments")
			}
			f[n] = args[i:j]
			n++
		}
		i = j
	}
	want := 3 // subject sid size
	if hmsg {
		want = 4
	}
	switch n {
	case want: // no reply
	case want + 1:
		reply = f[2]
	default:
		return nil, nil, 0, 0, fmt.Errorf("%d arguments", n)
	}
	subject = f[0]
	if total, err = atoiPositive(f[n-1]); err != nil {
		return nil, nil, 0, 0, err
	}
	if hmsg {
		if hdrLen, err = atoiPositive(f[n-2]); err != nil {
			return nil, nil, 0, 0, err
		}
		if hdrLen > total {
			return nil, nil, 0, 0, fmt.Errorf("header size %d > total %d", hdrLen, total)
		}
	}
	return subject, reply, hdrLen, total, nil
}

func atoiPositive(b []byte) (int, error) {
	if len(b) == 0 || len(b) > 10 {
		return 0, fmt.Errorf("bad size %q", b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad size %q", b)
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// statusCode is the status of a status message's header block ("NATS/1.0 408 Request Timeout"), or "".
func statusCode(hdr []byte) string {
	line, _, _ := bytes.Cut(hdr, []byte("\r\n"))
	rest, ok := bytes.CutPrefix(line, []byte("NATS/1.0 "))
	if !ok || len(rest) < 3 {
		return ""
	}
	return string(rest[:3])
}

// wireBatch is one batch being cut: its messages' bodies and headers in slabs, their subjects in a buffer that
// becomes one string when the batch is sealed.
type wireBatch struct {
	msgs  []RawMsg
	slab  []byte
	subj  []byte
	spans [][2]int // each message's subject in subj
}

func newWireBatch(maxBatch int) *wireBatch {
	return &wireBatch{msgs: make([]RawMsg, 0, maxBatch), slab: make([]byte, 0, wireSlabSize), spans: make([][2]int, 0, maxBatch),
		subj: make([]byte, 0, maxBatch*wireSubjectSize)}
}

// take returns n bytes of the slab (a slab of its own when n does not fit).
func (b *wireBatch) take(n int) []byte {
	if len(b.slab)+n > cap(b.slab) {
		b.slab = make([]byte, 0, max(wireSlabSize, n))
	}
	s := len(b.slab)
	b.slab = b.slab[:s+n]
	return b.slab[s : s+n : s+n]
}

// untake gives back the last n bytes taken.
func (b *wireBatch) untake(n int) { b.slab = b.slab[:len(b.slab)-n] }

// subject copies a subject into the batch's buffer and returns its span.
func (b *wireBatch) subject(s []byte) [2]int {
	start := len(b.subj)
	b.subj = append(b.subj, s...)
	return [2]int{start, len(b.subj)}
}

func (b *wireBatch) unsubject(span [2]int) { b.subj = b.subj[:span[0]] }

// pendingSubject is a subject not yet sealed, as a string (for the local filter; it allocates).
func (b *wireBatch) pendingSubject(span [2]int) string { return string(b.subj[span[0]:span[1]]) }

func (b *wireBatch) add(seq uint64, span [2]int, hdr, data []byte) {
	b.msgs = append(b.msgs, RawMsg{Seq: seq, Data: data, rawHeader: hdr})
	b.spans = append(b.spans, span)
}

// seal gives the batch's messages their subjects: substrings of one string.
func (b *wireBatch) seal() []RawMsg {
	all := string(b.subj)
	for i := range b.msgs {
		b.msgs[i].Subject = all[b.spans[i][0]:b.spans[i][1]]
	}
	return b.msgs
}

// Headers are the message's headers (Nats-Msg-Id, Ev-Type, Ev-Actor, ...), parsed on the first call when the
// message came over the wire read.
func (m *RawMsg) Headers() (nats.Header, error) {
	if m.header != nil || m.rawHeader == nil {
		return m.header, nil
	}
	h, err := nats.DecodeHeadersMsg(m.rawHeader)
	if err != nil {
		return nil, fmt.Errorf("natsjs: headers of message %d: %w", m.Seq, err)
	}
	m.header = h
	return h, nil
}

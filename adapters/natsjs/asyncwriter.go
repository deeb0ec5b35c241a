package natsjs

import (
	"errors"
	"io"
	"sync"
)

var errAsyncWriterClosed = errors.New("natsjs: write after close")

// asyncWriter hands what is written to it, in chunks of up to size bytes, to a goroutine that writes them to w in
// order: an export reads and formats events on one core while the other compresses and writes what came before.
// A write error is returned by the Write or Close calls after it. Not safe for concurrent use.
type asyncWriter struct {
	w    io.Writer
	buf  []byte
	full chan []byte // filled chunks, in order
	free chan []byte // chunks to reuse
	done chan struct{}

	closed bool

	mu  sync.Mutex
	err error // the first write error
}

// newAsyncWriter starts the writing goroutine; at most depth chunks wait to be written (then Write blocks).
func newAsyncWriter(w io.Writer, size, depth int) *asyncWriter {
	a := &asyncWriter{w: w, buf: make([]byte, 0, size), full: make(chan []byte, depth), free: make(chan []byte, depth+1), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *asyncWriter) run() {
	defer close(a.done)
	for b := range a.full {
		if a.error() == nil {
			if _, err := a.w.Write(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
			}
		}
		select {
		case a.free <- b[:0]:
		default: // enough spare chunks already
		}
	}
}

func (a *asyncWriter) error() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	if a.closed {
		return 0, errAsyncWriterClosed
	}
	if err := a.error(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		k := copy(a.buf[len(a.buf):cap(a.buf)], p)
		a.buf, p = a.buf[:len(a.buf)+k], p[k:]
		if len(a.buf) == cap(a.buf) {
			a.send()
		}
	}
	return n, nil
}

// send queues the current chunk and takes an empty one.
func (a *asyncWriter) send() {
	size := cap(a.buf)
	a.full <- a.buf
	select {
	case a.buf = <-a.free:
	default:
		a.buf = make([]byte, 0, size)
	}
}

// Close writes what is buffered, waits for every chunk to be written and returns the first write error. It does
// not close w. Closing again returns the same error.
func (a *asyncWriter) Close() error {
	if a.closed {
		return a.error()
	}
	a.closed = true
	if len(a.buf) > 0 {
		a.send()
	}
	close(a.full)
	<-a.done
	return a.error()
}

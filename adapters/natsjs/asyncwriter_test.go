package natsjs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// What goes through an asyncWriter comes out in order and whole, whatever the sizes of the writes.
func TestAsyncWriterKeepsOrder(t *testing.T) {
	var want bytes.Buffer
	var got bytes.Buffer
	a := newAsyncWriter(&got, 1000, 2)
	for i := range 5000 {
		p := bytes.Repeat([]byte{byte(i)}, rand.IntN(2500))
		want.Write(p)
		n, err := a.Write(p)
		require.NoError(t, err)
		require.Equal(t, len(p), n)
	}
	require.NoError(t, a.Close())
	require.NoError(t, a.Close(), "closing twice")
	require.Equal(t, want.Bytes(), got.Bytes())
	_, err := a.Write([]byte("x"))
	require.ErrorIs(t, err, errAsyncWriterClosed)
}

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n < len(p) {
		return 0, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

// A write error reaches the writer: a later Write or the Close returns it.
func TestAsyncWriterReportsWriteError(t *testing.T) {
	boom := errors.New("disk full")
	a := newAsyncWriter(&failAfter{n: 10_000, err: boom}, 1000, 2)
	var err error
	for range 1000 {
		if _, err = a.Write(make([]byte, 700)); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, boom, "a Write after the failure")
	require.ErrorIs(t, a.Close(), boom)

	a = newAsyncWriter(&failAfter{n: 10, err: boom}, 1000, 2)
	_, err = io.WriteString(a, "more than ten bytes, buffered until Close")
	require.NoError(t, err)
	require.ErrorIs(t, a.Close(), boom)
}

package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

const contentTypeJSON = "application/json"

// writeJSON answers with v as JSON. The Content-Type is set for every response by instrument already; it is
// set again here in case a handler changed it.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only values built by this package are encoded; they always encode.
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"reason":"INTERNAL_SERVER_ERROR","details":"the response could not be encoded"}}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

package runner

import (
	"bytes"
	"sync"
)

// LineWriter splits what is written to it into lines and hands each
// complete line to emit; Flush hands over a trailing partial line.
type LineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

// NewLineWriter returns a writer calling emit once per line.
func NewLineWriter(emit func(line string)) *LineWriter { return &LineWriter{emit: emit} }

// Write buffers p and emits every complete line.
func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(bytes.TrimRight(w.buf[:i], "\r"))
		w.buf = w.buf[i+1:]
		w.emit(line)
	}
	// Do not let a line without newline grow without bound.
	if len(w.buf) > 64<<10 {
		w.emit(string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

// Flush emits a trailing partial line, if any.
func (w *LineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(w.buf))
		w.buf = w.buf[:0]
	}
}

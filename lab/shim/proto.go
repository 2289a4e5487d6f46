// Package shim is the node-command side of the lab: the k3s, systemctl and
// journalctl commands of a lab node are this code (inside the caretaker
// binary, or a test-only binary), which forwards its arguments, working
// directory, selected environment and standard input to the lab daemon over
// the lab's unix socket and reproduces the daemon's output and exit code.
//
// The package is deliberately small (standard library only) so that the shim
// starts fast: a playbook runs many node commands.
package shim

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Frame kinds of the lab socket protocol. Every frame is one kind byte, a
// big-endian uint32 payload length and the payload.
const (
	FrameRequest  byte = 'Q' // client → daemon: JSON Request, always first
	FrameStdin    byte = 'I' // client → daemon: a chunk of standard input
	FrameStdinEOF byte = 'i' // client → daemon: standard input ended
	FrameStdout   byte = 'O' // daemon → client: a chunk of standard output
	FrameStderr   byte = 'E' // daemon → client: a chunk of standard error
	FrameExit     byte = 'X' // daemon → client: 4-byte big-endian exit code, last frame
)

// maxFrame bounds one frame's payload.
const maxFrame = 16 << 20

// Operations a Request can ask for.
const (
	OpExec   = "exec"   // run a node command (Argv) as Node
	OpPing   = "ping"   // liveness check; prints "pong"
	OpStatus = "status" // print the lab status (Output "json" or text)
	OpDown   = "down"   // stop the lab
	OpFault  = "fault"  // set or clear a fault on Node
)

// Request is the first frame of every connection.
type Request struct {
	Op   string   `json:"op"`
	Node string   `json:"node,omitempty"`
	Argv []string `json:"argv,omitempty"`
	Cwd  string   `json:"cwd,omitempty"`
	// Env holds the caller's K3S_* variables (K3S_URL changes where
	// rotate-ca sends its request, as on a real node) and HOME.
	Env map[string]string `json:"env,omitempty"`
	// Fault is the fault name for OpFault ("fail-start", "clear").
	Fault string `json:"fault,omitempty"`
	// Output is the status format for OpStatus ("json" or "text").
	Output string `json:"output,omitempty"`
}

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, kind byte, payload []byte) error {
	if len(payload) > maxFrame {
		return fmt.Errorf("lab socket: frame of %d bytes exceeds %d", len(payload), maxFrame)
	}
	hdr := make([]byte, 5, 5+len(payload))
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	_, err := w.Write(append(hdr, payload...))
	return err
}

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (kind byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("lab socket: frame of %d bytes exceeds %d", n, maxFrame)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[0], payload, nil
}

// WriteRequest writes the request frame.
func WriteRequest(w io.Writer, req Request) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return WriteFrame(w, FrameRequest, b)
}

// ReadRequest reads the request frame that starts a connection.
func ReadRequest(r io.Reader) (Request, error) {
	var req Request
	kind, payload, err := ReadFrame(r)
	if err != nil {
		return req, err
	}
	if kind != FrameRequest {
		return req, errors.New("lab socket: the first frame is not a request")
	}
	if err := json.Unmarshal(payload, &req); err != nil {
		return req, fmt.Errorf("lab socket: bad request: %w", err)
	}
	return req, nil
}

// ExitPayload encodes an exit code for a FrameExit.
func ExitPayload(code int) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(int32(code)))
	return b
}

// FrameWriter is an io.Writer that sends everything written to it as
// frames of one kind. It is not safe for concurrent use on its own; the
// daemon serialises the writers of one connection.
type FrameWriter struct {
	W    io.Writer
	Kind byte
}

// Write sends p as one frame.
func (f FrameWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := WriteFrame(f.W, f.Kind, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

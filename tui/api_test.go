package tui

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/caretaker/caretaker/runner"
)

// TestMain fails the package if a goroutine of this package outlives the
// tests (a pump Cmd or a Program goroutine left behind).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoLeaks(3 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines of package tui leaked:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func waitNoLeaks(d time.Duration) string {
	var leaked string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		leaked = ""
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "caretaker/caretaker/tui.") && !strings.Contains(g, "TestMain") {
				leaked += g + "\n\n"
			}
		}
		if leaked == "" {
			return ""
		}
	}
	return leaked
}

// lockedBuffer is an io.Writer safe for the program's writer goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func startTest(t *testing.T, opts Options) (*Program, *io.PipeWriter) {
	t.Helper()
	in, keys := io.Pipe()
	opts.Input = in
	opts.Output = &lockedBuffer{}
	opts.Env = []string{"TERM=xterm-256color", "NO_COLOR=1"}
	opts.ProgramOptions = []tea.ProgramOption{tea.WithWindowSize(80, 24), tea.WithoutSignals(), tea.WithFilter(probeFilter)}
	p, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close(); in.Close() })
	return p, keys
}

// TestStartRunWait drives the public API as cmd/caretaker does: plan,
// enter, events through the Sink, summary, q, Wait.
func TestStartRunWait(t *testing.T) {
	c := &syncController{}
	p, keys := startTest(t, Options{Plan: rotatePlan(), Confirm: true, Controller: c, Title: "rotate-ca"})
	waitScreen(t, p.prog, "enter start")
	io.WriteString(keys, "\r")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start, err := p.WaitStart(ctx)
	if err != nil || !start {
		t.Fatalf("WaitStart = %v, %v; want true", start, err)
	}
	if again, _ := p.WaitStart(ctx); !again {
		t.Fatal("WaitStart must keep its answer")
	}
	emitRun(p.Sink())
	p.Sink().Emit(runner.RunDone{RunID: "r1", Status: "failed", At: time.Now()})
	waitScreen(t, p.prog, "run failed")
	io.WriteString(keys, "q")
	summary, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"caretaker rotate-ca · cluster prod-eu", "run failed after", "srv-2  strip_server: permission denied", "caretaker resume r1"} {
		if !strings.Contains(summary, w) {
			t.Errorf("summary lacks %q:\n%s", w, summary)
		}
	}
	// After the program ends, the sink drops events and prompts fail fast.
	p.Sink().Emit(runner.Note{Text: "late"})
	if _, err := p.Prompter().Confirm(context.Background(), runner.Prompt{ID: 1}); err != ErrClosed {
		t.Fatalf("Confirm after exit = %v, want ErrClosed", err)
	}
}

// TestStartQuitAtPlan: q at the plan means the run never starts.
func TestStartQuitAtPlan(t *testing.T) {
	p, keys := startTest(t, Options{Plan: rotatePlan(), Confirm: true})
	waitScreen(t, p.prog, "enter start")
	io.WriteString(keys, "q")
	start, err := p.WaitStart(context.Background())
	if start || err != nil {
		t.Fatalf("WaitStart = %v, %v; want false, nil", start, err)
	}
	if s, err := p.Wait(); s != "" || err != nil {
		t.Fatalf("Wait = %q, %v; want no summary", s, err)
	}
}

// TestStartWithoutConfirm starts at once; ctx cancellation ends the program.
func TestStartWithoutConfirm(t *testing.T) {
	in, keys := io.Pipe()
	defer keys.Close()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Start(ctx, Options{Plan: rotatePlan(), Input: in, Output: &lockedBuffer{}, Env: []string{"TERM=dumb"},
		ProgramOptions: []tea.ProgramOption{tea.WithWindowSize(80, 24), tea.WithoutSignals()}})
	if err != nil {
		t.Fatal(err)
	}
	if start, err := p.WaitStart(context.Background()); !start || err != nil {
		t.Fatalf("WaitStart = %v, %v; want true at once", start, err)
	}
	cancel()
	done := make(chan error, 1)
	go func() { _, err := p.Wait(); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a killed program should report an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling ctx did not end the program")
	}
	if _, err := Start(ctx, Options{}); err == nil {
		t.Fatal("Start with a cancelled ctx should fail")
	}
}

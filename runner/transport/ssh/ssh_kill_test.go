package ssh

import (
	"bytes"
	"testing"
)

func TestPIDFilter(t *testing.T) {
	cases := []struct {
		name   string
		chunks []string
		want   string
		pid    int64
	}{
		{"marker then output", []string{pidMarker + "4242\nreal error\n"}, "real error\n", 4242},
		{"split byte by byte", splitBytes(pidMarker + "17\nx"), "x", 17},
		{"no marker", []string{"plain stderr\n"}, "plain stderr\n", 0},
		{"short output without newline", []string{"ab"}, "ab", 0},
		{"prefix of the marker only", []string{pidMarker[:4]}, pidMarker[:4], 0},
		{"marker without a number", []string{pidMarker + "xyz\nrest"}, "rest", 0},
		{"overlong marker line", []string{pidMarker + "1234567890123456789012345678901234567890"}, pidMarker + "1234567890123456789012345678901234567890", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			f := &pidFilter{w: &out}
			for _, ch := range c.chunks {
				if n, err := f.Write([]byte(ch)); n != len(ch) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			f.flush()
			if out.String() != c.want || f.pid.Load() != c.pid {
				t.Errorf("out %q pid %d; want %q %d", out.String(), f.pid.Load(), c.want, c.pid)
			}
		})
	}
}

func splitBytes(s string) []string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i : i+1]
	}
	return out
}

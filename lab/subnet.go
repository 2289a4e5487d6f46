package lab

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gofrs/flock"
)

// AllocateSubnet reserves a 127.x.y loopback subnet no other lab of this
// machine uses, for tests that run labs in parallel (also across test
// processes): it holds an exclusive lock file per subnet in
// $TMPDIR/caretaker-lab-subnets until release is called. Subnets come from
// 127.200.1 upward; the default 127.0.1 of `caretaker lab up` is never
// handed out.
func AllocateSubnet() (subnet string, release func(), err error) {
	dir := filepath.Join(os.TempDir(), "caretaker-lab-subnets")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", nil, fmt.Errorf("lab: subnet lock dir: %w", err)
	}
	for x := 200; x < 250; x++ {
		for y := 1; y < 255; y++ {
			s := fmt.Sprintf("127.%d.%d", x, y)
			fl := flock.New(filepath.Join(dir, s+".lock"))
			ok, err := fl.TryLock()
			if err != nil {
				return "", nil, fmt.Errorf("lab: lock subnet %s: %w", s, err)
			}
			if ok {
				return s, func() { _ = fl.Unlock() }, nil
			}
		}
	}
	return "", nil, fmt.Errorf("lab: every test subnet 127.200-249.* is taken")
}

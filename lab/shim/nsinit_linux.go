package shim

import (
	"fmt"
	"os"
	"syscall"
)

// nsInit runs in the lab keeper's mount namespace and a UTS namespace of
// its own (the lab daemon starts it with CLONE_NEWUTS through nsenter): it
// sets the node's host name, makes the node's tree (as the keeper mounted
// it) its root and executes sshd in the foreground, logging to standard
// error. Everything sshd and the sessions it starts see is the node's tree.
//
// args: root directory, host name, sshd_config (a path inside the node).
func nsInit(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "lab-nsinit: usage: lab-nsinit ROOT HOSTNAME SSHD_CONFIG")
		return 2
	}
	root, host, cfg := args[0], args[1], args[2]
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "lab-nsinit %s: "+format+"\n", append([]any{host}, a...)...)
		return 1
	}
	if err := syscall.Sethostname([]byte(host)); err != nil {
		return fail("set host name: %v", err)
	}
	if err := syscall.Chroot(root); err != nil {
		return fail("chroot into %s: %v", root, err)
	}
	if err := syscall.Chdir("/"); err != nil {
		return fail("chdir /: %v", err)
	}
	sshd := "/usr/sbin/sshd"
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	err := syscall.Exec(sshd, []string{sshd, "-D", "-e", "-f", cfg}, env)
	return fail("exec %s: %v", sshd, err)
}

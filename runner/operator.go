package runner

import (
	"os"
	"os/user"
)

// Operator names who runs caretaker here: the local user and this
// machine's host name, for lock holders, journals and notifications.
func Operator() (userName, host string) {
	if u, err := user.Current(); err == nil {
		userName = u.Username
	} else {
		userName = os.Getenv("USER")
	}
	host, _ = os.Hostname()
	return userName, host
}

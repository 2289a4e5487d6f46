package sshserver

import "syscall"

func syscallBindMount(src, dst string) error {
	if err := syscall.Mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
		return err
	}
	return syscall.Mount("", dst, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, "")
}

func syscallUnmount(dst string) { _ = syscall.Unmount(dst, syscall.MNT_DETACH) }

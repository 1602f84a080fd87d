//go:build linux

package media

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// aclXattr is where Linux keeps a file's POSIX ACL.
const aclXattr = "system.posix_acl_access"

// opticalNodes returns the device nodes through which an optical drive
// takes commands: its block node and its SCSI generic node(s).
func opticalNodes(sysRoot, devDir, name string) []string {
	nodes := []string{filepath.Join(devDir, name)}
	sgs, _ := filepath.Glob(filepath.Join(sysRoot, "class", "block", name, "device", "scsi_generic", "*"))
	for _, sg := range sgs {
		nodes = append(nodes, filepath.Join(devDir, filepath.Base(sg)))
	}
	return nodes
}

// restrictOptical keeps anyone but root from burning a disc. A burner is
// written through SCSI commands (SG_IO), which the block layer's read-only
// flag does not stop; but the kernel lets a caller without CAP_SYS_RAWIO
// send write commands only on a descriptor opened for writing. So group and
// others lose write permission on the drive's nodes, and the POSIX ACL that
// logind grants the seat's user (udev's uaccess tag) is removed. Each change
// is an action; the result is verified.
func restrictOptical(nodes []string, res *Result) error {
	var errs []error
	for _, node := range nodes {
		fi, err := os.Stat(node)
		if errors.Is(err, os.ErrNotExist) {
			continue // no SCSI generic node: sg not loaded
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if perm := fi.Mode().Perm(); perm&0o022 != 0 {
			err := os.Chmod(node, perm&^0o022)
			res.Actions = append(res.Actions, Action{What: fmt.Sprintf("chmod %s %04o (no writers but root: disc burning)", node, perm&^0o022), Target: node, Err: err})
			if err != nil {
				errs = append(errs, fmt.Errorf("chmod %s: %w", node, err))
				continue
			}
			res.Repaired = true
		}
		if _, err := unix.Getxattr(node, aclXattr, nil); err == nil {
			err := unix.Removexattr(node, aclXattr)
			res.Actions = append(res.Actions, Action{What: "remove the ACL of " + node + " (seat users could write)", Target: node, Err: err})
			if err != nil {
				errs = append(errs, fmt.Errorf("remove ACL of %s: %w", node, err))
				continue
			}
			res.Repaired = true
		}
		// Verify.
		if fi, err := os.Stat(node); err != nil || fi.Mode().Perm()&0o022 != 0 {
			errs = append(errs, fmt.Errorf("%s still writable by group or others", node))
		}
		if _, err := unix.Getxattr(node, aclXattr, nil); err == nil {
			errs = append(errs, fmt.Errorf("%s still has an ACL", node))
		}
	}
	return errors.Join(errs...)
}

//go:build linux

package media

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// seatACL is the POSIX ACL logind's uaccess puts on a device node: the
// seat's user (here uid 65534) may read and write.
func seatACL() []byte {
	entry := func(tag, perm uint16, id uint32) []byte {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint16(b, tag)
		binary.LittleEndian.PutUint16(b[2:], perm)
		binary.LittleEndian.PutUint32(b[4:], id)
		return b
	}
	const undefinedID = 0xffffffff
	acl := []byte{2, 0, 0, 0}                         // version 2
	acl = append(acl, entry(0x01, 6, undefinedID)...) // user::rw-
	acl = append(acl, entry(0x02, 6, 65534)...)       // user:65534:rw-
	acl = append(acl, entry(0x04, 6, undefinedID)...) // group::rw-
	acl = append(acl, entry(0x10, 6, undefinedID)...) // mask::rw-
	acl = append(acl, entry(0x20, 0, undefinedID)...) // other::---
	return acl
}

func TestRestrictOptical(t *testing.T) {
	dev := t.TempDir()
	// sr0 and its SCSI generic node sg1, as the optical sysfs tree says,
	// stand-in files with the modes and ACL udev and logind give them.
	sys := filepath.Join("testdata", "sysfs", "optical")
	nodes := opticalNodes(sys, dev, "sr0")
	if len(nodes) != 2 || filepath.Base(nodes[1]) != "sg1" {
		t.Fatalf("nodes = %v, want sr0 and sg1", nodes)
	}
	for _, n := range nodes {
		if err := os.WriteFile(n, nil, 0o660); err != nil {
			t.Fatal(err)
		}
		os.Chmod(n, 0o660)
	}
	if err := unix.Setxattr(nodes[0], aclXattr, seatACL(), 0); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this filesystem takes no POSIX ACLs: %v", err)
		}
		t.Skipf("this filesystem takes no POSIX ACLs: %v", err)
	}
	var res Result
	if err := restrictOptical(nodes, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Repaired || len(res.Actions) != 3 {
		t.Errorf("result = %+v, want 3 actions (two chmods, one ACL removal)", res)
	}
	for _, n := range nodes {
		fi, _ := os.Stat(n)
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("%s mode %04o, want 0640", n, fi.Mode().Perm())
		}
		if _, err := unix.Getxattr(n, aclXattr, nil); err == nil {
			t.Errorf("%s keeps its ACL", n)
		}
	}
	// Idempotent: nothing more to do.
	res = Result{}
	if err := restrictOptical(nodes, &res); err != nil || res.Repaired || len(res.Actions) != 0 {
		t.Errorf("second pass: %+v, %v", res, err)
	}
	// A missing SCSI generic node (sg not loaded) is not an error.
	os.Remove(nodes[1])
	if err := restrictOptical(nodes, &Result{}); err != nil {
		t.Errorf("missing sg node: %v", err)
	}
}

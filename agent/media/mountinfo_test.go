package media

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Mount
		wantErr string
		ro      []bool
	}{
		{
			name: "empty",
			in:   "",
		},
		{
			name: "proc(5) example with optional field",
			in:   "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
			want: []Mount{{
				ID: 36, ParentID: 35, Major: 98, Minor: 0, Root: "/mnt1", MountPoint: "/mnt/parent",
				Options: []string{"rw", "noatime"}, FSType: "ext3", Source: "/dev/root",
				SuperOptions: []string{"rw", "errors=continue"},
			}},
			ro: []bool{false},
		},
		{
			name: "no optional fields, several optional fields, last line unterminated",
			in: "22 26 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n" +
				"41 26 259:0 / /media/usb ro,relatime shared:1 master:2 propagate_from:3 unbindable - ext4 /dev/sdb1 rw",
			want: []Mount{
				{
					ID: 22, ParentID: 26, Major: 0, Minor: 21, Root: "/", MountPoint: "/sys",
					Options: []string{"rw", "nosuid", "nodev", "noexec", "relatime"}, FSType: "sysfs", Source: "sysfs",
					SuperOptions: []string{"rw"},
				},
				{
					ID: 41, ParentID: 26, Major: 259, Minor: 0, Root: "/", MountPoint: "/media/usb",
					Options: []string{"ro", "relatime"}, FSType: "ext4", Source: "/dev/sdb1",
					SuperOptions: []string{"rw"},
				},
			},
			ro: []bool{false, true},
		},
		{
			name: "octal escapes and superblock ro",
			in:   `50 26 8:17 /sub\040dir /media/user/MY\040STICK\011tab\012nl\134bs rw,nosuid - vfat /dev/sdb1 ro,fmask=0022,name\054x` + "\n",
			want: []Mount{{
				ID: 50, ParentID: 26, Major: 8, Minor: 17, Root: "/sub dir", MountPoint: "/media/user/MY STICK\ttab\nnl\\bs",
				Options: []string{"rw", "nosuid"}, FSType: "vfat", Source: "/dev/sdb1",
				SuperOptions: []string{"ro", "fmask=0022", "name,x"},
			}},
			ro: []bool{true},
		},
		{
			name: "backslash without three octal digits is kept",
			in:   `1 0 0:1 / /a\04 rw - tmpfs x\9 rw\` + "\n",
			want: []Mount{{
				ID: 1, ParentID: 0, Major: 0, Minor: 1, Root: "/", MountPoint: `/a\04`,
				Options: []string{"rw"}, FSType: "tmpfs", Source: `x\9`, SuperOptions: []string{`rw\`},
			}},
			ro: []bool{false},
		},
		{
			name: "empty source, CRLF and blank lines",
			in:   "\n60 26 0:50 / /x rw - fuse.foo  rw,user_id=0\r\n\n",
			want: []Mount{{
				ID: 60, ParentID: 26, Major: 0, Minor: 50, Root: "/", MountPoint: "/x",
				Options: []string{"rw"}, FSType: "fuse.foo", Source: "", SuperOptions: []string{"rw", "user_id=0"},
			}},
			ro: []bool{false},
		},
		{
			name: "a mountpoint named - before the separator",
			in:   "70 26 7:0 / /- rw - ext4 /dev/loop0 rw\n",
			want: []Mount{{
				ID: 70, ParentID: 26, Major: 7, Minor: 0, Root: "/", MountPoint: "/-",
				Options: []string{"rw"}, FSType: "ext4", Source: "/dev/loop0", SuperOptions: []string{"rw"},
			}},
			ro: []bool{false},
		},
		{name: "too few fields", in: "1 2 3:4 / /\n", wantErr: "line 1: 5 fields"},
		{name: "no separator", in: "1 2 3:4 / /x rw shared:1 ext4 /dev/sda rw\n", wantErr: "separator"},
		{name: "bad ID", in: "x 2 3:4 / /x rw - ext4 /dev/sda rw\n", wantErr: "mount ID"},
		{name: "bad parent", in: "1 y 3:4 / /x rw - ext4 /dev/sda rw\n", wantErr: "parent ID"},
		{name: "bad device", in: "1 2 34 / /x rw - ext4 /dev/sda rw\n", wantErr: "major:minor"},
		{name: "minor out of range", in: "1 2 3:4294967296 / /x rw - ext4 /dev/sda rw\n", wantErr: "out of range"},
		{name: "no fstype", in: "1 2 3:4 / /x rw -\n", wantErr: "fields"},
		{name: "empty fstype", in: "1 2 3:4 / /x rw -  /dev/sda rw\n", wantErr: "no filesystem type"},
		{
			name:    "second line bad",
			in:      "1 2 3:4 / /x rw - ext4 /dev/sda rw\ngarbage\n",
			wantErr: "line 2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMountinfo(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMountinfo error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMountinfo: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseMountinfo =\n%#v\nwant\n%#v", got, tt.want)
			}
			for i, m := range got {
				if m.ReadOnly() != tt.ro[i] {
					t.Errorf("mount %d ReadOnly() = %v, want %v", i, m.ReadOnly(), tt.ro[i])
				}
			}
		})
	}
}

func TestParseMountinfoLongLine(t *testing.T) {
	// overlayfs with many layers writes lines far longer than bufio's
	// default buffer.
	long := strings.Repeat("/var/lib/layer:", 20000)
	in := "1 0 0:30 / /merged rw - overlay overlay rw,lowerdir=" + long + "\n2 0 0:31 / /b rw - tmpfs tmpfs rw\n"
	got, err := ParseMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].MountPoint != "/b" || len(got[0].SuperOptions[1]) != len("lowerdir=")+len(long) {
		t.Fatalf("long line parsed wrong: %d mounts", len(got))
	}
	_, err = ParseMountinfo(strings.NewReader("1 0 0:30 / /m rw - overlay overlay " + strings.Repeat("x", maxMountinfoLine+1)))
	if err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("line over the limit: err = %v", err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		``:            ``,
		`plain`:       `plain`,
		`a\040b`:      `a b`,
		`\134`:        `\`,
		`\134040`:     `\040`,
		`end\`:        `end\`,
		`\4000`:       `\4000`, // > 0377 is not a byte
		`\377`:        "\xff",
		`\0`:          `\0`,
		`\12x`:        `\12x`,
		`\011\012\15`: "\t\n\\15",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add("36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n")
	f.Add(`50 26 8:17 /sub\040dir /media/MY\040STICK rw - vfat /dev/sdb1 ro,name\054x` + "\n")
	f.Add("60 26 0:50 / /x rw - fuse.foo  rw\r\n\n1 2 3:4 / /x rw -\n")
	f.Add("1 2 3:4 / /- - - - - -\n")
	f.Add("\\\\\\\n - - -")
	f.Fuzz(func(t *testing.T, in string) {
		mounts, err := ParseMountinfo(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, m := range mounts {
			_ = m.ReadOnly()
			if m.FSType == "" {
				t.Fatalf("mount without a filesystem type accepted: %#v", m)
			}
		}
	})
}

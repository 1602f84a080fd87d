package testenv

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

// WineVersion is the Wine version a Windows test runs under, or "" on
// Windows itself: Wine's ntdll exports wine_get_version, Windows' does
// not.
func WineVersion() string {
	p := windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version")
	if p.Find() != nil {
		return ""
	}
	r, _, _ := p.Call() // const char *
	if r == 0 {
		return "unknown"
	}
	return windows.BytePtrToString(*(**byte)(unsafe.Pointer(&r)))
}

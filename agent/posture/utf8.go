package posture

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// sanitizeUTF8 replaces invalid UTF-8 in every string field of m and its
// sub-messages, lists and map values. Map keys are left alone: the posture
// messages have no maps with string keys.
func sanitizeUTF8(m protoreflect.Message) {
	// Collect the populated fields first: m must not change during Range.
	var fds []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		fds = append(fds, fd)
		return true
	})
	for _, fd := range fds {
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					if s := l.Get(i).String(); !utf8.ValidString(s) {
						l.Set(i, protoreflect.ValueOfString(validUTF8(s)))
					}
				case protoreflect.MessageKind, protoreflect.GroupKind:
					sanitizeUTF8(l.Get(i).Message())
				}
			}
		case fd.IsMap():
			mv := v.Map()
			var keys []protoreflect.MapKey
			mv.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			for _, k := range keys {
				switch fd.MapValue().Kind() {
				case protoreflect.StringKind:
					if s := mv.Get(k).String(); !utf8.ValidString(s) {
						mv.Set(k, protoreflect.ValueOfString(validUTF8(s)))
					}
				case protoreflect.MessageKind, protoreflect.GroupKind:
					sanitizeUTF8(mv.Get(k).Message())
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			if s := v.String(); !utf8.ValidString(s) {
				m.Set(fd, protoreflect.ValueOfString(validUTF8(s)))
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			sanitizeUTF8(v.Message())
		}
	}
}

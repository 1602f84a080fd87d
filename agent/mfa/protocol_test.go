package mfa

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

// field encodes one length-prefixed field.
func field(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// rawRequest builds a request payload without validation.
func rawRequest(version, typ byte, fields ...string) []byte {
	b := []byte{version, typ}
	for _, f := range fields {
		b = append(b, field(f)...)
	}
	return b
}

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{Type: TypeVerify, User: "alice", Service: "sshd", Code: "123456"},
		{Type: TypeVerify, User: "alice", Service: "", Code: "1"},
		{Type: TypeVerify, User: "Jürgen.Ö", Service: "gdm-password", Code: "abcd-efgh-ijkl"},
		{Type: TypeVerify, User: "田中", Service: "login", Code: "12345678"},
		{Type: TypeVerify, User: strings.Repeat("u", MaxUser), Service: strings.Repeat("s", MaxService), Code: strings.Repeat("9", MaxCode)},
		{Type: TypeVerify, User: "bob", Service: "A.z_0-9", Code: " !~"},
		{Type: TypeBegin, User: "alice", Service: "sshd"},
		{Type: TypeBegin, User: "田中", Service: ""},
		{Type: TypeBegin, User: strings.Repeat("u", MaxUser), Service: strings.Repeat("s", MaxService)},
	} {
		p, err := EncodeRequest(r)
		if err != nil {
			t.Fatalf("EncodeRequest(%+v): %v", r, err)
		}
		var buf bytes.Buffer
		if err := WriteFrame(&buf, p); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFrame(&buf)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeRequest(got)
		if err != nil {
			t.Fatalf("DecodeRequest: %v", err)
		}
		if back != r {
			t.Errorf("round trip: got %+v, want %+v", back, r)
		}
	}
}

func TestRequestWireFormat(t *testing.T) {
	p, err := EncodeRequest(Request{Type: TypeVerify, User: "al", Service: "su", Code: "42"})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 1, 0, 2, 'a', 'l', 0, 2, 's', 'u', 0, 2, '4', '2'}
	if !bytes.Equal(p, want) {
		t.Errorf("payload % x, want % x", p, want)
	}
	bp, err := EncodeRequest(Request{Type: TypeBegin, User: "al", Service: "su"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{1, 2, 0, 2, 'a', 'l', 0, 2, 's', 'u'}; !bytes.Equal(bp, want) {
		t.Errorf("begin payload % x, want % x", bp, want)
	}
	var buf bytes.Buffer
	WriteFrame(&buf, p)
	if got := buf.Bytes()[:4]; !bytes.Equal(got, []byte{0, 0, 0, 14}) {
		t.Errorf("frame header % x, want 00 00 00 0e", got)
	}
	rp, err := EncodeResponse(Response{Result: Locked, Message: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{1, 2, 0, 2, 'o', 'k'}; !bytes.Equal(rp, want) {
		t.Errorf("response % x, want % x", rp, want)
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, r := range []Response{
		{Result: Accepted},
		{Result: Rejected, Message: "wrong code"},
		{Result: Locked, Message: "ロックされています"},
		{Result: Unavailable, Message: strings.Repeat("x", MaxMessage)},
		{Result: BadRequest, Message: "m"},
		{Result: NotPermitted, Message: "no"},
	} {
		p, err := EncodeResponse(r)
		if err != nil {
			t.Fatalf("EncodeResponse(%+v): %v", r, err)
		}
		back, err := DecodeResponse(p)
		if err != nil {
			t.Fatalf("DecodeResponse: %v", err)
		}
		if back != r {
			t.Errorf("round trip: got %+v, want %+v", back, r)
		}
	}
	for name, r := range map[string]Response{
		"undefined result": {Result: 6},
		"long message":     {Message: strings.Repeat("x", MaxMessage+1)},
		"invalid UTF-8":    {Message: "\xff"},
	} {
		if _, err := EncodeResponse(r); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: EncodeResponse error %v, want ErrMalformed", name, err)
		}
	}
	for name, p := range map[string][]byte{
		"short":        {1, 0, 0},
		"version 2":    {2, 0, 0, 0},
		"long length":  {1, 0, 0, 2, 'a'},
		"trailing":     {1, 0, 0, 0, 'a'},
		"result 9":     {1, 9, 0, 0},
		"invalid utf8": {1, 0, 0, 1, 0xff},
	} {
		if _, err := DecodeResponse(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeResponse error %v, want ErrMalformed", name, err)
		}
	}
}

const secret = "S3CR3T-C0DE"

func TestDecodeRequestRejects(t *testing.T) {
	good := rawRequest(1, 1, "alice", "sshd", secret)
	for _, tc := range []struct {
		name string
		p    []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"version only", []byte{1}, "too short"},
		{"version 2", rawRequest(2, 1, "alice", "sshd", secret), "version 2"},
		{"type 0", rawRequest(1, 0, "alice", "sshd", secret), "type 0"},
		{"type 3", rawRequest(1, 3, "alice", "sshd", secret), "type 3"},
		{"begin with a code", rawRequest(1, 2, "alice", "sshd", secret), "after the last field"},
		{"begin with an empty code field", rawRequest(1, 2, "alice", "sshd", ""), "after the last field"},
		{"begin without service", rawRequest(1, 2, "alice"), "service: length is missing"},
		{"begin with empty user", rawRequest(1, 2, "", "sshd"), "user is empty"},
		{"begin with control characters", rawRequest(1, 2, "a\x1bb", "sshd"), "control character"},
		{"begin with bad service", rawRequest(1, 2, "alice", "s/d"), "service contains"},
		{"begin cut short", rawRequest(1, 2, "alice", "sshd")[:12], "runs past"},
		{"trailing bytes", append(good, 0), "after the last field"},
		{"missing code", rawRequest(1, 1, "alice", "sshd"), "code: length is missing"},
		{"field past end", good[:len(good)-1], "runs past"},
		{"empty user", rawRequest(1, 1, "", "sshd", secret), "user is empty"},
		{"user with newline", rawRequest(1, 1, "ali\nce", "sshd", secret), "control character"},
		{"user with NUL", rawRequest(1, 1, "alice\x00", "sshd", secret), "control character"},
		{"user with DEL", rawRequest(1, 1, "alice\x7f", "sshd", secret), "control character"},
		{"user with C1 control", rawRequest(1, 1, "alice\u0085", "sshd", secret), "control character"},
		{"user not UTF-8", rawRequest(1, 1, "al\xffice", "sshd", secret), "UTF-8"},
		{"user too long", rawRequest(1, 1, strings.Repeat("a", MaxUser+1), "sshd", secret), "more than 256"},
		{"service with slash", rawRequest(1, 1, "alice", "../sshd", secret), "service contains"},
		{"service with space", rawRequest(1, 1, "alice", "ss hd", secret), "service contains"},
		{"service too long", rawRequest(1, 1, "alice", strings.Repeat("s", MaxService+1), secret), "more than 64"},
		{"empty code", rawRequest(1, 1, "alice", "sshd", ""), "code is empty"},
		{"code too long", rawRequest(1, 1, "alice", "sshd", strings.Repeat("1", MaxCode+1)), "more than 64"},
		{"code with newline", rawRequest(1, 1, "alice", "sshd", secret+"\n"), "non-printable"},
		{"code with NUL", rawRequest(1, 1, "alice", "sshd", "12\x003456"), "non-printable"},
		{"code with UTF-8", rawRequest(1, 1, "alice", "sshd", "１２３"), "non-printable"},
		{"payload over MaxFrame", rawRequest(1, 1, strings.Repeat("a", 5000), "sshd", secret), "more than 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRequest(tc.p)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "S3CR3T") || strings.Contains(err.Error(), "3456") {
				t.Errorf("error %q contains the code", err)
			}
		})
	}
}

func TestEncodeRequestValidates(t *testing.T) {
	_, err := EncodeRequest(Request{Type: TypeVerify, User: "alice", Code: secret + "\x01"})
	if !errors.Is(err, ErrMalformed) || strings.Contains(err.Error(), secret) {
		t.Errorf("EncodeRequest error %v: want ErrMalformed without the code", err)
	}
	for name, r := range map[string]Request{
		"no type":         {User: "alice", Code: "123456"},
		"type 3":          {Type: 3, User: "alice", Code: "123456"},
		"begin with code": {Type: TypeBegin, User: "alice", Code: secret},
	} {
		_, err := EncodeRequest(r)
		if !errors.Is(err, ErrMalformed) || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: EncodeRequest error %v: want ErrMalformed without the code", name, err)
		}
	}
}

func TestReadFrame(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []byte
		wantErr error
	}{
		{"one byte", []byte{0, 0, 0, 1, 7}, []byte{7}, nil},
		{"max", append([]byte{0, 0, 0x10, 0}, make([]byte, MaxFrame)...), make([]byte, MaxFrame), nil},
		{"nothing", nil, nil, io.EOF},
		{"length 0", []byte{0, 0, 0, 0}, nil, ErrMalformed},
		{"length 4097", []byte{0, 0, 0x10, 1}, nil, ErrMalformed},
		{"length 4 GiB", []byte{0xff, 0xff, 0xff, 0xff}, nil, ErrMalformed},
		{"two bytes", []byte{0, 0}, nil, ErrMalformed},
		{"short payload", []byte{0, 0, 0, 5, 1, 2}, nil, ErrMalformed},
		{"header only", []byte{0, 0, 0, 5}, nil, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadFrame(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("payload % x, want % x", got, tc.want)
			}
		})
	}
	if err := WriteFrame(io.Discard, nil); err == nil {
		t.Error("WriteFrame of an empty payload succeeded")
	}
	if err := WriteFrame(io.Discard, make([]byte, MaxFrame+1)); err == nil {
		t.Error("WriteFrame of an oversized payload succeeded")
	}
}

func TestCleanMessage(t *testing.T) {
	for _, tc := range []struct{ msg, code, want string }{
		{"wrong code", "123456", "wrong code"},
		{"code 123456 is wrong", "123456", ""},
		{"bad\x1b[31m\nline", "", "bad [31m line"},
		{"\xffx", "", "\uFFFDx"},
		{strings.Repeat("é", 300), "", strings.Repeat("é", 256)},
	} {
		if got := cleanMessage(tc.msg, tc.code); got != tc.want {
			t.Errorf("cleanMessage(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(rawRequest(1, 1, "alice", "sshd", "123456"))
	f.Add(rawRequest(1, 1, "田中", "", "abcd-efgh"))
	f.Add(rawRequest(1, 2, "alice", "sshd"))
	f.Add(rawRequest(1, 2, "田中", ""))
	f.Add(rawRequest(1, 2, "alice", "sshd", ""))
	f.Add(rawRequest(1, 3, "alice", "sshd"))
	f.Add(rawRequest(2, 1, "alice", "sshd", "123456"))
	f.Add(append(rawRequest(1, 1, "a", "b", "c"), 0))
	f.Add([]byte{1, 1, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := DecodeRequest(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if r.Type == TypeBegin && r.Code != "" || r.Type != TypeBegin && r.Type != TypeVerify {
			t.Fatalf("decoded %+v from % x", r, p)
		}
		enc, err := EncodeRequest(r)
		if err != nil {
			t.Fatalf("EncodeRequest of a decoded request: %v", err)
		}
		if !bytes.Equal(enc, p) {
			t.Fatalf("encoding is not canonical: % x, input % x", enc, p)
		}
		back, err := DecodeRequest(enc)
		if err != nil || back != r {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", r, back, err)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 7})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0x10, 1})
	f.Add([]byte{0, 0})
	f.Add(append([]byte{0, 0, 0, 3}, rawRequest(1, 1, "a", "b", "c")...))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := ReadFrame(bytes.NewReader(in))
		if err != nil {
			return
		}
		if len(p) == 0 || len(p) > MaxFrame {
			t.Fatalf("payload of %d bytes accepted", len(p))
		}
		var buf bytes.Buffer
		if err := WriteFrame(&buf, p); err != nil {
			t.Fatalf("WriteFrame: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), in[:4+len(p)]) {
			t.Fatalf("write(read(x)) = % x, want % x", buf.Bytes(), in[:4+len(p)])
		}
		back, err := ReadFrame(&buf)
		if err != nil || !bytes.Equal(back, p) {
			t.Fatalf("read(write(p)) = % x, %v", back, err)
		}
	})
}

// FuzzDecodeResponse: any payload decodes to a defined result and a valid
// message, encoded again to the same bytes, or gives an error wrapping
// ErrMalformed.
func FuzzDecodeResponse(f *testing.F) {
	for _, r := range []Response{{Accepted, ""}, {Rejected, "wrong code"}, {Unavailable, "Offline challenge: 1234-5678"}, {NotPermitted, "田中"}} {
		p, err := EncodeResponse(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte{1, 6, 0, 0})
	f.Add([]byte{1, 0, 0, 1})
	f.Add([]byte{1, 0, 0, 1, 0xff})
	f.Add([]byte{2, 0, 0, 0})
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := DecodeResponse(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !r.Result.Valid() || len(r.Message) > MaxMessage || !utf8.ValidString(r.Message) {
			t.Fatalf("decoded %+v from % x", r, p)
		}
		enc, err := EncodeResponse(r)
		if err != nil || !bytes.Equal(enc, p) {
			t.Fatalf("encode(decode(% x)) = % x, %v", p, enc, err)
		}
	})
}

// FuzzEncodeResponse: whatever the agent answers is either refused by
// EncodeResponse or decodes to itself, within one frame.
func FuzzEncodeResponse(f *testing.F) {
	f.Add(uint8(0), "")
	f.Add(uint8(3), "cannot reach the collector")
	f.Add(uint8(9), "x")
	f.Add(uint8(1), strings.Repeat("あ", 200))
	f.Fuzz(func(t *testing.T, res uint8, msg string) {
		p, err := EncodeResponse(Response{Result(res), msg})
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(p) > MaxFrame {
			t.Fatalf("a response of %d bytes does not fit a frame", len(p))
		}
		r, err := DecodeResponse(p)
		if err != nil || r != (Response{Result(res), msg}) {
			t.Fatalf("decode(encode(%d, %q)) = %+v, %v", res, msg, r, err)
		}
	})
}

// TestDecodeResponseBounded: a payload longer than any valid response (here
// with a consistent length of 65,535) is refused before its message is
// copied.
func TestDecodeResponseBounded(t *testing.T) {
	p := make([]byte, 4+0xffff)
	p[0], p[2], p[3] = Version, 0xff, 0xff
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := DecodeResponse(p)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("64 KiB payload: %v, want ErrMalformed", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<10 {
		t.Errorf("refusing a 64 KiB payload allocated %d bytes", n)
	}
}

package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/logins"
	"github.com/mnguard/mnguard/server/seeds"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits of ImportTokens.
const (
	// MaxImportChunk is the largest chunk of a streamed seed file.
	MaxImportChunk = 512 << 10
	// MaxImportBytes is the largest seed file: room for 100,000 tokens in
	// an encrypted PSKC file (logins.MaxImportBytes).
	MaxImportBytes = logins.MaxImportBytes
	// maxAssignmentBytes bounds a serial or user name of an assignment.
	maxAssignmentBytes = 128
)

// importSlots holds one slot per AdminService: one import runs at a time
// (each holds up to 100,000 parsed seeds; the store writes one at a time
// anyway).
var importSlots sync.Map // *AdminService → chan struct{}

func (a *AdminService) importSlot() chan struct{} {
	ch, _ := importSlots.LoadOrStore(a, make(chan struct{}, 1))
	return ch.(chan struct{})
}

// sizeText is n bytes for people: "1.5 MiB".
func sizeText(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// TooLargeMessage says that a seed file of size bytes is over the limit.
// mnguardctl says the same before sending.
func TooLargeMessage(size uint64) string {
	return fmt.Sprintf("the seed file is %s (%d bytes); the collector imports files of at most %s (%d bytes) and %d tokens at once: split it into several files",
		sizeText(size), size, sizeText(MaxImportBytes), MaxImportBytes, seeds.MaxSeeds)
}

// checkImportOptions checks what ImportUsers and ImportTokens share.
func checkImportOptions(format string, key []byte, password string) (string, error) {
	if len(password) > maxPasswordBytes {
		return "", status.Errorf(codes.InvalidArgument, "pskc_password: longer than %d bytes", maxPasswordBytes)
	}
	if k := len(key); k != 0 && k != 16 && k != 24 && k != 32 {
		return "", status.Errorf(codes.InvalidArgument, "pskc_key: %d bytes, want 16, 24 or 32", k)
	}
	f := strings.ToLower(format)
	switch f {
	case "", logins.FormatAuto, logins.FormatCSV, logins.FormatPSKC:
		return f, nil
	}
	return "", status.Errorf(codes.InvalidArgument, "format: %q is not csv, pskc or empty (detect)", truncate(format))
}

// ImportTokens implements mnguardv1.AdminServiceServer: a seed file of up
// to MaxImportBytes and 100,000 tokens, streamed in chunks and parsed as
// it arrives. The header comes first, then the assignments, then the
// chunks. A file over the limit is refused from the header's size, before
// any of it is sent, and again by the bytes that arrive.
func (a *AdminService) ImportTokens(stream grpc.ClientStreamingServer[mnguardv1.ImportTokensRequest, mnguardv1.ImportTokensResponse]) error {
	ctx := stream.Context()
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return recvErr(err, "the header")
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "header: the first message must be the header")
	}
	format, err := checkImportOptions(h.GetFormat(), h.GetPskcKey(), h.GetPskcPassword())
	if err != nil {
		return err
	}
	switch {
	case h.GetSize() == 0:
		return status.Error(codes.InvalidArgument, "size: the seed file is empty")
	case h.GetSize() > MaxImportBytes:
		return status.Error(codes.ResourceExhausted, TooLargeMessage(h.GetSize()))
	}
	slot := a.importSlot()
	select {
	case slot <- struct{}{}:
		defer func() { <-slot }()
	default:
		return status.Error(codes.Unavailable, "another seed import is running on this collector: try again when it has finished")
	}

	r := &chunkReader{stream: stream, size: h.GetSize()}
	assign := make(map[string]string)
	for {
		m, err := stream.Recv()
		if err != nil {
			return recvErr(err, "the seed file")
		}
		as := m.GetAssignments()
		if as == nil {
			if m.GetChunk() == nil {
				return status.Error(codes.InvalidArgument, "header: only the first message may be the header")
			}
			if err := r.take(m.GetChunk()); err != nil {
				return err
			}
			break
		}
		for _, x := range as.GetAssignments() {
			if err := checkAssignment(x); err != nil {
				return err
			}
			if prev, dup := assign[x.GetSerial()]; dup {
				return status.Errorf(codes.InvalidArgument, "assignments: token %q is assigned twice (to %s and %s)", truncate(x.GetSerial()), prev, x.GetUser())
			}
			assign[x.GetSerial()] = x.GetUser()
			if len(assign) > logins.MaxAssignments {
				return status.Errorf(codes.InvalidArgument, "assignments: more than %d", logins.MaxAssignments)
			}
		}
	}

	res, err := l.Import(ctx, logins.ImportRequest{
		File: r, Format: format, Key: h.GetPskcKey(), Password: h.GetPskcPassword(),
		Assign: assign, Replace: h.GetReplace(), Op: loginOp(op),
	})
	if r.err != nil {
		// The stream broke the rules or ended: that, not what the
		// parser made of the cut file.
		return r.err
	}
	if err != nil {
		return loginErr(err)
	}
	a.s.cfg.Logger.Info("seed file imported", "tokens", res.Tokens, "assigned", res.Assigned,
		"unassigned", res.Unassigned, "replaced", res.Replaced, "hotp", res.HOTP, "bytes", r.total, "by", op.Name)
	return stream.SendAndClose(&mnguardv1.ImportTokensResponse{
		Tokens: uint32(res.Tokens), Assigned: uint32(res.Assigned), Unassigned: uint32(res.Unassigned),
		Replaced: uint32(res.Replaced), Hotp: uint32(res.HOTP),
	})
}

// recvErr maps an error receiving the import stream before the file.
func recvErr(err error, what string) error {
	if errors.Is(err, io.EOF) {
		return status.Errorf(codes.InvalidArgument, "the stream ended before %s", what)
	}
	return err
}

func checkAssignment(x *mnguardv1.TokenAssignment) error {
	switch {
	case x.GetSerial() == "" || len(x.GetSerial()) > maxAssignmentBytes:
		return status.Errorf(codes.InvalidArgument, "assignments: a token serial must be 1 to %d bytes", maxAssignmentBytes)
	case strings.ContainsFunc(x.GetSerial(), func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return status.Errorf(codes.InvalidArgument, "assignments: token serial %q contains a control character", truncate(x.GetSerial()))
	}
	if err := validName("assignments: user of token "+truncate(x.GetSerial()), x.GetUser()); err != nil {
		return err
	}
	return nil
}

// chunkReader reads the seed file from the stream's chunks. Its err is
// the status to return when the stream broke the rules: a chunk too
// large, more bytes than the header said (or fewer), another kind of
// message.
type chunkReader struct {
	stream grpc.ClientStreamingServer[mnguardv1.ImportTokensRequest, mnguardv1.ImportTokensResponse]
	size   uint64
	total  uint64
	buf    []byte
	eof    bool
	err    error
}

// take accepts the next chunk.
func (r *chunkReader) take(c []byte) error {
	switch {
	case len(c) > MaxImportChunk:
		r.err = status.Errorf(codes.InvalidArgument, "chunk: %d bytes, at most %d", len(c), MaxImportChunk)
	case r.total+uint64(len(c)) > r.size:
		r.err = status.Errorf(codes.InvalidArgument, "the stream holds more than the %d bytes the header announced", r.size)
		if r.total+uint64(len(c)) > MaxImportBytes {
			r.err = status.Error(codes.ResourceExhausted, TooLargeMessage(r.total+uint64(len(c))))
		}
	}
	if r.err != nil {
		return r.err
	}
	r.total += uint64(len(c))
	r.buf = c
	return nil
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.eof {
			return 0, io.EOF
		}
		m, err := r.stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			if r.total != r.size {
				r.err = status.Errorf(codes.InvalidArgument, "the stream ended after %d of the %d bytes the header announced", r.total, r.size)
				return 0, r.err
			}
			r.eof = true
			return 0, io.EOF
		case err != nil:
			r.err = err
			return 0, err
		case m.GetChunk() == nil:
			r.err = status.Error(codes.InvalidArgument, "the seed file's chunks must come last: got another message among them")
			return 0, r.err
		}
		if err := r.take(m.GetChunk()); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// ImportUsers implements mnguardv1.AdminServiceServer. The file is bounded
// by the gRPC message limit (MaxMessageBytes); mnguardctl uses
// ImportTokens.
func (a *AdminService) ImportUsers(ctx context.Context, req *mnguardv1.ImportUsersRequest) (*mnguardv1.ImportUsersResponse, error) {
	l, op, err := a.loginsFor(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetData()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "data: the seed file is empty")
	}
	format, err := checkImportOptions(req.GetFormat(), req.GetPskcKey(), req.GetPskcPassword())
	if err != nil {
		return nil, err
	}
	res, err := l.Import(ctx, logins.ImportRequest{
		Data: req.GetData(), Format: format, Key: req.GetPskcKey(), Password: req.GetPskcPassword(),
		Replace: req.GetReplace(), Op: loginOp(op),
	})
	if err != nil {
		return nil, loginErr(err)
	}
	out := &mnguardv1.ImportUsersResponse{Users: make([]*mnguardv1.User, 0, len(res.Users))}
	for _, name := range res.Users {
		u, err := l.User(ctx, name)
		if err != nil {
			return nil, loginErr(err)
		}
		out.Users = append(out.Users, userProto(u))
	}
	return out, nil
}

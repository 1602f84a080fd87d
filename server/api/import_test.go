package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// importStream sends msgs on an ImportTokens stream over the collector's
// real TLS listener and returns the answer.
func importStream(t *testing.T, admin mnguardv1.AdminServiceClient, ctx context.Context, msgs ...*mnguardv1.ImportTokensRequest) (*mnguardv1.ImportTokensResponse, error) {
	t.Helper()
	s, err := admin.ImportTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := s.Send(m); errors.Is(err, io.EOF) {
			break // refused: CloseAndRecv says why
		} else if err != nil {
			t.Fatal(err)
		}
	}
	return s.CloseAndRecv()
}

func header(h *mnguardv1.ImportTokensHeader) *mnguardv1.ImportTokensRequest {
	return &mnguardv1.ImportTokensRequest{Part: &mnguardv1.ImportTokensRequest_Header{Header: h}}
}

func chunk(b []byte) *mnguardv1.ImportTokensRequest {
	return &mnguardv1.ImportTokensRequest{Part: &mnguardv1.ImportTokensRequest_Chunk{Chunk: b}}
}

func assignments(pairs ...string) *mnguardv1.ImportTokensRequest {
	var as []*mnguardv1.TokenAssignment
	for i := 0; i+1 < len(pairs); i += 2 {
		as = append(as, &mnguardv1.TokenAssignment{Serial: pairs[i], User: pairs[i+1]})
	}
	return &mnguardv1.ImportTokensRequest{Part: &mnguardv1.ImportTokensRequest_Assignments{Assignments: &mnguardv1.TokenAssignments{Assignments: as}}}
}

// TestImportTokensStream: a file larger than one gRPC message (1 MiB)
// arrives in chunks and is stored; the stream's rules are enforced with
// clear messages, and a refused stream stores nothing.
func TestImportTokensStream(t *testing.T) {
	c := startCollector(t, true)
	admin, actx := c.admin(store.RoleAdmin)

	// 30,000 rows: 1.6 MB, more than MaxMessageBytes.
	var b bytes.Buffer
	b.WriteString("serial,user,seed\n")
	for i := range 30_000 {
		fmt.Fprintf(&b, "SN%05d,user%05d,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQ%c%c%c\n", i, i, 'A'+i%26, 'A'+i/26%26, 'A'+i/676%26)
	}
	file := b.Bytes()
	if len(file) <= MaxMessageBytes {
		t.Fatalf("file of %d bytes fits in one message", len(file))
	}
	msgs := []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: uint64(len(file))})}
	for off := 0; off < len(file); off += MaxImportChunk {
		msgs = append(msgs, chunk(file[off:min(off+MaxImportChunk, len(file))]))
	}
	res, err := importStream(t, admin, actx, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetTokens() != 30_000 || res.GetAssigned() != 30_000 {
		t.Fatalf("ImportTokens = %v", res)
	}
	// One audit entry, in the import's transaction.
	es, err := c.st.AuditLog(actx, 5)
	if err != nil || len(es) == 0 || es[0].Action != "user.import" || es[0].Target != "30000 tokens" {
		t.Fatalf("audit log %+v, %v", es, err)
	}

	before, err := c.st.AuditLog(actx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	csv := []byte("serial,user,seed\nT1,tom,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n")
	size := uint64(len(csv))
	for _, tt := range []struct {
		name string
		msgs []*mnguardv1.ImportTokensRequest
		code codes.Code
		want string
	}{
		{"no header", []*mnguardv1.ImportTokensRequest{chunk(csv)}, codes.InvalidArgument, "the first message must be the header"},
		{"empty", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{})}, codes.InvalidArgument, "size: the seed file is empty"},
		{"over the limit", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: MaxImportBytes + 1}), chunk(csv)}, codes.ResourceExhausted,
			"the collector imports files of at most 256.0 MiB (268435456 bytes) and 100000 tokens at once: split it"},
		{"more than announced", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: size - 1}), chunk(csv)}, codes.InvalidArgument, "more than the 56 bytes the header announced"},
		{"less than announced", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: size + 1}), chunk(csv)}, codes.InvalidArgument, "ended after 57 of the 58 bytes"},
		{"chunk too large", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: MaxImportChunk + 1}), chunk(make([]byte, MaxImportChunk+1))}, codes.InvalidArgument, "chunk: 524289 bytes, at most 524288"},
		{"header twice", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: size}), header(&mnguardv1.ImportTokensHeader{Size: size})}, codes.InvalidArgument, "only the first message may be the header"},
		{"assignment among chunks", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: size}), chunk(csv[:10]), assignments("T1", "tom"), chunk(csv[10:])}, codes.InvalidArgument, "chunks must come last"},
		{"assignment twice", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: size}), assignments("T1", "tom", "T1", "ann"), chunk(csv)}, codes.InvalidArgument, `token "T1" is assigned twice`},
		{"bad assignment user", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: size}), assignments("T1", "bad name"), chunk(csv)}, codes.InvalidArgument, "assignments: user of token T1"},
		{"assignment against the file", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: size}), assignments("T1", "ann"), chunk(csv)}, codes.InvalidArgument, "the file gives it to user tom, the assignment to ann"},
		{"no file", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: size})}, codes.InvalidArgument, "the stream ended before the seed file"},
		{"existing user", []*mnguardv1.ImportTokensRequest{header(&mnguardv1.ImportTokensHeader{Size: 52}), chunk([]byte("serial,user,seed\nT1,user00001,GEZDGNBVGY3TQOJQGEZDG\n"))}, codes.AlreadyExists, "user00001"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := importStream(t, admin, actx, tt.msgs...)
			wantCode(t, err, tt.code, tt.want)
			if _, err := c.st.User(actx, "tom"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("refused stream kept tom: %v", err)
			}
		})
	}
	if es, _ := c.st.AuditLog(actx, 1000); len(es) != len(before) {
		t.Errorf("%d audit entries after refused imports, want %d", len(es), len(before))
	}

	// Helpdesk and auditors may not import.
	for _, role := range []string{store.RoleHelpdesk, store.RoleAuditor} {
		cl, ctx := c.admin(role)
		_, err := importStream(t, cl, ctx, header(&mnguardv1.ImportTokensHeader{Size: size}), chunk(csv))
		wantCode(t, err, codes.PermissionDenied, "")
	}
}

// TestAssignTokenRPC: an unassigned token is listed, assigned once, and
// the assignment audited.
func TestAssignTokenRPC(t *testing.T) {
	c := startCollector(t, true)
	admin, actx := c.admin(store.RoleAdmin)
	// A PSKC file whose key names no user.
	pskc := `<?xml version="1.0"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
<KeyPackage><DeviceInfo><SerialNo>HW-1</SerialNo></DeviceInfo>
<Key Id="1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp"><Data><Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret></Data></Key></KeyPackage>
</KeyContainer>
`
	res, err := importStream(t, admin, actx, header(&mnguardv1.ImportTokensHeader{Size: uint64(len(pskc))}), chunk([]byte(pskc)))
	if err != nil {
		t.Fatal(err)
	}
	if res.GetUnassigned() != 1 || res.GetAssigned() != 0 {
		t.Fatalf("import: %v", res)
	}
	list, err := admin.ListTokens(actx, &mnguardv1.ListTokensRequest{})
	if err != nil || len(list.GetTokens()) != 1 || list.GetTokens()[0].GetSerial() != "HW-1" || list.GetTokens()[0].GetKind() != "totp" {
		t.Fatalf("ListTokens = %v, %v", list, err)
	}
	users, _ := admin.ListUsers(actx, &mnguardv1.ListUsersRequest{})
	if len(users.GetUsers()) != 0 {
		t.Fatalf("an unassigned token made users: %v", users)
	}
	_, err = admin.AssignToken(actx, &mnguardv1.AssignTokenRequest{Serial: "HW-2", User: "aki"})
	wantCode(t, err, codes.NotFound, "no unassigned token")
	_, err = admin.AssignToken(actx, &mnguardv1.AssignTokenRequest{Serial: "HW-1", User: "bad name"})
	wantCode(t, err, codes.InvalidArgument, "user")
	a, err := admin.AssignToken(actx, &mnguardv1.AssignTokenRequest{Serial: "HW-1", User: "aki"})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetUser().GetName() != "aki" || a.GetUser().GetTokenSerial() != "HW-1" || a.GetUser().GetKind() != "totp" {
		t.Fatalf("AssignToken = %v", a)
	}
	es, err := c.st.AuditLog(actx, 1)
	if err != nil || len(es) != 1 || es[0].Action != "user.assign" || es[0].Target != "aki" || !strings.Contains(es[0].Detail, "HW-1") {
		t.Fatalf("audit %+v, %v", es, err)
	}
	hd, hctx := c.admin(store.RoleHelpdesk)
	_, err = hd.AssignToken(hctx, &mnguardv1.AssignTokenRequest{Serial: "HW-1", User: "aki"})
	wantCode(t, err, codes.PermissionDenied, "")
	_, err = hd.ListTokens(hctx, &mnguardv1.ListTokensRequest{})
	wantCode(t, err, codes.PermissionDenied, "")
}

var _ grpc.ClientStreamingClient[mnguardv1.ImportTokensRequest, mnguardv1.ImportTokensResponse] = (mnguardv1.AdminService_ImportTokensClient)(nil)

package api

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestUnlistedMethodRefused: a method the authorization table does not
// list is refused before anyone is even asked for credentials.
func TestUnlistedMethodRefused(t *testing.T) {
	a := &Authenticator{}
	for _, m := range []string{"/mnguard.v1.AdminService/DropDatabase", "/mnguard.v1.AgentService/Nope", "/grpc.health.v1.Health/Check", ""} {
		_, err := a.authenticate(context.Background(), m)
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%q: %v, want PermissionDenied", m, err)
		}
	}
}

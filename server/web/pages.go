package web

import (
	"context"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/api"
)

// The admin API answers its lists a page at a time (at most 1000 items);
// the console's users, enrollment tokens and operators pages show every
// one, as they did before pages, by walking the pages.

func listAllUsers(ctx context.Context, a *api.AdminService) (*mnguardv1.ListUsersResponse, error) {
	out := &mnguardv1.ListUsersResponse{}
	req := &mnguardv1.ListUsersRequest{PageSize: 1000}
	for {
		resp, err := a.ListUsers(ctx, req)
		if err != nil {
			return nil, err
		}
		out.Users = append(out.Users, resp.GetUsers()...)
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return out, nil
		}
	}
}

func listAllEnrollmentTokens(ctx context.Context, a *api.AdminService) (*mnguardv1.ListEnrollmentTokensResponse, error) {
	out := &mnguardv1.ListEnrollmentTokensResponse{}
	req := &mnguardv1.ListEnrollmentTokensRequest{PageSize: 1000}
	for {
		resp, err := a.ListEnrollmentTokens(ctx, req)
		if err != nil {
			return nil, err
		}
		out.Tokens = append(out.Tokens, resp.GetTokens()...)
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return out, nil
		}
	}
}

func listAllOperators(ctx context.Context, a *api.AdminService) (*mnguardv1.ListOperatorsResponse, error) {
	out := &mnguardv1.ListOperatorsResponse{}
	req := &mnguardv1.ListOperatorsRequest{PageSize: 1000}
	for {
		resp, err := a.ListOperators(ctx, req)
		if err != nil {
			return nil, err
		}
		out.Operators = append(out.Operators, resp.GetOperators()...)
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return out, nil
		}
	}
}
